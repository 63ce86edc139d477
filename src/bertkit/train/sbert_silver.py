"""Augmented Sentence-BERT (Thakur et al., 2021): silver pairs for the bi-encoder, labelled by a cross-encoder.

The training sentences are re-paired with their nearest neighbours under the bi-encoder (the model about to
be trained), skipping the sentence itself and its gold partners; a trained cross-encoder (`bertkit train
cross-encoder`) scores each new pair, and the scored pairs train the bi-encoder as one more dataset (CoSENT:
only the order of the silver scores matters). The neighbours are the pairs a random re-pairing would almost
never give: similar enough that their score teaches something.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.model import Bert
from bertkit.pooling import normalize_rows
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger(__name__)


def nearest_partners(vectors: np.ndarray, k: int, excluded: set[tuple[int, int]],
                     chunk: int = 1024) -> list[tuple[int, int]]:
    """For each row i, its k most cosine-similar rows j != i with (i, j) not excluded; each unordered pair once."""
    v = normalize_rows(vectors)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for start in range(0, len(v), chunk):
        sims = v[start : start + chunk] @ v.T  # (chunk, n)
        for r, row in enumerate(sims):
            i = start + r
            row[i] = -np.inf
            taken = 0
            for j in np.argsort(-row, kind="stable"):
                if taken == k or row[j] == -np.inf:
                    break
                key = (min(i, int(j)), max(i, int(j)))
                if key in excluded or key in seen:
                    continue
                seen.add(key)
                out.append((i, int(j)))
                taken += 1
    return out


def silver_pairs(model: Bert, tokenizer: BertTokenizer, pairs: Sequence[SentencePair], cross_encoder: str | Path,
                 pooling: str = "mean", k: int = 1, batch_size: int = 64) -> list[SentencePair]:
    """New pairs of the training sentences (k nearest neighbours each under `model`), scored in [0, 1] by the
    cross-encoder folder."""
    from bertkit.encoder import Encoder
    from bertkit.heads.rerank import CrossEncoder

    if k < 1:
        raise InputError(f"--silver-k {k}: give at least 1 neighbour per sentence")
    ce = CrossEncoder.load(cross_encoder, device="cpu")
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.a, p.b)))
    index = {s: i for i, s in enumerate(sentences)}
    gold = {(min(index[p.a], index[p.b]), max(index[p.a], index[p.b])) for p in pairs}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoder = Encoder.from_model(model, tokenizer, Path("."), device)
    vectors = encoder.encode(sentences, pooling=pooling, batch_size=batch_size)
    model.train(was_training)
    chosen = nearest_partners(np.asarray(vectors, dtype=np.float32), k, gold)
    texts = [(sentences[i], sentences[j]) for i, j in chosen]
    scores = ce.predict(texts, batch_size=batch_size)
    log.info("silver: %d new pairs of %d sentences scored by %s (mean score %.3f)", len(texts), len(sentences),
             cross_encoder, float(np.mean(scores)) if len(scores) else float("nan"))
    return [SentencePair(a, b, float(s)) for (a, b), s in zip(texts, scores, strict=True)]
