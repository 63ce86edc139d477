"""A compact BERT in PyTorch that loads Hugging Face BERT checkpoints and matches `transformers` numerically.

Reading order: config.py (BertConfig) -> network.py (the blocks, the one layer loop, `Bert`) -> packed.py
(the packed inference forward) -> locate.py (finding a model folder) -> checkpoint.py (the key map, loading
and saving) -> describe.py (what `bertkit inspect` prints). This file only re-exports; task heads over the
body live in bertkit.heads.
"""

from __future__ import annotations

from bertkit.model.checkpoint import (
    IGNORED_KEYS,
    checkpoint_key_map,
    load_model,
    model_from_state_dict,
    normalize_key,
    read_state_dict,
    save_model,
)
from bertkit.model.config import ACTIVATIONS, CONFIG_VERSION, BertConfig, activation
from bertkit.model.describe import Part, describe
from bertkit.model.locate import (
    HUB_FILES,
    HUB_ID,
    architecture,
    default_model_dir,
    download_from_hub,
    read_json,
    resolve_model_dir,
    transformer_dir,
)
from bertkit.model.network import (
    AddNorm,
    Attention,
    Bert,
    BertModel,
    BertOutput,
    Embeddings,
    EncoderStack,
    Intermediate,
    Layer,
    MaskedLMHead,
    Pooler,
    PredictionTransform,
    PreTrainingHeads,
    SelfAttention,
)
from bertkit.model.packed import SMALL_ROWS, forward_packed

__all__ = [
    "ACTIVATIONS", "CONFIG_VERSION", "HUB_FILES", "HUB_ID", "IGNORED_KEYS", "SMALL_ROWS",
    "AddNorm", "Attention", "Bert", "BertConfig", "BertModel", "BertOutput", "Embeddings", "EncoderStack",
    "Intermediate", "Layer", "MaskedLMHead", "Part", "Pooler", "PreTrainingHeads", "PredictionTransform",
    "SelfAttention",
    "activation", "architecture", "checkpoint_key_map", "default_model_dir", "describe", "download_from_hub",
    "forward_packed", "load_model", "model_from_state_dict", "normalize_key", "read_json", "read_state_dict",
    "resolve_model_dir", "save_model", "transformer_dir",
]
