"""ModernBERT: a pre-norm encoder with rotary positions, GeGLU feed-forward, no bias terms, and attention that
alternates between global layers and local ones (each token sees only its neighbours within a window). Too
unlike BERT to share its layers, so it has its own blocks here, in reading order, under transformers' names
(`model.layers.N.attn.Wqkv`, `mlp.Wi`, `final_norm`, `head`, `decoder`) so the key map is one rename of the
body's prefix. Its body is `bert`, as in every family, so the rest of bertkit sees one interface.

What differs from BERT, block by block:
- embeddings: word embeddings and a LayerNorm, nothing else (no positions, no token types);
- each layer: LayerNorm -> attention -> add, LayerNorm -> GeGLU MLP -> add (pre-norm; the first layer's
  attention takes the embeddings' already normed output, so it has no norm of its own);
- attention: q and k rotated by their position (RoPE), with a longer wavelength (global_rope_theta) on global
  layers than on local ones; every `global_attn_every_n_layers`-th layer (from the first) is global, the others
  see |i - j| <= local_attention // 2;
- a final LayerNorm after the last layer; no pooler, no NSP head; the masked-LM head is `head` + `decoder`.

The packed fast path (forward_packed) is written here, after the blocks, in packed.py's way: the real tokens
only, each rotated by its own position, back in the padded grid for attention alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import CheckpointError
from bertkit.model.config import ACTIVATIONS, BertConfig, activation
from bertkit.model.keys import Family
from bertkit.model.network import Bert, BertOutput, wants
from bertkit.model.packed import Packing


@dataclass
class ModernBertConfig(BertConfig):
    vocab_size: int = 50368
    num_hidden_layers: int = 22
    intermediate_size: int = 1152
    max_position_embeddings: int = 8192
    type_vocab_size: int = 0
    pad_token_id: int = 50283
    hidden_act: str = "gelu"  # config.json's hidden_activation
    layer_norm_eps: float = 1e-5  # config.json's norm_eps
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    decoder_bias: bool = True
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    local_attention: int = 128  # the whole window: a local layer sees local_attention // 2 either side
    layer_types: list[str] = field(default_factory=list)  # "full_attention" / "sliding_attention" per layer
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0

    model_types: ClassVar[tuple[str, ...]] = ("modernbert",)
    family: ClassVar[str] = "ModernBERT"
    prefix: ClassVar[str] = "model"
    head_keys: ClassVar[dict[str, str]] = {"mlm": "head.*, decoder.*"}
    lacks: ClassVar[dict[str, str]] = {
        "pooler": "ModernBERT has no pooler; use cls or mean",
        "nsp": "ModernBERT has no next-sentence-prediction head (it was pre-trained by masked LM only)",
    }

    @classmethod
    def from_dict(cls, d: dict) -> ModernBertConfig:
        """Either config.json form: transformers >= 5 (layer_types, rope_parameters) or the released one
        (global_attn_every_n_layers, global_rope_theta, local_rope_theta)."""
        d = dict(d)
        n = d.get("num_hidden_layers", cls.num_hidden_layers)
        every = d.pop("global_attn_every_n_layers", 3)
        if not d.get("layer_types"):
            d["layer_types"] = ["sliding_attention" if i % every else "full_attention" for i in range(n)]
        rope = d.pop("rope_parameters", None) or {}
        for kind, key in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
            params = rope.get(kind) or {}
            if params.get("rope_type", "default") != "default":
                raise CheckpointError(f"config.json says rope_type={params['rope_type']!r}; "
                                      "bertkit runs 'default' only")
            if "rope_theta" in params:
                d[key] = params["rope_theta"]
        d["hidden_act"] = d.pop("hidden_activation", cls.hidden_act)
        d["layer_norm_eps"] = d.pop("norm_eps", cls.layer_norm_eps)
        for act in (d["hidden_act"], d.get("classifier_activation", cls.classifier_activation)):
            if act not in ACTIVATIONS:
                raise CheckpointError(f"config.json says activation {act!r}; bertkit supports {', '.join(ACTIVATIONS)}")
        names = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["hidden_activation"], d["norm_eps"] = d.pop("hidden_act"), d.pop("layer_norm_eps")
        for key in ("type_vocab_size", "position_embedding_type", "hidden_dropout_prob",
                    "attention_probs_dropout_prob"):
            d.pop(key, None)
        return d


# ----------------------------------------------------------------------------------------------------------
# Blocks


class Embeddings(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tok_embeddings(input_ids))  # (B, T, H)


def rotary(T: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each position's rotation angles, (T, head_dim): the first half of the head's dimensions
    pairs with the second half, and pair j turns by position * theta ** (-2j / head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim))
    angles = torch.arange(T, dtype=torch.float, device=device)[:, None] * inv_freq  # (T, head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, head_dim)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x_j, x_{j + d/2}) pair by its angle; in float32, as transformers does."""
    xf = x.float()
    half = xf.shape[-1] // 2
    turned = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + turned * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with q, k, v from one bias-free Linear (Wqkv) and rotary positions."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(self, x, mask, cos, sin, output_attentions):
        B, T, H = x.shape
        q, k, v = self.Wqkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # (B, heads, T, head_dim)
        if output_attentions:
            probs = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask).softmax(dim=-1)  # (B, heads, T, T)
            context = probs @ v
        else:
            probs, context = None, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.Wo(context.transpose(1, 2).reshape(B, T, H)), probs


