"""Local engine vs Ray Data engine on AG News dev: same vectors (max |diff|), same ids, same row order.

    .venv/bin/python bench/corpus_engines.py [--work /tmp/bertkit-engines] [--compare-only LOCAL_DIR RAY_DIR]

Runs `bertkit embed-corpus DEV OUT --no-header` with --engine local and --engine ray (a local Ray
instance), then compares the two output folders shard by shard.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agnews" / "dev.tsv"


def compare(local: Path, ray: Path) -> dict:
    from bertkit.corpus import read_embeddings, read_manifest

    meta_l, vec_l = read_embeddings(local)
    meta_r, vec_r = read_embeddings(ray)
    return {
        "rows": [len(vec_l), len(vec_r)],
        "engines": [read_manifest(local).get("engine"), read_manifest(ray).get("engine")],
        "same_ids_and_order": meta_l.column("id").to_pylist() == meta_r.column("id").to_pylist(),
        "same_rows_and_hashes": meta_l.select(["row", "text_hash"]).equals(meta_r.select(["row", "text_hash"])),
        "max_abs_diff": float(np.abs(vec_l - vec_r).max()) if vec_l.shape == vec_r.shape else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bertkit-engines"))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--compare-only", nargs=2, type=Path, metavar=("LOCAL", "RAY"))
    args = p.parse_args()
    if args.compare_only:
        print(json.dumps(compare(*args.compare_only), indent=1))
        return
    seconds = {}
    for engine in ("local", "ray"):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bertkit.cli", "embed-corpus", str(args.data), str(args.work / engine),
                        "--no-header", "--overwrite", "--engine", engine], check=True)
        seconds[engine] = round(time.perf_counter() - start, 1)
    print(json.dumps({**compare(args.work / "local", args.work / "ray"), "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
