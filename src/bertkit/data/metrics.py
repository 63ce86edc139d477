"""Scores of predicted labels against gold ones: accuracy and macro-F1 for classes, BIO chunking and
entity-level precision / recall / F1 for tags (as the CoNLL-2003 script counts them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(gold: Sequence, pred: Sequence) -> float:
    if len(gold) != len(pred) or not gold:
        raise ValueError(f"accuracy needs equal, non-empty gold and predictions (got {len(gold)} and {len(pred)})")
    return float(np.mean([g == p for g, p in zip(gold, pred)]))


def macro_f1(gold: Sequence, pred: Sequence) -> float:
    """Unweighted mean over the gold labels of per-class F1 (sklearn's f1_score(average='macro') on gold labels,
    plus any label only predicted)."""
    labels = sorted(set(gold) | set(pred), key=str)
    f1s = []
    for c in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, pred) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, pred) if g == c and p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s))


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity chunks (type, start, end exclusive) from BIO / IOBES tags, counted as the CoNLL script does:
    an I- tag whose type differs from the running chunk (or after O) starts a new chunk."""
    spans: list[tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, typ = tag.partition("-") if tag != "O" else ("O", "", "")
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and typ != kind)
        if kind is not None and (prefix == "O" or begins):
            spans.append((kind, start, i))
            kind = None
        if begins:
            kind, start = typ, i
        if kind is not None and prefix in ("E", "S"):
            spans.append((kind, start, i + 1))
            kind = None
    return spans


def entity_prf(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision / recall / F1 (x100, exact span and type match) over sentences of tags,
    plus per-type F1 as f1_<TYPE>."""
    if len(gold) != len(pred):
        raise ValueError(f"got {len(gold)} gold sentences but {len(pred)} predicted")
    tp: dict[str, int] = {}
    n_gold: dict[str, int] = {}
    n_pred: dict[str, int] = {}
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = set(bio_spans(g)), set(bio_spans(p))
        for kind, *_ in gs:
            n_gold[kind] = n_gold.get(kind, 0) + 1
        for kind, *_ in ps:
            n_pred[kind] = n_pred.get(kind, 0) + 1
        for kind, *_ in gs & ps:
            tp[kind] = tp.get(kind, 0) + 1

    def prf(t: int, ng: int, np_: int) -> tuple[float, float, float]:
        p = t / np_ if np_ else 0.0
        r = t / ng if ng else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    p, r, f = prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    out = {"precision": 100 * p, "recall": 100 * r, "f1": 100 * f}
    for kind in sorted(set(n_gold) | set(n_pred)):
        out[f"f1_{kind}"] = 100 * prf(tp.get(kind, 0), n_gold.get(kind, 0), n_pred.get(kind, 0))[2]
    return out


def score_metrics(gold: list[float], pred: list[float]) -> dict[str, float]:
    """Spearman and Pearson (x100) and the mean squared error of predicted scores (regression heads)."""
    from scipy.stats import pearsonr, spearmanr

    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return {"spearman": 100 * float(spearmanr(g, p)[0]), "pearson": 100 * float(pearsonr(g, p)[0]),
            "mse": float(np.mean((g - p) ** 2))}
