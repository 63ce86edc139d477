"""DistilBERT: BERT's network, six layers distilled from BERT's twelve, without token types, pooler or NSP
head, so it runs network.py's blocks; this module is its config (other key names: dim, n_layers, ...) and
its key map (other module names: q_lin, sa_layer_norm, ffn.lin1, ...).

A pair of texts still gets [SEP] between them but no segment ids (the tokenizer gives all zeros), and
`pooling="pooler"` is refused: there is nothing trained there, and [CLS] or the mean is the vector to use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from bertkit.model.config import BertConfig
from bertkit.model.keys import Family, bert_names
from bertkit.model.network import Bert

# DistilBERT's config.json keys -> ours (transformers' DistilBertConfig.attribute_map, and the rest).
CONFIG_KEYS = {
    "dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
}


@dataclass
class DistilBertConfig(BertConfig):
    num_hidden_layers: int = 6
    type_vocab_size: int = 0  # no segment embeddings

    model_types: ClassVar[tuple[str, ...]] = ("distilbert",)
    family: ClassVar[str] = "DistilBERT"
    prefix: ClassVar[str] = "distilbert"
    head_keys: ClassVar[dict[str, str]] = {"mlm": "vocab_transform, vocab_layer_norm, vocab_projector"}
    lacks: ClassVar[dict[str, str]] = {
        "pooler": "DistilBERT has no pooler; use cls or mean",
        "nsp": "DistilBERT has no next-sentence-prediction head (it was distilled without NSP)",
    }

    @classmethod
    def from_dict(cls, d: dict) -> DistilBertConfig:
        d = {CONFIG_KEYS.get(k, k): v for k, v in d.items()}
        # Fixed in transformers' DistilBERT whatever config.json says.
        return super().from_dict(d | {"type_vocab_size": 0, "layer_norm_eps": 1e-12})

    def to_dict(self) -> dict:
        ours = {v: k for k, v in CONFIG_KEYS.items()}
        skip = {"type_vocab_size", "layer_norm_eps", "position_embedding_type"}
        return {ours.get(k, k): v for k, v in super().to_dict().items() if k not in skip}


def parts(state: dict) -> dict[str, bool]:
    return {"pooler": False, "mlm": "vocab_transform.weight" in state, "nsp": False}


# Our layer part -> DistilBERT's; "attention.output.*" comes before "output.*", which it would also match.
LAYER_RENAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
RULES = (
    *((rf"^bert\.encoder\.layer\.(\d+)\.{re.escape(ours)}\.", rf"distilbert.transformer.layer.\1.{theirs}.")
      for ours, theirs in LAYER_RENAMES.items()),
    (r"^bert\.embeddings\.", "distilbert.embeddings."),
    (r"^cls\.predictions\.transform\.dense\.", "vocab_transform."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "vocab_layer_norm."),
    (r"^cls\.predictions\.bias$", "vocab_projector.bias"),
)


FAMILY = Family(
    DistilBertConfig, Bert, parts, bert_names, RULES, "distilbert", ("embeddings", "transformer"),
    re.compile(r"^(distilbert\.embeddings\.position_ids|vocab_projector\.weight)$"),
    "vocab_projector.weight",
)
