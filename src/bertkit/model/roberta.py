"""RoBERTa and XLM-RoBERTa: BERT's network with two changes in the embeddings, so they run network.py's
blocks (this module is their config and their key map, nothing else):

- positions count from after the padding index (pad_token_id 1, so the first token sits at position 2,
  and max_position_embeddings is 514 for 512 tokens);
- one token type (type_vocab_size 1): no segment B, so a pair is told apart by its </s></s> separator alone.

RoBERTa was pre-trained without next-sentence prediction: its checkpoints carry a pooler (dense + tanh over
<s>) that no objective ever trained, and no NSP head. The pooler is loaded, as transformers does, and
`describe` says what it is. XLM-R is the same network with a 250k SentencePiece (Unigram) vocabulary.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar

from bertkit.model.config import BertConfig
from bertkit.model.keys import Family, bert_names
from bertkit.model.network import Bert


@dataclass
class RobertaConfig(BertConfig):
    vocab_size: int = 50265
    max_position_embeddings: int = 514  # 512 tokens after the padding index and the one below it
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1

    model_types: ClassVar[tuple[str, ...]] = ("roberta",)
    family: ClassVar[str] = "RoBERTa"
    prefix: ClassVar[str] = "roberta"
    head_keys: ClassVar[dict[str, str]] = {"pooler": "roberta.pooler.dense.*", "mlm": "lm_head.*"}
    lacks: ClassVar[dict[str, str]] = {
        "nsp": "RoBERTa was pre-trained without next-sentence prediction and has no NSP head",
    }
    pooler_note: ClassVar[str] = ("dense + tanh over <s>; RoBERTa was pre-trained without next-sentence "
                                  "prediction, so this pooler was never trained (random) unless fine-tuned")

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1

    @property
    def mlm_act(self) -> str:
        return "gelu"  # transformers' RobertaLMHead applies exact GELU whatever hidden_act says


@dataclass
class XLMRobertaConfig(RobertaConfig):
    vocab_size: int = 250002

    model_types: ClassVar[tuple[str, ...]] = ("xlm-roberta",)
    family: ClassVar[str] = "XLM-RoBERTa"
    lacks: ClassVar[dict[str, str]] = {k: v.replace("RoBERTa", "XLM-RoBERTa") for k, v in RobertaConfig.lacks.items()}
    pooler_note: ClassVar[str] = RobertaConfig.pooler_note.replace("RoBERTa", "XLM-RoBERTa")


def parts(state: dict) -> dict[str, bool]:
    return {"pooler": "roberta.pooler.dense.weight" in state, "mlm": "lm_head.dense.weight" in state, "nsp": False}


# Our name -> RoBERTa's: the body is `roberta`, the masked-LM head `lm_head` with a lower-case layer_norm.
RULES = (
    (r"^bert\.", "roberta."),
    (r"^cls\.predictions\.transform\.dense\.", "lm_head.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "lm_head.layer_norm."),
    (r"^cls\.predictions\.bias$", "lm_head.bias"),
)

ROBERTA = Family(
    RobertaConfig, Bert, parts, bert_names, RULES, "roberta", ("embeddings", "encoder", "pooler"),
    # position_ids / token_type_ids are buffers; the decoder is tied to the word embeddings and lm_head.bias.
    re.compile(r"^(roberta\.embeddings\.(position_ids|token_type_ids)|lm_head\.decoder\.(weight|bias))$"),
    "lm_head.decoder.weight",
)
FAMILIES = (ROBERTA, dataclasses.replace(ROBERTA, config=XLMRobertaConfig))
