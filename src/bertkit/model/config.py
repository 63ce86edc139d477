"""The model's shape and settings, as read from and written to config.json (transformers' BERT keys)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from bertkit.errors import CheckpointError, OptionError

CONFIG_VERSION = 1  # bumped when the meaning of a saved field changes

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise OptionError(f"hidden_act {name!r} is not supported; use one of {tuple(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# The masked-LM / NSP / pooler heads by name, as `require` and `describe` speak of them.
HEAD_NAMES = {"pooler": "pooler", "mlm": "masked-LM head", "nsp": "next-sentence-prediction head"}


@dataclass
class BertConfig:
    """BERT's config; the other BERT-shaped families (roberta.py, distilbert.py, electra.py, mpnet.py) subclass
    it, translate their config.json keys in `from_dict` / `to_dict`, and override the class attributes and
    properties below the fields, which is all the shared blocks (network.py) ask of a family."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # "gelu" is the exact erf form; "gelu_new"/"gelu_pytorch_tanh" the tanh form
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segment A / segment B, for sentence pairs
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Keys of config.json we do not interpret (id2label, architectures, ...), kept so a save round-trips.
    extra: dict = field(default_factory=dict, repr=False)

    # -- what a family is (class attributes: not fields, so not written to config.json) --
    model_types: ClassVar[tuple[str, ...]] = ("bert",)  # config.json model_type values this class reads
    family: ClassVar[str] = "BERT"  # the name messages and `inspect` use
    prefix: ClassVar[str] = "bert"  # the body's name in the family's checkpoints (bert., roberta., ...)
    # Where each head lives in the family's checkpoints, for "this checkpoint does not have it" messages.
    head_keys: ClassVar[dict[str, str]] = {
        "pooler": "bert.pooler.dense.*", "mlm": "cls.predictions.*", "nsp": "cls.seq_relationship.*",
    }
    # Heads the family never has, with the one line that says so and what to use instead.
    lacks: ClassVar[dict[str, str]] = {}
    pooler_note: ClassVar[str] = "dense + tanh over [CLS], trained by next-sentence prediction"

    @property
    def embedding_dim(self) -> int:
        """The width of the embedding tables; ELECTRA's are narrower and projected up to hidden_size."""
        return self.hidden_size

    @property
    def position_offset(self) -> int:
        """Position ids count from here: 0 for BERT; RoBERTa and MPNet start after the padding index."""
        return 0

    @property
    def mlm_act(self) -> str:
        """The masked-LM head's activation: BERT's is hidden_act, RoBERTa's and ELECTRA's always exact GELU."""
        return self.hidden_act

    def missing_head(self, head: str, purpose: str) -> str:
        """One line for a model without `head`: the family never has it (and what to use instead), or this
        checkpoint was saved without it (and where to get one with it)."""
        if head in self.lacks:
            return f"{purpose}: {self.lacks[head]}"
        what = f"{HEAD_NAMES[head]} ({self.head_keys[head]})"
        if self.family != "BERT":
            return (f"{purpose} needs the {what}, which this {self.family} checkpoint does not have; "
                    f"load a {self.family} checkpoint saved with it")
        return (
            f"{purpose} needs the {what}, which this checkpoint does not have. "
            "Load a checkpoint saved with its pre-training heads (e.g. a BertForPreTraining model such as "
            "bert-base-uncased), or add and train them with `bertkit pretrain --init <model> --output DIR`."
        )

    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        """A config.json's contents. The folder was found, so a config bertkit cannot run is a CheckpointError."""
        model_type = d.get("model_type", cls.model_types[0])
        if model_type not in cls.model_types:  # a caller's bug: load_model dispatches on model_type first
            raise ValueError(f"model_type {model_type!r} is not a {cls.family} config")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(
                f"position_embedding_type={d['position_embedding_type']!r} is not supported; only 'absolute' is"
            )
        act = d.get("hidden_act", cls.hidden_act)
        if act not in ACTIVATIONS:
            raise CheckpointError(f"config.json says hidden_act={act!r}; bertkit supports {', '.join(ACTIVATIONS)}")
        hidden, heads = d.get("hidden_size", cls.hidden_size), d.get("num_attention_heads", cls.num_attention_heads)
        if hidden % heads:
            raise CheckpointError(f"config.json says hidden_size={hidden}, not a multiple of "
                                  f"num_attention_heads={heads}")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path} is not valid JSON ({e}); fix or replace the file") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        """A config.json that transformers' BERT classes read."""
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d.update(self.extra)
        d.update(model_type=self.model_types[0], position_embedding_type="absolute",
                 bertkit_config_version=CONFIG_VERSION)
        return d

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
