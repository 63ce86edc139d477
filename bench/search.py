"""Exact vs HNSW search over embed-corpus output: recall@10 against exact, and query latency.

    bertkit embed-corpus ../shared/data/agnews/dev.tsv /tmp/ag-emb --no-header --keep-text
    .venv/bin/python bench/search.py /tmp/ag-emb [--queries 1000] [--grow 100000]

Queries are `--queries` corpus vectors picked at random (seed 0); recall@10 is the share of the exact top 10
that HNSW returns, per efSearch. Latency is one query per call (k=10), median and p95, index time only;
`text` rows add encoding the query text with the corpus's model (what `bertkit search` and POST /search do).
`--grow N` adds a synthetic index of N vectors (the corpus vectors plus small Gaussian noise) to show how
exact search cost grows with the corpus while HNSW stays flat.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def latency_ms(fn, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None, :])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def measure(emb_dir: Path, work: Path, n_queries: int, efs: list[int], label: str) -> list[dict]:
    from bertkit.corpus import read_embeddings
    from bertkit.index.folder import Index, build_index, recall_at_k

    _, vectors = read_embeddings(emb_dir)
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)]
    rows = []
    t = time.perf_counter()
    exact = Index.load(build_index(emb_dir, work / f"{label}-exact", kind="exact", overwrite=True))
    build_exact = time.perf_counter() - t
    truth = exact.search_vectors(queries, 10)[1]
    med, p95 = latency_ms(lambda q: exact.search_vectors(q, 10), queries)
    rows.append({"corpus": label, "n": len(vectors), "index": "exact", "build_s": round(build_exact, 2),
                 "recall@10": 1.0, "median_ms": round(med, 3), "p95_ms": round(p95, 3)})
    t = time.perf_counter()
    path = build_index(emb_dir, work / f"{label}-hnsw", kind="hnsw", overwrite=True)
    build_hnsw = time.perf_counter() - t
    for ef in efs:
        hnsw = Index.load(path, ef_search=ef)
        approx = hnsw.search_vectors(queries, 10)[1]
        med, p95 = latency_ms(lambda q, hnsw=hnsw: hnsw.search_vectors(q, 10), queries)
        rows.append({"corpus": label, "n": len(vectors), "index": f"hnsw ef={ef}", "build_s": round(build_hnsw, 2),
                     "recall@10": round(recall_at_k(approx, truth, 10), 4), "median_ms": round(med, 3),
                     "p95_ms": round(p95, 3)})
    return rows


def grow(emb_dir: Path, out: Path, n: int) -> Path:
    """A synthetic embed-corpus folder of n vectors: corpus vectors tiled with 5% Gaussian noise."""
    import pyarrow as pa

    from bertkit.corpus import Shard, read_embeddings, read_manifest, write_shard

    _, vectors = read_embeddings(emb_dir)
    rng = np.random.default_rng(1)
    manifest = read_manifest(emb_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, n, 50_000)):
        m = min(50_000, n - start)
        base = vectors[rng.integers(0, len(vectors), m)]
        v = (base + 0.05 * rng.standard_normal(base.shape) * np.abs(base).mean()).astype(np.float32)
        shard = Shard(i, start, m, 0)
        table = pa.table({"row": pa.array(range(start, start + m), pa.int64()),
                          "id": pa.array([str(r) for r in range(start, start + m)]),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])})
        write_shard(out, shard, table, 0)
        shards.append(shard.__dict__)
    manifest.update(shards=shards, complete=True, rows=n)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def text_latency(idx_dir: Path, texts: list[str]) -> tuple[float, float]:
    from bertkit.encoder import Encoder
    from bertkit.index.folder import Index

    idx = Index.load(idx_dir)
    enc = Encoder.load(idx.info["embedding"]["model"], device="cpu")
    idx.search_text(enc, texts[0], 10)  # warm-up
    times = []
    for t in texts:
        s = time.perf_counter()
        idx.search_text(enc, t, 10)
        times.append((time.perf_counter() - s) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("embeddings", type=Path, help="an embed-corpus output folder (AG News dev)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--grow", type=int, default=0, help="also measure a synthetic corpus of this many vectors")
    p.add_argument("--text-queries", type=int, default=100)
    args = p.parse_args()
    from bertkit.corpus import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = measure(args.embeddings, work, args.queries, args.ef, "agnews")
        if args.grow:
            rows += measure(grow(args.embeddings, work / "grown", args.grow), work, args.queries, args.ef,
                            f"synthetic-{args.grow}")
        src = Path(read_manifest(args.embeddings)["input"]["path"])
        lines = src.read_text().splitlines()[: args.text_queries]
        texts = [" ".join(line.split("\t")[0].split()[:8]) for line in lines]
        for kind in ("exact", "hnsw"):
            med, p95 = text_latency(work / f"agnews-{kind}", texts)
            rows.append({"corpus": "agnews", "index": f"{kind} (text query: encode + search)",
                         "median_ms": round(med, 2), "p95_ms": round(p95, 2)})
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
