"""Cross-encoder training: a (text, pair) encoded together, [CLS] -> pooler -> one logit, trained with binary
cross-entropy against the pair's score scaled to [0, 1] (or its 0/1 label), on the shared training loop.

    from bertkit.train.cross_encoder import train_cross_encoder
    train_cross_encoder("../shared/data/stsb/train.tsv", "../shared/data/stsb/dev.tsv", "out/ce")
    CrossEncoder.load("out/ce").rank("a query", ["passage 1", "passage 2"])      # bertkit.heads.rerank

Scores: a pair set's score (STS-B 0-5, SICK relatedness 1-5) or numeric label (MRPC 0/1, a file's `label` /
`score` column). Scores already in [0, 1] are used as they are; otherwise they are mapped linearly from the
training set's [min, max] (or `score_range`) to [0, 1]; the range is saved in config.json. The best model by
dev Spearman of the predicted probability is kept.

The saved folder is a transformers BertForSequenceClassification with one label, plus the config entry that
sentence-transformers reads (`sentence_transformers.activation_fn` = Sigmoid): `CrossEncoder(DIR).predict`
gives the probability, as `bertkit.heads.rerank.CrossEncoder` does. A body without a pooler (e.g. splade-tiny) gets
a freshly initialised one, since transformers' classifier reads the pooler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.batching import truncation_note
from bertkit.data import Example, read_examples
from bertkit.errors import InputError, OptionError
from bertkit.heads.predict import batched_logits
from bertkit.heads.rerank import ST_SIGMOID
from bertkit.heads.task import BertSequenceClassifier
from bertkit.model import Bert, Pooler
from bertkit.train.common import freeze_word_embeddings, load_base, save_folder, task_model
from bertkit.train.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

LABEL = "LABEL_0"  # sentence-transformers' name for a cross-encoder's one output


@dataclass
class CrossEncoderResult:
    output: Path
    train_examples: int  # gold pairs
    dev_examples: int
    silver_examples: int  # pairs labelled by the --silver-from bi-encoder
    score_range: tuple[float, float]  # gold scores mapped to [0, 1] from this range
    truncated: dict[str, int]  # per split, pairs cut to max_length
    dev_metrics: dict[str, float]  # of the kept (best) model
    train: TrainResult = field(repr=False)


def read_pairs(path: str | Path, fmt: str | None = None) -> list[Example]:
    """Scored pairs: the score when the set has one (STS-B, SICK), else the numeric label (MRPC, 0/1 files)."""
    examples = read_examples(path, fmt, regression=True)
    if any(e.label is None for e in examples):
        examples = read_examples(path, fmt, regression=False)
    out = []
    for e in examples:
        if e.pair is None:
            where = f"line {e.line} is a single text" if e.line else "holds single texts, one a line"
            raise InputError(f"{path}: {where}; a cross-encoder trains on pairs (query, passage)")
        try:
            score = float(e.label)
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {e.line}: label {e.label!r} is not a score or a 0/1 label") from None
        out.append(Example(e.text, e.pair, score, e.line))
    return out


def scaler(scores: list[float], score_range: tuple[float, float] | None) -> tuple[float, float]:
    """The (low, high) range mapped to [0, 1]: given, or (0, 1) when the scores already lie there, else theirs."""
    if score_range is not None:
        lo, hi = score_range
    elif min(scores) >= 0 and max(scores) <= 1:
        lo, hi = 0.0, 1.0
    else:
        lo, hi = min(scores), max(scores)
    if not hi > lo:
        raise OptionError(f"score range {lo}..{hi} is empty; the training scores must not all be equal")
    return float(lo), float(hi)


def with_pooler(base: Bert) -> Bert:
    """Give a body without a pooler a fresh one (N(0, 0.02), zero bias): the classifier reads it."""
    if not base.has_pooler:
        log.info("the model has no pooler; adding a freshly initialised one for the cross-encoder head")
        pooler = Pooler(base.config)
        nn.init.normal_(pooler.dense.weight, std=0.02)
        nn.init.zeros_(pooler.dense.bias)
        base.bert.pooler = pooler.to(base.bert.embeddings.word_embeddings.weight.device)
    return base


def train_cross_encoder(
    train_path: str | Path,
    dev_path: str | Path | None,
    output: str | Path,
    fmt: str | None = None,
    dev_format: str | None = None,
    model: str | Path | None = None,
    score_range: tuple[float, float] | None = None,
    max_length: int = 128,
    freeze_embeddings: bool = False,
    config: TrainConfig | None = None,
    symmetric: bool = False,
    silver_from: str | Path | None = None,
    silver_k: int = 2,
    silver_random: int = 0,
) -> CrossEncoderResult:
    """Fine-tune a one-output pair classifier with BCE and save the best (by dev Spearman) to `output`.

    symmetric: train on each pair in both orders. silver_from: a bi-encoder that labels re-pairings of the
    training sentences (`silver_k` nearest neighbours each, `silver_random` random pairs; ce_silver.py)."""
    from bertkit.data.metrics import score_metrics
    from bertkit.train.ce_silver import bi_encoder_silver, both_orders, check_silver

    if silver_from is not None:
        check_silver(silver_k, silver_random)
    config = config or TrainConfig(epochs=1, lr=2e-5, batch_size=16)
    config.output_dir = Path(output)
    config.best_metric = "spearman"
    train_ex = read_pairs(train_path, fmt)
    dev_ex = read_pairs(dev_path, dev_format or fmt) if dev_path is not None else []
    lo, hi = scaler([e.label for e in train_ex], score_range)
    silver = bi_encoder_silver(train_ex, silver_from, silver_k, silver_random, config.seed) if silver_from else []
    gold_count, train_ex = len(train_ex), train_ex + silver
    train_ex = both_orders(train_ex) if symmetric else train_ex

    def targets(examples: list[Example]) -> list[float]:
        return [min(1.0, max(0.0, (e.label - lo) / (hi - lo))) for e in examples]

    y_train, y_dev = targets(train_ex), targets(dev_ex)
    base, tok, full_tok = load_base(model, max_length)
    clf = task_model(with_pooler(base), BertSequenceClassifier, [LABEL], pooling="pooler")
    freeze_word_embeddings(clf, freeze_embeddings)

    def encode(examples: list[Example], what: str) -> tuple[list, int]:
        encodings = tok.encode([e.text for e in examples], [e.pair for e in examples]) if examples else []
        return encodings, truncation_note(encodings, tok.max_length, what)

    enc_train, cut_train = encode(train_ex, "training pairs")
    enc_dev, cut_dev = encode(dev_ex, "dev pairs")
    data = list(zip(enc_train, y_train))

    def collate(items):
        batch = tok.pad([e for e, _ in items])
        return batch.input_ids, batch.attention_mask, batch.token_type_ids, torch.tensor([y for _, y in items])

    def step(m, b):
        logits = m(*b[:3]).logits[:, 0].float()
        return F.binary_cross_entropy_with_logits(logits, b[3].float())

    def evaluate(m) -> dict[str, float]:
        probs = torch.stack(batched_logits(m, tok, enc_dev))[:, 0].sigmoid()
        return score_metrics(y_dev, probs.tolist())

    head_config = dict(
        architectures=["BertForSequenceClassification"], id2label={0: LABEL}, label2id={LABEL: 0},
        sentence_transformers={"activation_fn": ST_SIGMOID}, bertkit_pooling="pooler", bertkit_pairs=True,
        bertkit_score_range=[lo, hi],
    )
    result = train(clf, data, collate, step, config, eval_fn=evaluate if enc_dev else None,
                   lengths=[len(e.ids) for e in enc_train],
                   save_fn=lambda m, folder: save_folder(m, full_tok, folder, **head_config))
    return CrossEncoderResult(Path(output), gold_count, len(dev_ex), len(silver), (lo, hi),
                              {"train": cut_train, "dev": cut_dev},
                              result.best or {}, result)
