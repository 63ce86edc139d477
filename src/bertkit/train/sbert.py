"""Sentence-BERT (Reimers & Gurevych, 2019): a siamese bi-encoder fine-tuned so that cosine similarity of
pooled vectors means semantic similarity.

Both sentences go through the same BERT and the same pooling; a loss (a small module over the two batches of
embeddings, bertkit.train.losses: cosine, cosent, angle, mnrl with hard negatives, softmax, any of them at
Matryoshka dims) compares them. Several datasets can train one model (train_sentence_tasks): each batch comes
from one dataset and is scored with that dataset's loss; several dev sets pick the best checkpoint by their mean.

Training runs in the shared loop (bertkit.train.loop: AdamW, warm-up + linear decay, clipping, seed,
progress, per-epoch dev evaluation, best checkpoint kept, resume). The output folder is a transformers BERT
folder plus the sentence-transformers files (modules.json, 1_Pooling/config.json, sentence_bert_config.json),
so bertkit, sentence-transformers and transformers all load it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.heads.folder import ST_POOLINGS
from bertkit.model import Bert, save_model
from bertkit.pooling import pool
from bertkit.tokenizer import Batch, BertTokenizer
from bertkit.train.loop import TrainConfig, TrainResult, train
from bertkit.train.losses import (  # noqa: F401  (re-exported: the losses used to live here)
    LOSSES,
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    make_loss,
)
from bertkit.train.sbert_data import POSITIVE_LABELS, Prepared, make_batcher, make_collate, prepare, rows_of  # noqa: F401

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# The siamese model


class SiameseModel(nn.Module):
    """BERT + pooling + one loss head per training dataset. `self.bert` is the checkpoint's BertModel, so
    parameter names match the saved model.safetensors ("bert.embeddings...") and the shared loop can reload the
    best weights. A batch names its dataset (`task`), whose loss it is scored with."""

    def __init__(self, model: Bert, pooling: str, loss: nn.Module | Sequence[nn.Module]):
        super().__init__()
        self.bert = model.bert
        self.losses = nn.ModuleList([loss] if isinstance(loss, nn.Module) else list(loss))
        self.pooling = pooling
        self.full = [model]  # the Bert (its forward and its config), kept out of the module tree

    @property
    def model(self) -> Bert:
        return self.full[0]

    def embed(self, batch: Batch) -> torch.Tensor:
        out = self.model(batch.input_ids, batch.attention_mask, batch.token_type_ids, compute_heads=False)
        return pool(out, batch.attention_mask, self.pooling)

    def forward(self, batch: dict) -> torch.Tensor:
        neg = self.embed(batch["neg"]) if batch.get("neg") is not None else None
        loss = self.losses[batch.get("task", 0)]
        return loss(self.embed(batch["a"]), self.embed(batch["b"]), batch.get("target"), neg)


# ----------------------------------------------------------------------------------------------------------
# Saving a folder that bertkit, sentence-transformers and transformers load


def save_sentence_model(model: Bert, tokenizer: BertTokenizer, folder: str | Path, pooling: str,
                        normalize: bool = False) -> Path:
    """config.json + model.safetensors + tokenizer files (transformers), modules.json + 1_Pooling/config.json
    + sentence_bert_config.json (sentence-transformers), with 2_Normalize when `normalize`."""
    if pooling not in ST_POOLINGS:
        raise InputError(f"pooling {pooling!r} has no sentence-transformers equivalent; "
                         f"use one of {', '.join(ST_POOLINGS)}")
    folder = Path(folder)
    save_model(model, folder, architectures=["BertModel"])
    tokenizer.save(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = ({"word_embedding_dimension": model.config.hidden_size}
                      | {k: pooling == m for m, k in ST_POOLINGS.items()})
    write_json(folder / "1_Pooling" / "config.json", pooling_config)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        (folder / "2_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    write_json(folder / "modules.json", modules)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": tokenizer.max_length, "do_lower_case": False})
    write_json(folder / "config_sentence_transformers.json",
               {"similarity_fn_name": "cosine", "bertkit_pooling": pooling})
    return folder


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# Training


def sts_eval_fn(tokenizer: BertTokenizer, dev: Sequence[SentencePair] | dict[str, Sequence[SentencePair]],
                pooling: str, batch_size: int):
    """Dev Spearman x100 of cosine similarity: the metric that picks the best checkpoint. With several dev sets
    (a dict name -> pairs) "spearman" is their mean and each set's own is reported as "spearman:NAME"."""
    from bertkit.encoder import Encoder
    from bertkit.which.evaluate import evaluate_sts

    devs = dict(dev) if isinstance(dev, dict) else {"dev": dev}
    for name, pairs in devs.items():
        if not pairs or any(p.score is None for p in pairs):
            raise InputError(f"dev set {name} needs a similarity score on every pair (e.g. STS-B dev or SICK trial)")

    def eval_fn(siamese: nn.Module) -> dict[str, float]:
        model = siamese.model
        device = next(model.parameters()).device
        enc = Encoder.from_model(model, tokenizer, Path("."), device)
        enc.name = "training"
        scores = {name: evaluate_sts(enc, pairs, [pooling], batch_size=batch_size)[0] for name, pairs in devs.items()}
        if len(scores) == 1:
            (score,) = scores.values()
            return {"spearman": score.spearman, "pearson": score.pearson}
        mean = sum(s.spearman for s in scores.values()) / len(scores)
        return {"spearman": mean, **{f"spearman:{name}": s.spearman for name, s in scores.items()}}

    return eval_fn


