"""A compact BERT in PyTorch that loads Hugging Face BERT checkpoints and matches `transformers` numerically.

Reading order: config.py (BertConfig) -> network.py (the blocks, the one layer loop, `Bert`) -> packed.py
(the packed inference forward) -> locate.py (finding a model folder) -> checkpoint.py (the key map, loading
and saving) -> parts.py (`describe`: what `bertkit inspect` prints). This file only re-exports; task heads over the
body live in bertkit.heads.task.

The re-exports are lazy (PEP 562): `from bertkit.model import read_json` (locate.py) must not import torch,
because the ONNX inference path (bertkit.runtime.open, bertkit.runtime.onnxrt) finds model folders without it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "checkpoint": ("IGNORED_KEYS", "checkpoint_key_map", "load_model", "model_from_state_dict", "normalize_key",
                   "read_state_dict", "save_model"),
    "config": ("ACTIVATIONS", "CONFIG_VERSION", "BertConfig", "activation"),
    "parts": ("Part", "describe"),
    "locate": ("HUB_FILES", "HUB_ID", "architecture", "default_model_dir", "display_name", "download_from_hub",
               "read_json", "resolve_model_dir", "transformer_dir"),
    "lm_heads": ("MaskedLMHead", "PredictionTransform", "PreTrainingHeads"),
    "network": ("AddNorm", "Attention", "Bert", "BertModel", "BertOutput", "Embeddings", "EncoderStack",
                "Intermediate", "Layer", "Pooler", "SelfAttention"),
    "packed": ("SMALL_ROWS", "forward_packed"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ACTIVATIONS", "CONFIG_VERSION", "HUB_FILES", "HUB_ID", "IGNORED_KEYS", "SMALL_ROWS",
    "AddNorm", "Attention", "Bert", "BertConfig", "BertModel", "BertOutput", "Embeddings", "EncoderStack",
    "Intermediate", "Layer", "MaskedLMHead", "Part", "Pooler", "PreTrainingHeads", "PredictionTransform",
    "SelfAttention",
    "activation", "architecture", "checkpoint_key_map", "default_model_dir", "describe", "display_name",
    "download_from_hub",
    "forward_packed", "load_model", "model_from_state_dict", "normalize_key", "read_json", "read_state_dict",
    "resolve_model_dir", "save_model", "transformer_dir",
]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'bertkit.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bertkit.model.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
