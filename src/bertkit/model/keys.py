"""What a model family is to the loader: its config class, its model class, which optional heads a
checkpoint holds, and the one explicit map from our parameter names to its checkpoint names.

Every BERT-shaped family runs network.py's blocks under BERT's names, so its key map is BERT's list of names
(`bert_names`) sent through the family's rename rules (`renamed`): a short table per family that says, in
order, where each of our names lives in its checkpoints. checkpoint.py loads any family with these, and checks
every mapped tensor is there with the right shape and that the map covers every parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from bertkit.model.config import BertConfig

LAYER_PARTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


@dataclass(frozen=True)
class Family:
    config: type[BertConfig]  # reads config.json; its model_types are the values this family loads
    model: type[nn.Module]  # built as model(config, **parts)
    parts: Callable[[dict], dict[str, bool]]  # which optional heads a (normalised) checkpoint holds
    names: Callable[..., list[str]]  # names(config, **parts): our parameter names, in reading order
    rules: tuple[tuple[str, str], ...]  # (regex, replacement) from our names to the checkpoint's, in order
    prefix: str  # the body's name in its checkpoints
    body_parts: tuple[str, ...]  # top-level names of a bare body's keys, which get the prefix
    ignored: re.Pattern = field(default=re.compile(r"^$"))  # checkpoint keys that are tied or derived, not loaded
    tied_decoder: str = ""  # the checkpoint's masked-LM decoder weight, expected equal to the word embeddings

    def key_map(self, config: BertConfig, parts: dict[str, bool]) -> dict[str, str]:
        """The one explicit map: our parameter name -> its name in the family's checkpoints."""
        return renamed(self.names(config, **parts), self.rules)

    def normalize(self, key: str) -> str:
        """A checkpoint key in full-model naming: a bare body's keys (a sentence-transformers folder, an
        AutoModel save) get the body prefix; TF-era LayerNorm gamma/beta become weight/bias."""
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if key.startswith(tuple(p + "." for p in self.body_parts)):
            key = f"{self.prefix}.{key}"
        return key


def bert_names(config: BertConfig, pooler: bool, mlm: bool, nsp: bool) -> list[str]:
    """Our parameter names, in reading order, for a BERT-shaped model with these heads."""
    names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight"]
    if config.type_vocab_size:
        names += ["bert.embeddings.token_type_embeddings.weight"]
    names += ["bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"]
    if config.embedding_dim != config.hidden_size:
        names += ["bert.embeddings.project.weight", "bert.embeddings.project.bias"]
    for i in range(config.num_hidden_layers):
        for part in LAYER_PARTS:
            names += [f"bert.encoder.layer.{i}.{part}.weight", f"bert.encoder.layer.{i}.{part}.bias"]
    if pooler:
        names += ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    if mlm:
        # cls.predictions.decoder.weight is tied to the word embeddings and not loaded separately.
        for part in ("transform.dense", "transform.LayerNorm"):
            names += [f"cls.predictions.{part}.weight", f"cls.predictions.{part}.bias"]
        names += ["cls.predictions.bias"]
    if nsp:
        names += ["cls.seq_relationship.weight", "cls.seq_relationship.bias"]
    return names


def renamed(names: list[str], rules: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """our name -> checkpoint name: each (regex, replacement) rule applied in order to every name."""
    out = {}
    for name in names:
        theirs = name
        for pattern, replacement in rules:
            theirs = re.sub(pattern, replacement, theirs)
        out[name] = theirs
    return out
