"""Sentence-BERT training data: pairs turned into what each loss reads, the rows and batches the loop sees, and
how several datasets share one run (each batch from one dataset).

A training row is `(task, a, b, target, negative)`: the index of its dataset (which picks the loss), the two
texts, the loss's target (scaled score, class index, or 1.0) and a hard negative for `b` (or None).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.tokenizer import BertTokenizer
from bertkit.train.losses import LOSSES, SCORED_LOSSES

log = logging.getLogger(__name__)

POSITIVE_LABELS = {"1", "entailment", "positive", "paraphrase", "true"}
NEGATIVE_LABELS = {"contradiction"}  # labels whose second sentence is a hard negative for the first
SAMPLINGS = ("proportional", "round-robin")


@dataclass
class Prepared:
    examples: list[tuple[str, str, float]]  # (a, b, target)
    labels: list[str] | None = None  # softmax: class names, index = target
    negatives: list[str | None] | None = None  # mnrl: a hard negative per example (None where there is none)


def prepare(pairs: Sequence[SentencePair], loss: str, labels: list[str] | None = None) -> Prepared:
    """Turn pairs into (a, b, target) for the loss: scaled scores, class indices, or positive pairs only."""
    if loss in SCORED_LOSSES:
        scores = [p.score for p in pairs]
        if any(s is None for s in scores):
            raise InputError(f"the {loss} loss needs a similarity score on every pair (e.g. STS-B or SICK "
                             "relatedness); use mnrl or softmax for labelled pairs")
        lo, hi = min(scores), max(scores)
        if hi == lo:
            raise InputError(f"all training scores are equal; the {loss} loss needs graded scores")
        # Scale the file's own range to [0, 1]: STS-B 0-5 and SICK 1-5 both become 0-1.
        return Prepared([(p.a, p.b, (p.score - lo) / (hi - lo)) for p in pairs])
    if loss == "softmax":
        if any(p.label is None for p in pairs):
            raise InputError("the softmax loss needs a class label on every pair (e.g. SICK's entailment column); "
                             "use cosent, angle or cosine for scored pairs")
        names = labels or sorted({p.label for p in pairs})
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({p.label for p in pairs} - set(index))
        if unknown:
            raise InputError(f"labels {unknown} do not occur in the training set ({names})")
        if len(names) < 2:
            raise InputError(f"the softmax loss needs at least 2 classes; the training set has {names}")
        return Prepared([(p.a, p.b, float(index[p.label])) for p in pairs], names)
    if loss == "mnrl":
        return prepare_mnrl(pairs)
    raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def prepare_mnrl(pairs: Sequence[SentencePair]) -> Prepared:
    """Positive pairs only: labelled positives, or scores in the top fifth of the scale, or every pair of an
    unlabelled (anchor, positive) file. Hard negatives: for a labelled file, the second sentence of a
    contradiction pair with the same first sentence; for a scored one, of a pair in the bottom fifth."""
    if all(p.label is not None for p in pairs):
        kept = [p for p in pairs if p.label.lower() in POSITIVE_LABELS]
        negative_pairs = [p for p in pairs if p.label.lower() in NEGATIVE_LABELS]
    elif all(p.score is not None for p in pairs):
        lo, hi = min(p.score for p in pairs), max(p.score for p in pairs)
        kept = [p for p in pairs if hi > lo and (p.score - lo) / (hi - lo) >= 0.8]
        negative_pairs = [p for p in pairs if hi > lo and (p.score - lo) / (hi - lo) <= 0.2]
    else:
        kept, negative_pairs = list(pairs), []
    if len(kept) < 2:
        raise InputError("the mnrl loss needs at least 2 positive pairs (label 1/ENTAILMENT or a high score)")
    hard: dict[str, str] = {}
    for p in negative_pairs:
        hard.setdefault(p.a, p.b)
        hard.setdefault(p.b, p.a)
    negatives = [hard.get(p.a) for p in kept]
    found = sum(n is not None for n in negatives)
    log.info("mnrl: training on %d positive pairs of %d (%d with a hard negative)", len(kept), len(pairs), found)
    return Prepared([(p.a, p.b, 1.0) for p in kept], negatives=negatives if found else None)


def rows_of(task: int, prepared: Prepared) -> list[tuple]:
    """The loop's rows for one dataset: (task, a, b, target, hard negative or None)."""
    negs = prepared.negatives or [None] * len(prepared.examples)
    return [(task, a, b, t, n) for (a, b, t), n in zip(prepared.examples, negs, strict=True)]


def make_collate(tokenizer: BertTokenizer, max_length: int | None) -> Callable[[list], dict]:
    """Tokenize both sides (and the hard negatives) of a batch of rows from one dataset; a shorter training
    max_length uses its own tokenizer copy, so the saved model keeps its full limit."""
    if max_length is not None and max_length < tokenizer.max_length:
        tokenizer = tokenizer.with_max_length(max_length)

    def collate(rows: list[tuple]) -> dict:
        negatives = [r[4] for r in rows if r[4] is not None]
        return {"task": rows[0][0], "a": tokenizer([r[1] for r in rows]), "b": tokenizer([r[2] for r in rows]),
                "target": torch.tensor([r[3] for r in rows], dtype=torch.float32),
                "neg": tokenizer(negatives) if negatives else None}

    return collate


def make_batcher(sizes: Sequence[int], batch_size: int, seed: int,
                 sampling: str) -> Callable[[int], list[torch.Tensor]]:
    """Batches over the concatenated datasets, each batch from one dataset. proportional: every batch of every
    dataset once per epoch, in a shuffled order (a dataset's share of the steps is its share of the rows);
    round-robin: one batch of each dataset in turn, as many rounds as the smallest dataset has batches."""
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling {sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]

    def batches(epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        per = [(torch.randperm(n, generator=g) + off).split(batch_size) for n, off in zip(sizes, offsets, strict=True)]
        if sampling == "round-robin":
            rounds = min(len(b) for b in per)
            return [b[i] for i in range(rounds) for b in per]
        flat = [b for group in per for b in group]
        return [flat[i] for i in torch.randperm(len(flat), generator=g)]

    return batches