@dataclass
class TrainTask:
    """One training dataset of a Sentence-BERT run: its pairs and the loss they are trained with."""

    name: str  # shown in messages (the file name)
    pairs: Sequence[SentencePair]
    loss: str = "cosine"


def train_sentence_model(
    model: Bert,
    tokenizer: BertTokenizer,
    train_pairs: Sequence[SentencePair],
    dev_pairs: Sequence[SentencePair] | None,
    output: str | Path,
    loss: str = "cosine",
    pooling: str = "mean",
    config: TrainConfig | None = None,
    max_length: int | None = None,
    normalize: bool = False,
    mnrl_scale: float = 20.0,
    matryoshka: Sequence[int] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place as a bi-encoder and save the best (by dev Spearman) folder to `output`."""
    return train_sentence_tasks(model, tokenizer, [TrainTask("training set", train_pairs, loss)],
                                {"dev": dev_pairs} if dev_pairs else None, output, pooling=pooling, config=config,
                                max_length=max_length, normalize=normalize, scale=mnrl_scale, matryoshka=matryoshka)


def train_sentence_tasks(
    model: Bert,
    tokenizer: BertTokenizer,
    tasks: Sequence[TrainTask],
    devs: dict[str, Sequence[SentencePair]] | None,
    output: str | Path,
    pooling: str = "mean",
    config: TrainConfig | None = None,
    max_length: int | None = None,
    normalize: bool = False,
    scale: float = 20.0,
    matryoshka: Sequence[int] | None = None,
    sampling: str = "proportional",
) -> TrainResult:
    """Fine-tune `model` in place on several datasets at once, each batch drawn from one of them and scored with
    its loss (`sampling`: proportional or round-robin); the best checkpoint by the mean dev Spearman of `devs`
    is saved to `output`. `matryoshka` dims wrap every loss in MatryoshkaLoss."""
    if pooling not in ST_POOLINGS:
        raise InputError(f"Sentence-BERT training pools with one of {', '.join(ST_POOLINGS)}; got {pooling!r}")
    if not tasks:
        raise InputError("no training set given")
    hidden = model.config.hidden_size
    if matryoshka and any(not 0 < d <= hidden for d in matryoshka):
        raise InputError(f"Matryoshka dims {list(matryoshka)} must lie in 1..{hidden} (the model's width)")
    config = config or TrainConfig()
    config.output_dir = Path(output)
    rows: list[tuple] = []
    heads: list[nn.Module] = []
    sizes: list[int] = []
    labels = None
    for k, task in enumerate(tasks):
        if not task.pairs:
            raise InputError(f"{task.name} holds no pairs (after filtering); give a file with at least one")
        try:
            prepared = prepare(task.pairs, task.loss)
        except InputError as e:
            raise InputError(f"{task.name}: {e}") from None
        if task.loss == "softmax" and matryoshka:
            raise InputError("the softmax loss cannot be trained at Matryoshka dims; use cosent, angle or mnrl")
        labels = labels or prepared.labels
        heads.append(make_loss(task.loss, hidden, len(prepared.labels or []), scale, matryoshka))
        part = rows_of(k, prepared)
        rows += part
        sizes.append(len(part))
        log.info("dataset %d: %s, %d rows, loss %s", k, task.name, len(part), task.loss)
    siamese = SiameseModel(model, pooling, heads)
    batcher = make_batcher(sizes, config.batch_size, config.seed, sampling) if len(tasks) > 1 else None

    def save_fn(m: nn.Module, folder: Path) -> None:
        save_sentence_model(m.model, tokenizer, folder, pooling, normalize)
        if labels is not None:
            write_json(folder / "sbert_labels.json", labels)

    eval_fn = sts_eval_fn(tokenizer, devs, pooling, config.batch_size * 2) if devs else None
    result = train(siamese, rows, make_collate(tokenizer, max_length), lambda m, batch: m(batch), config, eval_fn,
                   save_fn, batcher=batcher)
    if eval_fn is not None and (Path(output) / "model.safetensors").is_file():
        # The loop reloads the best weights itself unless the loss head has parameters (softmax), which the
        # saved folder deliberately omits; so load the kept BERT weights here in every case.
        reload_bert(model, Path(output))
    log.info("trained %d steps in %.0f s; best %s", result.steps, result.seconds, result.best)
    return result


def reload_bert(model: Bert, folder: Path) -> None:
    """Load the BERT weights saved in folder/model.safetensors back into `model` (the kept best checkpoint)."""
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    saved = load_file(folder / "model.safetensors", device=str(device))
    missing, _ = model.load_state_dict(saved, strict=False)
    missing = [k for k in missing if not k.endswith("decoder.weight")]  # tied to the word embeddings
    if missing:
        raise RuntimeError(f"{folder}/model.safetensors lacks {len(missing)} weights (first {missing[:3]})")
