"""Retrieval with sentence vectors: each first sentence of a positive pair queries the pool of all second
sentences by cosine similarity; recall@1, recall@10 and MRR@10 per representation.

Positive pairs: label 1 / ENTAILMENT (or yes / true / paraphrase); without labels, a score in the top fifth of
the file's scores; a file with neither (anchor / positive pairs) has only positive pairs. A query's relevant
items are the second sentences of all its positive pairs. A pool item with the query's own text is left out
unless it is relevant (a sentence trivially finds itself). Ties rank by pool order.

    from bertkit.which.retrieval import retrieval_metrics
    retrieval_metrics(similarities, [{3}, {0, 7}])     # {"recall@1": ..., "recall@10": ..., "mrr@10": ...}
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bertkit.errors import InputError
from bertkit.pooling import normalize_rows
from bertkit.which.represent import Representations, label
from bertkit.which.results import Score, TaskResult

POSITIVE_LABELS = {"1", "entailment", "yes", "true", "positive", "paraphrase"}
KS = (1, 10)
MRR_AT = 10


@dataclass
class RetrievalSet:
    queries: list[str]
    pool: list[str]
    relevant: list[set[int]]  # per query, positions in pool
    rule: str  # how positives were chosen, for the notes


def positives(pairs: Sequence) -> tuple[list[bool], str]:
    """Which pairs are positive, and the rule used (stated in the output)."""
    if all(p.label is not None for p in pairs):
        return [str(p.label).strip().lower() in POSITIVE_LABELS for p in pairs], \
            f"positive pairs: label in {{{', '.join(sorted(POSITIVE_LABELS))}}}"
    if all(p.score is not None for p in pairs):
        cut = float(np.quantile([p.score for p in pairs], 0.8))
        return [p.score >= cut for p in pairs], f"positive pairs: score >= {cut:g} (the top fifth of the scores)"
    return [True] * len(pairs), "positive pairs: every pair (the file has no label or score)"


def build_set(pairs: Sequence) -> RetrievalSet:
    """Queries (distinct first sentences of positive pairs), the pool (distinct second sentences of all pairs)."""
    if not pairs:
        raise InputError("no sentence pairs for retrieval")
    keep, rule = positives(pairs)
    pool = list(dict.fromkeys(p.b for p in pairs))
    where = {t: i for i, t in enumerate(pool)}
    rel: dict[str, set[int]] = {}
    for p, pos in zip(pairs, keep):
        if pos:
            rel.setdefault(p.a, set()).add(where[p.b])
    if not rel:
        raise InputError(f"no positive pairs to query with ({rule}); retrieval needs at least one")
    return RetrievalSet(list(rel), pool, list(rel.values()), rule)


def ranks_of(scores: np.ndarray, relevant: Sequence[set[int]]) -> list[list[int]]:
    """Per query, the 1-based ranks of its relevant items (higher score first, ties in pool order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    rank[rows, order] = np.arange(1, order.shape[1] + 1)
    return [sorted(int(rank[q, i]) for i in rel) for q, rel in enumerate(relevant)]


def retrieval_metrics(scores: np.ndarray, relevant: Sequence[set[int]], ks: Sequence[int] = KS,
                      mrr_at: int = MRR_AT) -> dict[str, float]:
    """recall@k (share of a query's relevant items in its top k, averaged over queries) and MRR@mrr_at
    (1 / rank of the first relevant item, 0 beyond mrr_at), x100, from a (queries, pool) score matrix."""
    if scores.shape[0] != len(relevant) or any(not r for r in relevant):
        raise InputError("every query needs at least one relevant pool item")
    ranks = ranks_of(scores, relevant)
    out = {f"recall@{k}": 100 * float(np.mean([sum(r <= k for r in rs) / len(rs) for rs in ranks])) for k in ks}
    out[f"mrr@{mrr_at}"] = 100 * float(np.mean([1 / rs[0] if rs[0] <= mrr_at else 0.0 for rs in ranks]))
    return out


def similarity_matrix(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    from bertkit.which.probe import one_blas_thread

    qn, pn = normalize_rows(q), normalize_rows(p)
    with one_blas_thread():
        return qn.astype(np.float64) @ pn.astype(np.float64).T


def self_mask(rs: RetrievalSet) -> tuple[np.ndarray, np.ndarray]:
    """(query, pool) positions where the pool item is the query's own text and not relevant: left out."""
    where = {t: i for i, t in enumerate(rs.pool)}
    hits = [(q, where[t]) for q, t in enumerate(rs.queries) if t in where and where[t] not in rs.relevant[q]]
    return np.array([h[0] for h in hits], dtype=np.int64), np.array([h[1] for h in hits], dtype=np.int64)


def score_set(rs: RetrievalSet, queries: np.ndarray, pool: np.ndarray) -> dict[str, float]:
    """recall@k and MRR@10 of one representation: query vectors against pool vectors by cosine."""
    sim = similarity_matrix(queries, pool)
    qi, pi = self_mask(rs)
    sim[qi, pi] = -np.inf
    return retrieval_metrics(sim, rs.relevant)


def retrieval_task(reps: Representations, pairs: Sequence, data: str = "", notes: Sequence[str] = ()) -> TaskResult:
    """Every sentence representation ranked by MRR@10 (recall@1 and recall@10 alongside)."""
    started = time.perf_counter()
    rs = build_set(pairs)
    vecs = reps.vectors(rs.queries + rs.pool)
    nq = len(rs.queries)
    scores = []
    for spec in reps.specs:
        metrics = score_set(rs, vecs[spec][:nq], vecs[spec][nq:])
        scores.append(Score("retrieval", label(spec), spec.pooling, list(spec.layers) if spec.layers else None,
                            f"mrr@{MRR_AT}", metrics[f"mrr@{MRR_AT}"], metrics, "text", reps.name, data, nq))
    notes = [*notes, rs.rule, f"{nq} queries against a pool of {len(rs.pool)} second sentences (cosine)"]
    return TaskResult("retrieval", data, reps.name, scores, notes, 0, nq, time.perf_counter() - started).rank()
