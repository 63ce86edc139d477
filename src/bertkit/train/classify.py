"""Sequence classification: fine-tune a BERT with a dropout + linear head over its pooler (or another
pooling) on single texts or sentence pairs; cross-entropy (optionally class-weighted) or MSE for scores.

    from bertkit.train.classify import train_classifier
    from bertkit.heads.predict import Classifier
    result = train_classifier("../shared/data/sst2/train.tsv", "../shared/data/sst2/dev.tsv", "out/sst2",
                              config=TrainConfig(epochs=1))
    Classifier.load("out/sst2").predict(["a gorgeous film"])     # [("1", 0.98)]

The saved folder is a transformers BertForSequenceClassification checkpoint (config.json with id2label /
label2id, model.safetensors, tokenizer files). With a pooling other than `pooler` the weights load there too,
but transformers always reads the pooler, so only bertkit reproduces such a model's logits.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bertkit.batching import truncation_note
from bertkit.data import (
    Example,
    read_examples,
)
from bertkit.errors import InputError, OptionError
from bertkit.heads.predict import batched_logits
from bertkit.heads.task import BertSequenceClassifier
from bertkit.train.common import (
    freeze_word_embeddings,
    load_base,
    save_folder,
    task_model,
)
from bertkit.train.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


@dataclass
class ClassifyResult:
    output: Path
    labels: list[str]  # id -> name; ["score"] for regression
    train_examples: int
    dev_examples: int
    truncated: dict[str, int]  # per split, inputs cut to max_length
    dev_metrics: dict[str, float]  # of the kept (best) model
    train: TrainResult = field(repr=False)


def split_dev(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random hold-out, for sets published without a dev split (MRPC here)."""
    if not 0 < fraction < 1:
        raise OptionError(f"dev fraction must be in (0, 1), got {fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    k = max(1, int(len(examples) * fraction))
    dev = {i for i in order[:k]}
    return [e for i, e in enumerate(examples) if i not in dev], [examples[i] for i in sorted(dev)]


def label_ids(examples: list[Example], label2id: dict[str, int], path: str | Path) -> list[int]:
    unseen = sorted({str(e.label) for e in examples if str(e.label) not in label2id})
    if unseen:
        first = next(e for e in examples if str(e.label) in unseen)
        raise InputError(
            f"{path}: label {unseen[0]!r} (line {first.line}) was not seen in training; the model knows only "
            f"{', '.join(label2id)}. Fix the file or train on data that has it"
        )
    return [label2id[str(e.label)] for e in examples]


def class_weight_tensor(spec: str | None, ids: list[int], n: int) -> torch.Tensor | None:
    """'balanced' (n_examples / (n_classes * count)), a comma list of n weights, or None."""
    if spec in (None, "", "none"):
        return None
    if spec == "balanced":
        counts = np.bincount(ids, minlength=n).astype(np.float64)
        return torch.tensor(len(ids) / (n * np.maximum(counts, 1)), dtype=torch.float32)
    try:
        w = [float(x) for x in spec.split(",")]
    except ValueError:
        raise OptionError(f"class weights {spec!r}: use 'balanced', 'none' or {n} comma-separated numbers") from None
    if len(w) != n or min(w) <= 0:
        raise OptionError(f"class weights {spec!r}: need {n} positive numbers (one per label, in label order)")
    return torch.tensor(w, dtype=torch.float32)


def read_splits(train_path: str | Path, dev_path: str | Path | None, fmt: str | None, dev_format: str | None,
                regression: bool, dev_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Training and dev examples; without a dev file, a seeded hold-out of the training file."""
    train_ex = read_examples(train_path, fmt, regression)
    if dev_path is not None:
        dev_ex = read_examples(dev_path, dev_format or fmt, regression)
    else:
        train_ex, dev_ex = split_dev(train_ex, dev_fraction, seed)
        log.info("no dev set given: holding out %d of %d training examples", len(dev_ex), len(train_ex) + len(dev_ex))
    if any(e.label is None for e in train_ex):
        raise InputError(f"{train_path} has examples without a label; classification training needs labels")
    return train_ex, dev_ex


def label_targets(train_ex: list[Example], dev_ex: list[Example], regression: bool, train_path: str | Path,
                  dev_path: str | Path) -> tuple[list[str], list, list]:
    """(label names in id order, training targets, dev targets): class ids, or the scores for regression."""
    if regression:
        return ["score"], [float(e.label) for e in train_ex], [float(e.label) for e in dev_ex]
    labels = sorted({str(e.label) for e in train_ex})
    if len(labels) < 2:
        raise InputError(f"{train_path} has a single label ({labels[0]!r}); a classifier needs at least two")
    label2id = {name: i for i, name in enumerate(labels)}
    return labels, label_ids(train_ex, label2id, train_path), label_ids(dev_ex, label2id, dev_path)


def train_classifier(
    train_path: str | Path,
    dev_path: str | Path | None,
    output: str | Path,
    fmt: str | None = None,
    dev_format: str | None = None,
    model: str | Path | None = None,
    pooling: str = "pooler",
    regression: bool = False,
    class_weights: str | None = None,
    max_length: int = 128,
    dev_fraction: float = 0.1,
    freeze_embeddings: bool = False,
    config: TrainConfig | None = None,
) -> ClassifyResult:
    """Fine-tune and save the best model (by dev accuracy, or Spearman for regression) to `output`."""
    from bertkit.data.metrics import accuracy, macro_f1, score_metrics

    config = config or TrainConfig(epochs=3, lr=5e-5)
    config.output_dir = Path(output)
    config.best_metric = "spearman" if regression else "accuracy"
    train_ex, dev_ex = read_splits(train_path, dev_path, fmt, dev_format, regression, dev_fraction, config.seed)
    labels, y_train, y_dev = label_targets(train_ex, dev_ex, regression, train_path, dev_path or train_path)

    base, tok, full_tok = load_base(model, max_length)
    clf = task_model(base, BertSequenceClassifier, labels, pooling=pooling)
    freeze_word_embeddings(clf, freeze_embeddings)
    if not regression:
        clf.class_weights = class_weight_tensor(class_weights, y_train, len(labels))

    def encode(examples: list[Example], what: str) -> tuple[list, int]:
        texts = [e.text for e in examples]
        pairs = [e.pair for e in examples] if all(e.pair is not None for e in examples) else None
        encodings = tok.encode(texts, pairs)
        return encodings, truncation_note(encodings, tok.max_length, what)

    enc_train, cut_train = encode(train_ex, "training examples")
    enc_dev, cut_dev = encode(dev_ex, "dev examples")
    data = list(zip(enc_train, y_train))
    y_dtype = torch.float32 if regression else torch.long

    def collate(items):
        batch = tok.pad([e for e, _ in items])
        labels = torch.tensor([y for _, y in items], dtype=y_dtype)
        return batch.input_ids, batch.attention_mask, batch.token_type_ids, labels

    def step(m, b):
        return m(*b[:3], labels=b[3]).loss

    def evaluate(m) -> dict[str, float]:
        logits = torch.stack(batched_logits(m, tok, enc_dev))
        if regression:
            return score_metrics(y_dev, logits[:, 0].tolist())
        pred = logits.argmax(-1).tolist()
        return {"accuracy": 100 * accuracy(y_dev, pred), "macro_f1": 100 * macro_f1(y_dev, pred)}

    head_config = dict(
        architectures=["BertForSequenceClassification"],
        id2label={i: n for i, n in enumerate(labels)} if not regression else {0: "score"},
        label2id={n: i for i, n in enumerate(labels)} if not regression else {"score": 0},
        problem_type="regression" if regression else "single_label_classification",
        bertkit_pooling=pooling,
        bertkit_pairs=enc_train[0].type_ids.count(1) > 0 if enc_train else False,
    )
    result = train(clf, data, collate, step, config, eval_fn=evaluate, lengths=[len(e.ids) for e in enc_train],
                   save_fn=lambda m, folder: save_folder(m, full_tok, folder, **head_config))
    return ClassifyResult(Path(output), labels, len(train_ex), len(dev_ex), {"train": cut_train, "dev": cut_dev},
                          result.best or {}, result)


