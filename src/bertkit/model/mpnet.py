"""MPNet: BERT's network with a relative position bias in attention, so it runs network.py's blocks. What
differs:

- the stack holds one (buckets, heads) table, `encoder.relative_attention_bias`, shared by all layers: each
  query-key pair adds the bias of its distance bucket (T5's bidirectional log buckets) to its attention score,
  on top of the absolute position embeddings;
- positions count from after the padding index, as RoBERTa's; no token types;
- its checkpoints name the attention `attention.attn.{q,k,v,o}` with `attention.LayerNorm`, and the masked-LM
  head `lm_head` (RoBERTa's shape). Like RoBERTa it was pre-trained without NSP, so its pooler is untrained.

The bias is made where the padding mask is (`attention_mask`): one additive (B, heads, T, T) mask, with
padding at the dtype's minimum, so SDPA, the explicit path, the packed path and ONNX export all take it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bertkit.model.keys import Family, bert_names
from bertkit.model.network import Bert, BertModel, EncoderStack
from bertkit.model.roberta import RobertaConfig

# transformers' MPNetEncoder.compute_position_bias buckets with its default num_buckets=32 whatever the config
# says (the table has relative_attention_num_buckets rows, 32 in every released checkpoint); so do we.
NUM_BUCKETS, MAX_DISTANCE = 32, 128


@dataclass
class MPNetConfig(RobertaConfig):
    """RoBERTa's settings (padding index 1, 514 positions, exact-GELU masked-LM head, an untrained pooler),
    without token types and with the bias table."""

    vocab_size: int = 30527
    type_vocab_size: int = 0
    relative_attention_num_buckets: int = 32

    model_types: ClassVar[tuple[str, ...]] = ("mpnet",)
    family: ClassVar[str] = "MPNet"
    prefix: ClassVar[str] = "mpnet"
    head_keys: ClassVar[dict[str, str]] = {"pooler": "mpnet.pooler.dense.*", "mlm": "lm_head.*"}
    lacks: ClassVar[dict[str, str]] = {k: v.replace("RoBERTa", "MPNet") for k, v in RobertaConfig.lacks.items()}
    pooler_note: ClassVar[str] = RobertaConfig.pooler_note.replace("RoBERTa", "MPNet")

    @classmethod
    def from_dict(cls, d: dict) -> MPNetConfig:
        return super().from_dict(d | {"type_vocab_size": 0})  # transformers' MPNet has no token types

    @property
    def position_offset(self) -> int:
        return 2  # transformers' MPNetEmbeddings fixes padding_idx at 1, whatever pad_token_id says


def relative_position_bucket(relative: torch.Tensor) -> torch.Tensor:
    """T5's bidirectional buckets: half for each direction, exact up to 8 apart, log-spaced up to 128."""
    half = NUM_BUCKETS // 2
    n = -relative
    bucket = (n < 0).long() * half
    n = n.abs()
    exact = half // 2
    far = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)).long()
    return bucket + torch.where(n < exact, n, far.clamp(max=half - 1))


class RelativeEncoderStack(EncoderStack):
    """BERT's stack plus the shared relative position bias table."""

    def __init__(self, config: MPNetConfig):
        super().__init__(config)
        self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_attention_heads)

    def attention_mask(self, mask: torch.Tensor | None, T: int) -> torch.Tensor:
        pos = torch.arange(T, device=self.relative_attention_bias.weight.device)
        bias = self.relative_attention_bias(relative_position_bucket(pos[None, :] - pos[:, None]))  # (T, T, heads)
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, T, T)
        if mask is None:
            return bias
        return bias.masked_fill(~mask, torch.finfo(bias.dtype).min)  # (B, heads, T, T)


class MPNetBody(BertModel):
    encoder_class = RelativeEncoderStack


class MPNet(Bert):
    body_class = MPNetBody

    def named_parts(self) -> list[tuple[str, nn.Module, str]]:
        parts = super().named_parts()
        bias = ("encoder.relative_attention_bias", self.bert.encoder.relative_attention_bias,
                "one (buckets, heads) table of attention score biases by distance, shared by all layers")
        return [parts[0], bias, *parts[1:]]


def parts(state: dict) -> dict[str, bool]:
    return {"pooler": "mpnet.pooler.dense.weight" in state, "mlm": "lm_head.dense.weight" in state, "nsp": False}


def names(config: MPNetConfig, pooler: bool, mlm: bool, nsp: bool) -> list[str]:
    return bert_names(config, pooler, mlm, nsp) + ["bert.encoder.relative_attention_bias.weight"]


LAYER = r"^bert\.encoder\.layer\.(\d+)\."
RULES = (
    (LAYER + r"attention\.self\.(query|key|value)\.",
     lambda m: f"mpnet.encoder.layer.{m[1]}.attention.attn.{m[2][0]}."),
    (LAYER + r"attention\.output\.dense\.", r"mpnet.encoder.layer.\1.attention.attn.o."),
    (LAYER + r"attention\.output\.LayerNorm\.", r"mpnet.encoder.layer.\1.attention.LayerNorm."),
    (r"^bert\.", "mpnet."),
    (r"^cls\.predictions\.transform\.dense\.", "lm_head.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "lm_head.layer_norm."),
    (r"^cls\.predictions\.bias$", "lm_head.bias"),
)

FAMILY = Family(
    MPNetConfig, MPNet, parts, names, RULES, "mpnet", ("embeddings", "encoder", "pooler"),
    re.compile(r"^(mpnet\.embeddings\.position_ids|lm_head\.decoder\.(weight|bias))$"),
    "lm_head.decoder.weight",
)
