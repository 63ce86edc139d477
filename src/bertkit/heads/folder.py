"""The one folder loader for task heads, and the sentence-transformers folder facts that evaluation and
training both read: a body with its tokenizers, and the pooling a sentence-transformers folder declares.

Predictors, the cross-encoder and the trainers all load through `load_base`, so a folder is resolved, its
weights loaded and its tokenizer read in one place (train/ and which/ sit above heads/ and import it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bertkit.errors import InputError, OptionError
from bertkit.model import read_json, resolve_model_dir
from bertkit.tokenizer import BertTokenizer

if TYPE_CHECKING:
    from bertkit.model import Bert

log = logging.getLogger(__name__)

# Poolings a sentence-transformers Pooling module can express (so a saved folder means the same thing there).
ST_POOLINGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
               "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}


def load_base(model: str | Path | None,
              max_length: int | None = None) -> tuple[Bert, BertTokenizer, BertTokenizer]:
    """The model (with its leftover checkpoint entries), a tokenizer cutting at `max_length` for training,
    and one at the model's own limit, which is the one saved with the result."""
    from bertkit.runtime.folder import (  # torch: only here, so st_pooling stays torch-free
        load_body,
        open_folder,
    )

    opened = open_folder(model)
    if max_length is not None and max_length < 2:
        raise OptionError(f"max_length must be >= 2, got {max_length}")
    base, full = load_body(opened), opened.tokenizer
    if not max_length:
        return base, full, full
    short = BertTokenizer.from_dir(opened.folder, root=opened.root, max_length=min(max_length, full.max_length))
    return base, short, full


def require_examples(items: list, path: str | Path, what: str) -> list:
    if not items:
        raise InputError(f"{path} holds no {what}; give a file with at least one")
    return items


def st_pooling(folder: str) -> str:
    """The pooling a sentence-transformers folder declares (1_Pooling/config.json), else mean. Both forms:
    sentence-transformers < 6 writes one boolean per mode (pooling_mode_cls_token: true), 6 writes
    pooling_mode: "cls" (or a list of modes, concatenated)."""
    config = Path(resolve_model_dir(folder)) / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    declared = read_json(config)
    modes = declared.get("pooling_mode")
    if modes is not None:
        modes = [modes] if isinstance(modes, str) else list(modes)
        ours = {"mean_sqrt_len_tokens": "mean_sqrt_len"}
        if len(modes) == 1 and ours.get(modes[0], modes[0]) in ST_POOLINGS:
            return ours.get(modes[0], modes[0])
        log.warning("%s declares pooling %s, which bertkit has no equivalent of; pooling with mean", config, modes)
        return "mean"
    for name, key in ST_POOLINGS.items():
        if declared.get(key):
            return name
    return "mean"
