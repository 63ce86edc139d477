"""Silver pairs for the cross-encoder, labelled by a bi-encoder: issue 20's Augmented SBERT, the other way round.

A cross-encoder learns the similarity of two texts from its [CLS] alone, and a few thousand gold pairs do not
teach it what a sentence encoder's mean pooling already knows (from all-MiniLM-L6-v2, gold STS-B pairs alone
stall near 86 dev Spearman). A bi-encoder is cheap to run on many pairs, so it labels new ones: the gold
pairs' sentences re-paired with their k nearest neighbours under the bi-encoder (skipping the gold pairs),
plus random pairs so that unrelated texts are seen too. Its cosine is put on the gold score scale by the
least-squares line of gold score on cosine over the gold pairs, clipped to the gold range: the cross-encoder
then trains on gold and silver with one loss. Measured in docs/RESULTS.md (issue 15).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

from bertkit.data import Example
from bertkit.errors import OptionError
from bertkit.train.sbert_silver import nearest_partners

log = logging.getLogger(__name__)


def check_silver(k: int, random_pairs: int) -> None:
    if k < 0 or random_pairs < 0 or k + random_pairs == 0:
        raise OptionError(f"--silver-k {k} --silver-random {random_pairs}: give k >= 0 neighbours per sentence and "
                          ">= 0 random pairs, not both 0 (e.g. --silver-k 2 --silver-random 3000)")


def bi_encoder_silver(gold: list[Example], bi_encoder: str | Path, k: int = 2, random_pairs: int = 0,
                      seed: int = 42, batch_size: int = 64) -> list[Example]:
    """New pairs of the gold pairs' sentences scored by `bi_encoder` (a folder or hub id, with its declared
    pooling) on the gold scale; their `line` is negative (-1, -2, ...: not lines of a file)."""
    from bertkit.encoder import Encoder
    from bertkit.heads.folder import st_pooling

    check_silver(k, random_pairs)
    sentences = list(dict.fromkeys(s for e in gold for s in (e.text, e.pair)))
    index = {s: i for i, s in enumerate(sentences)}
    encoder = Encoder.load(bi_encoder)
    vectors = np.asarray(encoder.encode(sentences, pooling=st_pooling(str(bi_encoder)), normalize=True,
                                        batch_size=batch_size), dtype=np.float32)  # (N, H), unit rows
    ia, ib = (np.array([index[getattr(e, f)] for e in gold]) for f in ("text", "pair"))
    cos = np.einsum("nh,nh->n", vectors[ia], vectors[ib])
    scores = np.array([float(e.label) for e in gold])
    slope, intercept = np.polyfit(cos, scores, 1)  # gold score ~ slope * cosine + intercept
    taken = {(min(i, j), max(i, j)) for i, j in zip(ia.tolist(), ib.tolist(), strict=True)}
    pairs = nearest_partners(vectors, k, set(taken)) if k else []
    taken.update((min(i, j), max(i, j)) for i, j in pairs)
    rng, wanted = random.Random(seed), len(pairs) + random_pairs
    for _ in range(random_pairs * 4):  # a few draws per wanted pair: duplicates and gold pairs are skipped
        if len(pairs) == wanted:
            break
        i, j = rng.randrange(len(sentences)), rng.randrange(len(sentences))
        if i != j and (min(i, j), max(i, j)) not in taken:
            taken.add((min(i, j), max(i, j)))
            pairs.append((i, j))
    lo, hi = float(scores.min()), float(scores.max())
    silver = [Example(sentences[i], sentences[j], float(np.clip(slope * (vectors[i] @ vectors[j]) + intercept, lo, hi)),
                      -(n + 1)) for n, (i, j) in enumerate(pairs)]
    log.info("silver: %d pairs of %d sentences scored by %s (score = %.3f * cosine %+.3f, fitted on %d gold pairs)",
             len(silver), len(sentences), bi_encoder, slope, intercept, len(gold))
    return silver


def both_orders(examples: list[Example]) -> list[Example]:
    """Each pair also as (pair, text): a similarity score does not depend on the order, the encoding does."""
    return examples + [Example(e.pair, e.text, e.label, e.line) for e in examples]
