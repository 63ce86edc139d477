"""ELECTRA: BERT's network trained as a discriminator (per token: was it replaced by a small generator?),
so it runs network.py's blocks. What differs:

- the embedding tables may be narrower than the hidden size (embedding_size), projected up by one Linear
  (`electra.embeddings_project`, applied inside our Embeddings; see network.py);
- no pooler and no NSP head: [CLS] was trained only through the discriminator's per-token loss;
- the heads: a discriminator checkpoint (ElectraForPreTraining) has `discriminator_predictions` (dense, the
  activation, dense to one logit per token), returned as `discriminator_logits`; a generator checkpoint
  (ElectraForMaskedLM) has a masked-LM head mapping back to the embedding width, run as network.py's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bertkit.model.config import BertConfig, activation
from bertkit.model.keys import Family, bert_names
from bertkit.model.network import Bert, BertOutput, wants


@dataclass
class ElectraConfig(BertConfig):
    embedding_size: int = 128

    model_types: ClassVar[tuple[str, ...]] = ("electra",)
    family: ClassVar[str] = "ELECTRA"
    prefix: ClassVar[str] = "electra"
    head_keys: ClassVar[dict[str, str]] = {"mlm": "generator_predictions.*, generator_lm_head.*"}
    lacks: ClassVar[dict[str, str]] = {
        "pooler": "ELECTRA has no pooler; use cls or mean (its [CLS] was trained by the discriminator only)",
        "nsp": "ELECTRA has no next-sentence-prediction head (it was pre-trained as a discriminator)",
    }

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size

    @property
    def mlm_act(self) -> str:
        return "gelu"  # transformers' ElectraGeneratorPredictions applies exact GELU whatever hidden_act says


class DiscriminatorHead(nn.Module):
    """Per token: dense -> activation -> one logit, "this token was replaced" (HF `discriminator_predictions`)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)  # (B, T)


class Electra(Bert):
    """The body with its generator's masked-LM head or its discriminator head, whichever the checkpoint has."""

    def __init__(self, config: ElectraConfig, pooler: bool = False, mlm: bool = False, nsp: bool = False,
                 discriminator: bool = False):
        super().__init__(config, pooler=pooler, mlm=mlm, nsp=nsp)
        self.discriminator = DiscriminatorHead(config) if discriminator else None
        if discriminator:
            self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False, compute_heads=True) -> BertOutput:
        out = super().forward(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions,
                              compute_heads)
        if wants(compute_heads, "discriminator") and self.discriminator is not None:
            out.discriminator_logits = self.discriminator(out.last_hidden_state)  # (B, T)
        return out


    def named_parts(self) -> list[tuple[str, nn.Module, str]]:
        parts = super().named_parts()
        if self.discriminator is not None:
            parts.append(("discriminator", self.discriminator, "per token: was it replaced (dense -> act -> 1)"))
        return parts


def parts(state: dict) -> dict[str, bool]:
    return {"mlm": "generator_predictions.dense.weight" in state,
            "discriminator": "discriminator_predictions.dense.weight" in state}


def names(config: ElectraConfig, mlm: bool, discriminator: bool) -> list[str]:
    out = bert_names(config, pooler=False, mlm=mlm, nsp=False)
    if discriminator:
        out += [f"discriminator.{p}.{w}" for p in ("dense", "dense_prediction") for w in ("weight", "bias")]
    return out


RULES = (
    (r"^bert\.embeddings\.project\.", "electra.embeddings_project."),
    (r"^bert\.", "electra."),
    (r"^cls\.predictions\.transform\.", "generator_predictions."),
    (r"^cls\.predictions\.bias$", "generator_lm_head.bias"),
    (r"^discriminator\.", "discriminator_predictions."),
)

FAMILY = Family(
    ElectraConfig, Electra, parts, names, RULES, "electra", ("embeddings", "embeddings_project", "encoder"),
    re.compile(r"^(electra\.embeddings\.(position_ids|token_type_ids)|generator_lm_head\.weight)$"),
    "generator_lm_head.weight",
)
