"""Plumbing shared by the task trainers (classify, ner, pretrain): load a body, save a folder, batch inference."""

from __future__ import annotations

import logging
from pathlib import Path

from bertkit.errors import InputError, OptionError
from bertkit.heads.task import TaskHead, load_task_head
from bertkit.model import Bert, save_model
from bertkit.runtime.folder import load_body, open_folder
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger(__name__)


def load_base(model: str | Path | None, max_length: int | None = None) -> tuple[Bert, BertTokenizer, BertTokenizer]:
    """The model (with its leftover checkpoint entries), a tokenizer cutting at `max_length` for training,
    and one at the model's own limit, which is the one saved with the result."""
    opened = open_folder(model)
    base, full = load_body(opened), opened.tokenizer
    if max_length is not None and max_length < 2:
        raise OptionError(f"max_length must be >= 2, got {max_length}")
    short = (BertTokenizer.from_dir(opened.folder, root=opened.root, max_length=min(max_length, full.max_length))
             if max_length else full)
    return base, short, full


def save_folder(model: Bert, tokenizer: BertTokenizer, folder: Path, **config) -> None:
    """config.json + model.safetensors + tokenizer files: what `from_pretrained(folder)` reads."""
    save_model(model, folder, **config)
    tokenizer.save(folder)


def require_examples(items: list, path: str | Path, what: str) -> list:
    if not items:
        raise InputError(f"{path} holds no {what}; give a file with at least one")
    return items


def freeze_word_embeddings(model: Bert, freeze: bool) -> None:
    """Keep the (vocab x hidden) word embeddings fixed: on a CPU their dense gradient and AdamW update are a
    large share of a small model's step, and fine-tuning them rarely matters for the task."""
    if freeze:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)


def task_model(base: Bert, head: type[TaskHead], labels: list[str], **kwargs) -> TaskHead:
    """A fresh head over the body, or the checkpoint's own head when it was trained on the same labels
    (so `--model` pointing at a fine-tuned folder continues fine-tuning instead of starting the head over)."""
    saved = {int(k): v for k, v in (base.config.extra.get("id2label") or {}).items()}
    same = [saved.get(i) for i in range(len(saved))] == labels
    if same and "classifier.weight" in (getattr(base, "leftover_state", None) or {}):
        log.info("continuing with the checkpoint's classifier head (same labels: %s)", ", ".join(labels))
        return load_task_head(base, head, len(labels), **kwargs)
    return head(base, len(labels), **kwargs)
