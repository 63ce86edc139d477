"""Sentence-BERT (Reimers & Gurevych, 2019): a siamese bi-encoder fine-tuned so that cosine similarity of
pooled vectors means semantic similarity.

Both sentences go through the same BERT and the same pooling; a loss (a small module over the two batches of
embeddings) compares them:

| loss     | data                                   | what it optimises                                            |
|----------|----------------------------------------|--------------------------------------------------------------|
| cosine   | pairs with a similarity score (STS-B)  | MSE between cos(u, v) and the score scaled to [0, 1]         |
| mnrl     | positive pairs (paraphrases, entailed) | in-batch negatives: softmax over cos(u_i, v_j) * scale, target j = i |
| softmax  | pairs with a class label (SICK, NLI)   | cross-entropy of a linear layer over (u, v, |u - v|)          |

Training runs in the shared loop (bertkit.train.loop: AdamW, warm-up + linear decay, clipping, seed,
progress, per-epoch dev evaluation, best checkpoint kept, resume). The output folder is a transformers BERT
folder plus the sentence-transformers files (modules.json, 1_Pooling/config.json, sentence_bert_config.json),
so bertkit, sentence-transformers and transformers all load it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.model import Bert, save_model
from bertkit.pooling import pool
from bertkit.tokenizer import Batch, BertTokenizer
from bertkit.train.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

LOSSES = ("cosine", "mnrl", "softmax")
# Poolings a sentence-transformers Pooling module can express (so the saved folder means the same thing there).
ST_POOLINGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
               "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}
POSITIVE_LABELS = {"1", "entailment", "positive", "paraphrase", "true"}


# ----------------------------------------------------------------------------------------------------------
# Losses: small modules over two (B, H) embedding batches


class CosineSimilarityLoss(nn.Module):
    """MSE between cos(u, v) and a target in [0, 1] (the gold score rescaled)."""

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(F.cosine_similarity(u, v), target.to(u.dtype))


class MultipleNegativesRankingLoss(nn.Module):
    """Each u_i must pick its own v_i among every v_j of the batch (the other pairs are the negatives).
    scale = 1 / temperature: 20 as in sentence-transformers (SimCSE's 0.05 temperature is the same)."""

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        sims = F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T * self.scale  # (B, B)
        return F.cross_entropy(sims, torch.arange(len(u), device=u.device))


class SoftmaxLoss(nn.Module):
    """A linear classifier over (u, v, |u - v|), trained with cross-entropy; discarded after training."""

    def __init__(self, hidden: int, num_labels: int):
        super().__init__()
        self.classifier = nn.Linear(3 * hidden, num_labels)

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
        return F.cross_entropy(logits, target.long())


# ----------------------------------------------------------------------------------------------------------
# The siamese model


class SiameseModel(nn.Module):
    """BERT + pooling + a loss head. `self.bert` is the checkpoint's BertModel, so parameter names match the
    saved model.safetensors ("bert.embeddings...") and the shared loop can reload the best weights."""

    def __init__(self, model: Bert, pooling: str, loss: nn.Module):
        super().__init__()
        self.bert = model.bert
        self.loss = loss
        self.pooling = pooling
        self.full = [model]  # the Bert (its forward and its config), kept out of the module tree

    @property
    def model(self) -> Bert:
        return self.full[0]

    def embed(self, batch: Batch) -> torch.Tensor:
        out = self.model(batch.input_ids, batch.attention_mask, batch.token_type_ids, compute_heads=False)
        return pool(out, batch.attention_mask, self.pooling)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.loss(self.embed(batch["a"]), self.embed(batch["b"]), batch.get("target"))


# ----------------------------------------------------------------------------------------------------------
# Data preparation per loss


@dataclass
class Prepared:
    examples: list[tuple[str, str, float]]  # (a, b, target)
    labels: list[str] | None = None  # softmax: class names, index = target


def prepare(pairs: Sequence[SentencePair], loss: str, labels: list[str] | None = None) -> Prepared:
    """Turn pairs into (a, b, target) for the loss: scaled scores, class indices, or positive pairs only."""
    if loss == "cosine":
        scores = [p.score for p in pairs]
        if any(s is None for s in scores):
            raise InputError("the cosine loss needs a similarity score on every pair (e.g. STS-B or SICK relatedness)")
        lo, hi = min(scores), max(scores)
        if hi == lo:
            raise InputError("all training scores are equal; the cosine loss needs graded scores")
        # Scale the file's own range to [0, 1]: STS-B 0-5 and SICK 1-5 both become 0-1.
        return Prepared([(p.a, p.b, (p.score - lo) / (hi - lo)) for p in pairs])
    if loss == "softmax":
        if any(p.label is None for p in pairs):
            raise InputError("the softmax loss needs a class label on every pair (e.g. SICK's entailment column)")
        names = labels or sorted({p.label for p in pairs})
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({p.label for p in pairs} - set(index))
        if unknown:
            raise InputError(f"labels {unknown} do not occur in the training set ({names})")
        if len(names) < 2:
            raise InputError(f"the softmax loss needs at least 2 classes; the training set has {names}")
        return Prepared([(p.a, p.b, float(index[p.label])) for p in pairs], names)
    if loss == "mnrl":
        # Positive pairs only: labelled positives, or scores in the top fifth of the scale, or every pair of
        # an unlabelled (anchor, positive) file.
        if all(p.label is not None for p in pairs):
            kept = [p for p in pairs if p.label.lower() in POSITIVE_LABELS]
        elif all(p.score is not None for p in pairs):
            lo, hi = min(p.score for p in pairs), max(p.score for p in pairs)
            kept = [p for p in pairs if hi > lo and (p.score - lo) / (hi - lo) >= 0.8]
        else:
            kept = list(pairs)
        if len(kept) < 2:
            raise InputError("the mnrl loss needs at least 2 positive pairs (label 1/ENTAILMENT or a high score)")
        log.info("mnrl: training on %d positive pairs of %d", len(kept), len(pairs))
        return Prepared([(p.a, p.b, 1.0) for p in kept])
    raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def make_collate(tokenizer: BertTokenizer, max_length: int | None) -> Callable[[list], dict]:
    """Tokenize both sides of each batch; a shorter training max_length uses its own tokenizer copy, so the
    saved model keeps its full limit."""
    if max_length is not None and max_length < tokenizer.max_length:
        from tokenizers import Tokenizer

        tokenizer = BertTokenizer(Tokenizer.from_str(tokenizer.tokenizer.to_str()), max_length, tokenizer.mask_token)

    def collate(rows: list[tuple[str, str, float]]) -> dict:
        a = tokenizer([r[0] for r in rows])
        b = tokenizer([r[1] for r in rows])
        return {"a": a, "b": b, "target": torch.tensor([r[2] for r in rows], dtype=torch.float32)}

    return collate


# ----------------------------------------------------------------------------------------------------------
# Saving a folder that bertkit, sentence-transformers and transformers load


def save_sentence_model(model: Bert, tokenizer: BertTokenizer, folder: str | Path, pooling: str,
                        normalize: bool = False) -> Path:
    """config.json + model.safetensors + tokenizer files (transformers), modules.json + 1_Pooling/config.json
    + sentence_bert_config.json (sentence-transformers), with 2_Normalize when `normalize`."""
    if pooling not in ST_POOLINGS:
        raise InputError(f"pooling {pooling!r} has no sentence-transformers equivalent; use one of {', '.join(ST_POOLINGS)}")
    folder = Path(folder)
    save_model(model, folder, architectures=["BertModel"])
    tokenizer.save(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {"word_embedding_dimension": model.config.hidden_size} | {k: pooling == m for m, k in ST_POOLINGS.items()}
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
    write_json(folder / "config_sentence_transformers.json", {"similarity_fn_name": "cosine", "bertkit_pooling": pooling})
    return folder


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# Training


def sts_eval_fn(tokenizer: BertTokenizer, dev: Sequence[SentencePair], pooling: str, batch_size: int):
    """Dev Spearman x100 of cosine similarity: the metric that picks the best checkpoint."""
    from bertkit.encoder import Encoder
    from bertkit.evaluate import evaluate_sts

    if any(p.score is None for p in dev):
        raise InputError("the dev set needs a similarity score on every pair (e.g. STS-B dev or SICK trial)")

    def eval_fn(siamese: nn.Module) -> dict[str, float]:
        model = siamese.model
        device = next(model.parameters()).device
        enc = Encoder(model, tokenizer, Path("."), device)
        enc.name = "training"
        (score,) = evaluate_sts(enc, dev, [pooling], batch_size=batch_size)
        return {"spearman": score.spearman, "pearson": score.pearson}

    return eval_fn


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
) -> TrainResult:
    """Fine-tune `model` in place as a bi-encoder and save the best (by dev Spearman) folder to `output`."""
    if pooling not in ST_POOLINGS:
        raise InputError(f"Sentence-BERT training pools with one of {', '.join(ST_POOLINGS)}; got {pooling!r}")
    config = config or TrainConfig()
    config.output_dir = Path(output)
    prepared = prepare(train_pairs, loss)
    head: nn.Module
    if loss == "cosine":
        head = CosineSimilarityLoss()
    elif loss == "mnrl":
        head = MultipleNegativesRankingLoss(mnrl_scale)
    else:
        head = SoftmaxLoss(model.config.hidden_size, len(prepared.labels))
    siamese = SiameseModel(model, pooling, head)
    collate = make_collate(tokenizer, max_length)

    def save_fn(m: nn.Module, folder: Path) -> None:
        save_sentence_model(m.model, tokenizer, folder, pooling, normalize)
        if prepared.labels is not None:
            write_json(folder / "sbert_labels.json", prepared.labels)

    eval_fn = sts_eval_fn(tokenizer, dev_pairs, pooling, config.batch_size * 2) if dev_pairs else None
    result = train(siamese, prepared.examples, collate, lambda m, batch: m(batch), config, eval_fn, save_fn)
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