class MLP(nn.Module):
    """GeGLU: Wi makes two halves, act(first) gates second, Wo maps back to the hidden size."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = activation(config.hidden_act)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner, gate = self.Wi(x).chunk(2, dim=-1)  # (B, T, I) each
        return self.Wo(self.act(inner) * gate)


class Layer(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModernBertConfig, index: int):
        super().__init__()
        norm = dict(eps=config.layer_norm_eps, bias=config.norm_bias)
        # The first layer reads the embeddings' output, already normed.
        self.attn_norm = nn.LayerNorm(config.hidden_size, **norm) if index else nn.Identity()
        self.attn = Attention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, **norm)
        self.mlp = MLP(config)
        self.local = config.layer_types[index] == "sliding_attention"

    def forward(self, x, mask, cos, sin, output_attentions):
        context, probs = self.attn(self.attn_norm(x), mask, cos, sin, output_attentions)
        x = x + context
        return x + self.mlp(self.mlp_norm(x)), probs


class ModernBertModel(nn.Module):
    """The body: embeddings, the layers (the one layer loop), the final norm."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)
        self.pooler = None

    def masks(self, attention_mask: torch.Tensor | None, T: int, like: torch.Tensor) -> dict[bool, torch.Tensor]:
        """Additive masks, (B, 1, T, T) or (T, T) without padding, keyed by "is local": padding keys and, for
        local layers, keys beyond the window at the dtype's minimum. Additive, not boolean, so that a padding query
        whose whole window is padding gets a uniform row instead of SDPA's NaN."""
        pos = torch.arange(T, device=like.device)
        allowed = {False: torch.ones(T, T, dtype=torch.bool, device=like.device),
                   True: (pos[None, :] - pos[:, None]).abs() <= self.config.local_attention // 2}  # (T, T)
        if attention_mask is not None:
            allowed = {k: a & attention_mask.bool()[:, None, None, :] for k, a in allowed.items()}  # (B, 1, T, T)
        low = torch.finfo(like.dtype).min
        return {k: torch.zeros(a.shape, dtype=like.dtype, device=like.device).masked_fill_(~a, low)
                for k, a in allowed.items()}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False) -> BertOutput:
        """token_type_ids is accepted for the common interface and ignored: ModernBERT has no segments."""
        c = self.config
        T = input_ids.shape[1]
        x = self.embeddings(input_ids)  # (B, T, H)
        masks = self.masks(attention_mask, T, x)
        ropes = {local: rotary(T, c.head_dim, c.local_rope_theta if local else c.global_rope_theta, x.device)
                 for local in (False, True)}
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, probs = layer(x, masks[layer.local], *ropes[layer.local], output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        x = self.final_norm(x)
        if output_hidden_states:  # the last one after the final norm, as transformers gives it: the output
            hidden_states[-1] = x
        return BertOutput(last_hidden_state=x, hidden_states=tuple(hidden_states) if output_hidden_states else None,
                          attentions=tuple(attentions) if output_attentions else None)


# ----------------------------------------------------------------------------------------------------------
# The packed forward, as packed.py's for BERT: padding is dropped before the embeddings, so every Linear,
# LayerNorm and the GeGLU run on the N real tokens as one (N, H) matrix, each token rotated by its own position.
# Only attention needs the sequences apart: the rotated q, k and v rows are scattered into the padded (B, T)
# grid for one SDPA call over the same masks as the padded forward (padding keys, and the window on local
# layers), so a local window never reaches into the next sequence, and gathered back.


def _attention_packed(att: Attention, x: torch.Tensor, pack: Packing, mask: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor) -> torch.Tensor:
    """An Attention block on (N, H) real tokens, with cos and sin (N, 1, head_dim) of each one's position."""
    N, H = x.shape
    q, k, v = att.Wqkv(x).view(N, 3, att.num_heads, att.head_dim).unbind(1)  # (N, heads, head_dim) each
    qkv = torch.stack((rotate(q, cos, sin), rotate(k, cos, sin), v))  # (3, N, heads, head_dim)
    if pack.padded:  # (3, B*T, heads, head_dim), zeros at padding
        qkv = qkv.new_zeros(3, pack.B * pack.T, *qkv.shape[2:]).index_copy_(1, pack.keep, qkv)
    q, k, v = qkv.view(3, pack.B, pack.T, att.num_heads, att.head_dim).transpose(2, 3).unbind(0)  # (B, heads, T, d)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(pack.B * pack.T, H)
    return att.Wo(context[pack.keep] if pack.padded else context)  # (N, H)


def forward_packed(body: ModernBertModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   output_hidden_states: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """(last hidden state (B, T, H), embeddings + every layer's output or None), zeros at padding."""
    c = body.config
    B, T = input_ids.shape
    keep = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    pack = Packing(B, T, keep, keep.numel() != B * T, None)
    x = body.embeddings(input_ids.reshape(-1)[keep])  # (N, H)
    masks = body.masks(attention_mask if pack.padded else None, T, x)  # the padded forward's, keyed by "is local"
    position = keep % T  # (N,) each token's column in the grid: its position, as the padded forward counts
    ropes = {local: tuple(r[position, None] for r in rotary(  # (N, 1, head_dim): broadcast over the heads
        T, c.head_dim, c.local_rope_theta if local else c.global_rope_theta, x.device)) for local in (False, True)}
    hidden_states = [x] if output_hidden_states else None
    for layer in body.layers:
        x = x + _attention_packed(layer.attn, layer.attn_norm(x), pack, masks[layer.local], *ropes[layer.local])
        x = x + layer.mlp(layer.mlp_norm(x))  # (N, H)
        if output_hidden_states:
            hidden_states.append(x)
    x = body.final_norm(x)
    if output_hidden_states:  # the last one after the final norm, as forward() gives it
        hidden_states[-1] = x
    return pack.unpack(x), tuple(pack.unpack(h) for h in hidden_states) if output_hidden_states else None


class PredictionHead(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = activation(config.classifier_activation)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class ModernBert(nn.Module):
    """The body, with the masked-LM head (`head` + a decoder tied to the word embeddings) when the checkpoint
    has it. Offers what `Bert` offers; pooler and NSP are absent by design."""

    word_embeddings_name = "bert.embeddings.tok_embeddings.weight"
    require = Bert.require  # one message for every family; it reads only has_* and config

    def __init__(self, config: ModernBertConfig, mlm: bool = False):
        super().__init__()
        self.config = config
        self.bert = ModernBertModel(config)
        self.head = PredictionHead(config) if mlm else None
        self.decoder = None
        if mlm:
            self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
            self.decoder.weight = self.bert.embeddings.tok_embeddings.weight  # tied
        self.cls = None  # no BERT-style pre-training heads
        self.eval()

    has_pooler = property(lambda self: False)
    has_nsp = property(lambda self: False)
    has_mlm = property(lambda self: self.head is not None)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False, compute_heads=True) -> BertOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        if wants(compute_heads, "mlm") and self.has_mlm:
            out.mlm_logits = self.decoder(self.head(out.last_hidden_state))  # (B, T, V)
        return out

    def mlm_head(self) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        """As Bert.mlm_head: (`head`, the tied decoder weight, its bias or zeros where decoder_bias is off)."""
        self.require("mlm", "the masked-LM head")
        w = self.decoder.weight
        bias = self.decoder.bias if self.decoder.bias is not None else torch.zeros(w.shape[0], device=w.device)
        return self.head, w, bias

    def forward_packed(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states=False) -> BertOutput:
        """Inference fast path with forward()'s outputs at every real token (within float rounding): no compute on
        padding (see forward_packed below). Padding positions of the returned tensors are zero; no heads."""
        last, hidden_states = forward_packed(self.bert, input_ids, attention_mask, output_hidden_states)
        return BertOutput(last_hidden_state=last, hidden_states=hidden_states)

    def named_parts(self) -> list[tuple[str, nn.Module, str]]:
        """The parts in reading order, for describe()."""
        c = self.config
        local = f"local, window ±{c.local_attention // 2}"
        kinds = ["global" if t == "full_attention" else local for t in c.layer_types]
        parts = [("embeddings", self.bert.embeddings, "token embeddings + LayerNorm; positions are rotary")]
        parts += [(f"layers.{i}", layer, kinds[i]) for i, layer in enumerate(self.bert.layers)]
        parts.append(("final_norm", self.bert.final_norm, ""))
        if self.has_mlm:
            parts.append(("head + decoder", nn.ModuleList([self.head, self.decoder]),
                          "masked LM; decoder tied to tok_embeddings, counted once"))
        return parts


def parts(state: dict) -> dict[str, bool]:
    # A sequence classifier (ModernBertForSequenceClassification) has a `head` too, before its `classifier`:
    # that one is a task head (left over for bertkit.heads.task, which refuses it), not the masked-LM head.
    return {"mlm": "head.dense.weight" in state and "classifier.weight" not in state}


def names(config: ModernBertConfig, mlm: bool) -> list[str]:
    bias = ("weight", "bias") if config.norm_bias else ("weight",)
    out = ["bert.embeddings.tok_embeddings.weight", *(f"bert.embeddings.norm.{w}" for w in bias)]
    for i in range(config.num_hidden_layers):
        layer = f"bert.layers.{i}"
        if i:
            out += [f"{layer}.attn_norm.{w}" for w in bias]
        out += [f"{layer}.attn.{p}.{w}" for p in ("Wqkv", "Wo")
                for w in (("weight", "bias") if config.attention_bias else ("weight",))]
        out += [f"{layer}.mlp_norm.{w}" for w in bias]
        out += [f"{layer}.mlp.{p}.{w}" for p in ("Wi", "Wo")
                for w in (("weight", "bias") if config.mlp_bias else ("weight",))]
    out += [f"bert.final_norm.{w}" for w in bias]
    if mlm:
        out += [f"head.dense.{w}" for w in (("weight", "bias") if config.classifier_bias else ("weight",))]
        out += [f"head.norm.{w}" for w in bias]
        out += ["decoder.bias"] if config.decoder_bias else []
    return out


FAMILY = Family(
    ModernBertConfig, ModernBert, parts, names, ((r"^bert\.", "model."),), "model",
    ("embeddings", "layers", "final_norm"), re.compile(r"^decoder\.weight$"), "decoder.weight",
)
