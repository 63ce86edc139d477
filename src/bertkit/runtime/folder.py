"""Opening a model folder, once for everyone: resolve the name, find the transformer files, load the tokenizer
(no torch); `load_body` then loads the torch model from it. The encoder, the graph export, the task heads and
the trainers all start here.

    folder = open_folder("splade-tiny")       # Folder(root, folder, name, tokenizer)
    model = load_body(folder)                 # bertkit.model.Bert, eval mode (imports torch)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertkit.model.locate import display_name, resolve_model_dir, transformer_dir
from bertkit.tokenizer import BertTokenizer

if TYPE_CHECKING:
    from bertkit.model import Bert


@dataclass
class Folder:
    root: Path  # what was resolved: the packaged model, a local folder, a hub snapshot
    folder: Path  # where config.json and the weights are (a sentence-transformers folder keeps them below)
    name: str  # what an encoder reports it was loaded from (`bertkit inspect`, the server's /info)
    tokenizer: BertTokenizer


def open_folder(name_or_path: str | Path | None, max_length: int | None = None) -> Folder:
    """None = the packaged default model; else a local folder, a packaged alias or a Hugging Face hub id."""
    root = resolve_model_dir(name_or_path)
    folder = transformer_dir(root)
    tokenizer = BertTokenizer.from_dir(folder, root=root, max_length=max_length)
    return Folder(root, folder, display_name(name_or_path) or str(root), tokenizer)


def load_body(folder: Folder | str | Path | None) -> Bert:
    """The torch model of a folder (eval mode; leftover checkpoint entries kept for the task heads)."""
    from bertkit.model import load_model

    return load_model(folder.root if isinstance(folder, Folder) else folder)[0]
