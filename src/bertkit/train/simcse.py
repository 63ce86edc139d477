"""Unsupervised SimCSE (Gao et al., 2021): contrastive training on unlabelled sentences.

Each sentence is encoded twice with dropout on; the two views are a positive pair and the other sentences of
the batch are negatives (the multiple-negatives ranking loss with temperature 0.05, i.e. scale 20). Dropout is
the only augmentation. This is Sentence-BERT training (bertkit.train.sbert) on (s, s) pairs, so it shares the
loop, the dev evaluation, the best-checkpoint keeping and the saved folder layout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.model import Bert
from bertkit.tokenizer import BertTokenizer
from bertkit.train.loop import TrainConfig, TrainResult
from bertkit.train.sbert import train_sentence_model

log = logging.getLogger(__name__)


def train_simcse(
    model: Bert,
    tokenizer: BertTokenizer,
    sentences: Sequence[str],
    dev_pairs: Sequence[SentencePair] | None,
    output: str | Path,
    pooling: str = "mean",
    temperature: float = 0.05,
    config: TrainConfig | None = None,
    max_length: int | None = 64,
) -> TrainResult:
    """Fine-tune `model` in place with SimCSE on `sentences`; the best folder (by dev Spearman) goes to `output`."""
    unique = list(dict.fromkeys(s.strip() for s in sentences if s.strip()))
    if len(unique) < 2:
        raise InputError("SimCSE needs at least 2 distinct sentences "
                         "(the other sentences of a batch are the negatives)")
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if model.config.hidden_dropout_prob == 0 and model.config.attention_probs_dropout_prob == 0:
        raise InputError("SimCSE uses dropout as its augmentation, but this model's dropout is 0; "
                         "set it in config.json")
    config = config or TrainConfig(lr=3e-5, batch_size=64)
    pairs = [SentencePair(s, s) for s in unique]
    log.info("SimCSE on %d distinct sentences, temperature %g", len(unique), temperature)
    return train_sentence_model(model, tokenizer, pairs, dev_pairs, output, loss="mnrl", pooling=pooling,
                                config=config, max_length=max_length, mnrl_scale=1.0 / temperature)
