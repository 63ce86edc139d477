"""Retrieval from shared pairs: dense vs sparse (SPLADE) vs dense + cross-encoder rerank; recall@10 and MRR@10.

    .venv/bin/python bench/rerank.py --reranker models/ce-stsb [--queries 1000] [--candidates 50] [--json out.json]

The retrieval set is built from MRPC train (../shared/data/mrpc/train.txt; no model here was trained on it):
every paraphrase pair (quality 1) gives a query (string1) whose one relevant document is its string2; the
corpus is every distinct string2 of the file, paraphrase or not (4,000 documents; the non-paraphrase partners
are close distractors). `--queries N` takes a seeded random N of the paraphrase pairs.

Methods, each over the whole corpus:
- dense: the packaged all-MiniLM-L6-v2 (or --dense-model), mean pooling, cosine (exact search);
- sparse: splade-tiny (or --sparse-model) SPLADE vectors, dot product on CSR matrices (as `--kind sparse`);
- dense + rerank: the dense top --candidates reordered by the cross-encoder --reranker (`bertkit train
  cross-encoder`), as `bertkit search --rerank DIR --candidates N` does.
Recall@10: share of queries whose relevant document is in the top 10. MRR@10: mean of 1/rank of the relevant
document (0 when it is not in the top 10). Times are wall seconds on this machine, encoding included.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def retrieval_set(path: Path, n_queries: int | None, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """(queries, corpus, index of each query's relevant document in the corpus)."""
    from bertkit.data import read_mrpc

    pairs = read_mrpc(path)
    corpus = list(dict.fromkeys(p.b for p in pairs))
    position = {t: i for i, t in enumerate(corpus)}
    positives = [p for p in pairs if p.score == 1.0]
    if n_queries is not None and n_queries < len(positives):
        positives = random.Random(seed).sample(positives, n_queries)
    return [p.a for p in positives], corpus, [position[p.b] for p in positives]


def metrics(ranked: np.ndarray, relevant: list[int], k: int = 10) -> dict[str, float]:
    """recall@k and MRR@k of (queries, >= k) ranked document indices."""
    recall, rr = [], []
    for row, gold in zip(ranked[:, :k], relevant):
        hit = np.flatnonzero(row == gold)
        recall.append(float(hit.size > 0))
        rr.append(1.0 / (hit[0] + 1) if hit.size else 0.0)
    return {"recall@10": round(100 * float(np.mean(recall)), 2), "mrr@10": round(100 * float(np.mean(rr)), 2)}


def top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def dense(model: str | None, queries: list[str], corpus: list[str], k: int) -> np.ndarray:
    from bertkit import Encoder

    enc = Encoder.load(model)
    docs = enc.encode(corpus, normalize=True, progress=True)
    return top(enc.encode(queries, normalize=True) @ docs.T, k)


def sparse(model: str, queries: list[str], corpus: list[str], k: int) -> np.ndarray:
    from bertkit import Encoder

    enc = Encoder.load(model)
    docs = enc.encode_sparse(corpus)
    return top(np.asarray((enc.encode_sparse(queries) @ docs.T).todense()), k)


def rerank(reranker: str, queries: list[str], corpus: list[str], candidates: np.ndarray) -> np.ndarray:
    from bertkit.heads.rerank import CrossEncoder

    ce = CrossEncoder.load(reranker)
    out = np.zeros_like(candidates)
    for i, (q, cand) in enumerate(zip(queries, candidates)):
        order = [r["index"] for r in ce.rank(q, [corpus[j] for j in cand])]
        out[i] = cand[order]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "mrpc" / "train.txt")
    ap.add_argument("--queries", type=int, default=None,
                    help="A seeded random N of the paraphrase pairs (default all).")
    ap.add_argument("--dense-model", default=None, help="Default: the packaged all-MiniLM-L6-v2.")
    ap.add_argument("--sparse-model", default="splade-tiny")
    ap.add_argument("--reranker", default=None, help="Cross-encoder folder; without it the rerank row is skipped.")
    ap.add_argument("--candidates", type=int, default=50, help="Dense hits the cross-encoder reorders.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = ap.parse_args()

    queries, corpus, relevant = retrieval_set(args.data, args.queries)
    print(f"{len(queries)} queries, {len(corpus)} documents ({args.data})")
    rows = []
    t = time.perf_counter()
    dense_top = dense(args.dense_model, queries, corpus, max(10, args.candidates))
    rows.append({"method": "dense (all-MiniLM-L6-v2, mean, cosine)" if args.dense_model is None else
                 f"dense ({args.dense_model})", **metrics(dense_top, relevant),
                 "seconds": round(time.perf_counter() - t, 1)})
    t = time.perf_counter()
    rows.append({"method": f"sparse ({args.sparse_model}, SPLADE, dot)",
                 **metrics(sparse(args.sparse_model, queries, corpus, 10), relevant),
                 "seconds": round(time.perf_counter() - t, 1)})
    if args.reranker:
        t = time.perf_counter()
        reranked = rerank(args.reranker, queries, corpus, dense_top[:, : args.candidates])
        rows.append({"method": f"dense + rerank ({args.reranker}, top {args.candidates})",
                     **metrics(reranked, relevant), "seconds": round(time.perf_counter() - t, 1)})
    for r in rows:
        print(f"{r['method']:<60} recall@10 {r['recall@10']:6.2f}  MRR@10 {r['mrr@10']:6.2f}  {r['seconds']:7.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
