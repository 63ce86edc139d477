"""Peak RSS of `bertkit embed-corpus` on AG News dev once vs repeated N times (default 10).

    .venv/bin/python bench/corpus_memory.py [--repeat 10] [--work /tmp/corpus-mem]

Each run is a fresh `bertkit embed-corpus` process; its peak resident set size comes from the kernel
(os.wait4's ru_maxrss, this child only). The repeated corpus is written to --work, never into the repo.
The embedding stays flat in memory when the ratio stays near 1 (acceptance: <= 1.5).

`--tiny` embeds with a random 2-layer, 64-wide BERT (packaged tokenizer) saved in --work instead of the
packaged model: the pipeline (reader, shards, writer) is the same, the compute is ~30x less, and the
model's fixed share of the memory is smaller, so any growth with corpus size shows up more, not less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agnews" / "dev.tsv"


def embed(src: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bertkit.cli", "embed-corpus", str(src), str(out), "--no-header",
           "--overwrite", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"rows": manifest["rows"], "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1),
            "rows_per_s": round(manifest["rows"] / seconds, 1)}


def tiny_model(folder: Path) -> Path:
    """A random small BERT with the packaged tokenizer (needs the `test` extra's transformers)."""
    import shutil

    import torch
    import transformers

    from bertkit.model import default_model_dir

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    transformers.BertModel(config).save_pretrained(folder)
    src = default_model_dir()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("/tmp/bertkit-corpus-mem"))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--tiny", action="store_true", help="a random 2-layer 64-wide BERT instead of the packaged model")
    args, extra = p.parse_known_args()  # anything else goes to embed-corpus (e.g. --shard-rows 2048)
    if not args.data.is_file():
        raise SystemExit(f"{args.data} is absent; it sits in ../shared/data beside the repo")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        extra += ["--model", str(tiny_model(args.work / "tiny-bert"))]
    big = args.work / f"agnews-x{args.repeat}.tsv"
    text = args.data.read_bytes()
    with open(big, "wb") as f:
        f.writelines(text for _ in range(args.repeat))
    once = embed(args.data, args.work / "once", extra)
    repeated = embed(big, args.work / f"x{args.repeat}", extra)
    result = {"model": "tiny random BERT" if args.tiny else "packaged all-MiniLM-L6-v2",
              "once": once, f"x{args.repeat}": repeated,
              "rss_ratio": round(repeated["peak_rss_mib"] / once["peak_rss_mib"], 3)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
