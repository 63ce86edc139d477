"""Task heads over a loaded BERT body: a sequence classifier and a token classifier.

Each head is a plain module that holds the body's `BertModel` as `bert` (the same modules as the loaded `Bert`,
not a copy) and adds a `classifier`, so its state dict is exactly what transformers'
BertForSequenceClassification / BertForTokenClassification read and write: `bert.embeddings.*`,
`bert.encoder.layer.N.*`, `bert.pooler.*`, `classifier.weight` / `classifier.bias`. The body's pre-training
heads (`cls.*`) are left out. The heads live outside the model package because a classifier may pool with any
of bertkit.pooling's modes.

    base, _ = load_model("out/sst2")
    clf = load_task_head(base, BertSequenceClassifier, num_labels=2, pooling="mean")
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import CheckpointError, OptionError
from bertkit.model import Bert
from bertkit.pooling import pool

HEAD_POOLINGS = ("pooler", "cls", "mean", "max", "mean_sqrt_len")  # poolings a classifier head can read


@dataclass
class TaskOutput:
    logits: torch.Tensor  # (B, num_labels) for sequences, (B, T, num_labels) for tokens
    loss: torch.Tensor | None = None


def _classifier(body: Bert, num_labels: int) -> tuple[nn.Dropout, nn.Linear]:
    """HF's dropout + linear head: classifier_dropout when config.json sets it, else the hidden dropout;
    weights N(0, 0.02) and zero bias, on the body's device."""
    config = body.config
    dropout = nn.Dropout(config.extra.get("classifier_dropout") or config.hidden_dropout_prob)
    linear = nn.Linear(config.hidden_size, num_labels)  # made on the CPU: the same random draws on any device
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return dropout, linear.to(body.bert.embeddings.word_embeddings.weight.device)


class BertSequenceClassifier(nn.Module):
    """dropout + linear over pooler_output (as BertForSequenceClassification) or another pooling.

    num_labels == 1 means regression (MSE loss); otherwise cross-entropy with optional class weights.
    """

    def __init__(self, body: Bert, num_labels: int, pooling: str = "pooler"):
        super().__init__()
        if pooling not in HEAD_POOLINGS:
            raise OptionError(f"a classifier head reads one of {', '.join(HEAD_POOLINGS)}; got pooling {pooling!r}")
        if pooling == "pooler":
            body.require("pooler", "a classifier over pooling='pooler'")
        self.config = body.config
        self.bert = body.bert  # shared with `body`, not copied: its weights are saved as bert.*
        self.pooling = pooling
        self.num_labels = num_labels
        self.dropout, self.classifier = _classifier(body, num_labels)
        self.register_buffer("class_weights", None, persistent=False)  # (num_labels,), set by the trainer
        self.train(body.training)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> TaskOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pool(out, attention_mask, self.pooling)))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                weight = self.class_weights.to(logits.dtype) if self.class_weights is not None else None
                loss = F.cross_entropy(logits.float(), labels, weight=None if weight is None else weight.float())
        return TaskOutput(logits, loss)


class BertTokenClassifier(nn.Module):
    """dropout + linear over every token vector (as BertForTokenClassification); label -100 is ignored."""

    def __init__(self, body: Bert, num_labels: int):
        super().__init__()
        self.config = body.config
        self.bert = body.bert  # shared with `body`, not copied: its weights are saved as bert.*
        self.num_labels = num_labels
        self.dropout, self.classifier = _classifier(body, num_labels)
        self.train(body.training)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> TaskOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return TaskOutput(logits, loss)


TaskHead = BertSequenceClassifier | BertTokenClassifier

# transformers' classifier heads of the other families that are more than one Linear: a checkpoint holding one
# is refused rather than run with its extra layer dropped (or with a fresh random classifier).
FOREIGN_HEADS = {
    "classifier.out_proj.weight": "RoBERTa-style: <s> -> classifier.dense -> tanh / GELU -> classifier.out_proj "
                                  "(RoBERTa, XLM-R, MPNet, ELECTRA)",
    "pre_classifier.weight": "DistilBERT's: [CLS] -> pre_classifier -> ReLU -> classifier",
    "head.dense.weight": "ModernBERT's: pooled -> head.dense -> act -> head.norm -> classifier",
}


def check_head_keys(left: dict) -> None:
    """Refuse a checkpoint whose classifier head is another family's two-layer head (FOREIGN_HEADS)."""
    for key, what in FOREIGN_HEADS.items():
        if key in left:
            raise CheckpointError(
                f"this checkpoint's classifier is {what}; bertkit's task heads are one Linear over a pooling, so "
                "they cannot run it as trained: fine-tune a bertkit head on its body (a folder without that head), "
                "or run this checkpoint with transformers")


def load_task_head(model: Bert, head: type[TaskHead], num_labels: int, **kwargs) -> TaskHead:
    """Wrap a loaded model (from load_model) in a task head, taking the head's weights from its leftover
    checkpoint entries (`classifier.weight` / `classifier.bias`) when the checkpoint has them."""
    left = getattr(model, "leftover_state", {}) or {}
    check_head_keys(left)
    task = head(model, num_labels, **kwargs)
    if "classifier.weight" in left:
        w, b = left["classifier.weight"], left.get("classifier.bias")
        if tuple(w.shape) != tuple(task.classifier.weight.shape) or b is None or tuple(b.shape) != (num_labels,):
            raise CheckpointError(
                f"the checkpoint's classifier has shape {tuple(w.shape)}, "
                f"expected {tuple(task.classifier.weight.shape)}"
                " (and a bias of the same length); its config.json id2label does not match its weights"
            )
        with torch.no_grad():
            task.classifier.weight.copy_(w)
            task.classifier.bias.copy_(b)
    return task.eval()
