"""The network, in reading order (as in the paper): embeddings -> self-attention -> feed-forward -> layer ->
the stack (the one layer loop of the padded forward) -> pooler -> the body `BertModel` -> `Bert`, the body
with whichever pre-training heads (lm_heads.py) its checkpoint has.

Attribute names follow Hugging Face's BERT (`bert.encoder.layer.N.attention.self.query`, `LayerNorm`,
`cls.predictions`) so that loading a checkpoint is one explicit key map (checkpoint.py) and a saved folder
loads in transformers. The BERT-shaped families (RoBERTa, XLM-R, DistilBERT, ELECTRA, MPNet) run these same
blocks under these same names, set up by their config (config.py) and, for MPNet, a subclass of the stack;
their own key maps translate the names of their checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import MissingHeadError, OptionError
from bertkit.model.config import BertConfig, activation
from bertkit.model.lm_heads import PreTrainingHeads
from bertkit.model.packed import forward_packed


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H); None when the checkpoint has no pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer: L+1 x (B, T, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # one per layer: (B, heads, T, T)
    mlm_logits: torch.Tensor | None = None  # (B, T, V) when the masked-LM head exists
    nsp_logits: torch.Tensor | None = None  # (B, 2) when the NSP head exists; index 0 = "B follows A"
    discriminator_logits: torch.Tensor | None = None  # (B, T) ELECTRA: per token, "was this token replaced"


# ----------------------------------------------------------------------------------------------------------
# Blocks


class Embeddings(nn.Module):
    """word + position + token type (segment), then LayerNorm and dropout.

    The families differ only in settings their config gives: no token types (DistilBERT, MPNet:
    type_vocab_size 0), positions counted from after the padding index (RoBERTa, MPNet: position_offset), and
    narrower tables projected up to the hidden size (ELECTRA: embedding_dim < hidden_size; HF keeps that
    projection outside the embeddings, as `electra.embeddings_project`, but every forward applies it right
    after them, so it lives here and the packed path and ONNX export get it for free).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.embedding_dim
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.project = nn.Linear(E, config.hidden_size) if E != config.hidden_size else None
        self.position_offset, self.pad_token_id = config.position_offset, config.pad_token_id

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T), or (N,) real tokens for the packed forward
        token_type_ids: torch.Tensor | None,  # same shape as input_ids; ignored by a family without them
        positions: torch.Tensor | None = None,  # same shape, 0 = each row's first token; None = 0..T-1 per row
    ) -> torch.Tensor:
        if positions is None and self.position_offset:
            # RoBERTa's rule, from the ids: real tokens count 0, 1, ... and padding sits at -1, which lands
            # on the padding index once offset (transformers' create_position_ids_from_input_ids).
            real = (input_ids != self.pad_token_id).long()  # (B, T)
            positions = real.cumsum(-1) * real - 1
        elif positions is None:
            positions = torch.arange(input_ids.shape[-1], device=input_ids.device)  # (T,), broadcast over the batch
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions + self.position_offset)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.dropout(self.LayerNorm(x))  # (B, T, E) or (N, E)
        return self.project(x) if self.project is not None else x  # (B, T, H) or (N, H)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention. HF keeps q, k, v as three Linear layers; so do we."""

    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise OptionError("hidden_size must be a multiple of num_attention_heads")
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
        params = (self.query.weight, self.key.weight, self.value.weight, self.query.bias, self.key.bias,
                  self.value.bias)
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
            q, k, v = (lin(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
                       for lin in (self.query, self.key, self.value))
        else:
            qkv = F.linear(x, *self.fused_qkv()).view(B, T, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.dropout_p if self.training else 0.0
        if output_attentions:
            # SDPA does not return the probabilities, so compute them explicitly when they are asked for.
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, T, T)
            if mask is not None and mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            elif mask is not None:  # an additive mask: MPNet's relative position bias, padding at -inf
                scores = scores + mask
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
    """The stack of layers; HF names it `encoder` with a `layer` list. Its forward is the padded path's one
    layer loop (the ONNX export runs it too); the packed path has its own in packed.py."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def attention_mask(self, mask: torch.Tensor | None, T: int) -> torch.Tensor | None:
        """The mask every layer's attention gets, from the padding mask: the same for BERT; MPNet's stack
        adds its relative position bias here (the packed path asks this method too)."""
        return mask

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H) embeddings
        mask: torch.Tensor | None,  # (B, 1, 1, T), True = may attend; None = no padding
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """(last hidden state, embeddings + every layer's output or None, every layer's attention or None)."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        mask = self.attention_mask(mask, x.shape[1])
        for layer in self.layer:
            x, probs = layer(x, mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        return (
            x,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )


class Pooler(nn.Module):
    """[CLS] -> dense -> tanh. Trained by next-sentence prediction, so it encodes "do A and B go together"."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class BertModel(nn.Module):
    """The body every model shares (HF's `BertModel`, attribute `bert`): embeddings, the stack, the pooler.

    Its forward is the padded forward; `Bert` adds the pre-training heads to it, the task heads (heads.py) a
    classifier. Holding this module as `bert` is what keeps their saved weight names `bert.*`; every family
    holds its body as `bert`, so the runtime and the task heads see one interface.
    """

    encoder_class: type[EncoderStack] = EncoderStack  # MPNet's body swaps in its stack with a position bias

    def __init__(self, config: BertConfig, pooler: bool = True):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = self.encoder_class(config)
        self.pooler = Pooler(config) if pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T), 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,  # (B, T), 0 = segment A, 1 = segment B
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BertOutput:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Boolean mask broadcast over heads and query positions: (B, 1, 1, T), True = may attend.
        # With no padding at all, pass None so SDPA can take its fastest kernel.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        x, hidden_states, attentions = self.encoder(x, mask, output_hidden_states, output_attentions)
        pooled = self.pooler(x) if self.pooler is not None else None  # (B, H)
        return BertOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states, attentions=attentions)


# ----------------------------------------------------------------------------------------------------------
# The full model


def wants(compute_heads: bool | tuple[str, ...], head: str) -> bool:
    """forward()'s compute_heads: True runs every head, False none, a tuple the heads it names."""
    return compute_heads is True or (compute_heads is not False and head in compute_heads)

class Bert(nn.Module):
    """BERT with whichever parts the checkpoint has: pooler, masked-LM head, NSP head.

    A head the checkpoint lacks is absent (None), never randomly initialised; asking for it is an error.
    RoBERTa, XLM-R and DistilBERT are this class with their config; ELECTRA and MPNet subclass it.
    """

    body_class: type[BertModel] = BertModel
    word_embeddings_name = "bert.embeddings.word_embeddings.weight"  # what the masked-LM decoder is tied to

    def __init__(self, config: BertConfig, pooler: bool = True, mlm: bool = False, nsp: bool = False):
        super().__init__()
        if nsp and not pooler:
            raise ValueError("the NSP head reads pooler_output, so it needs the pooler")  # a caller's bug
        self.config = config
        self.bert = self.body_class(config, pooler=pooler)
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

    def mlm_head(self) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        """The masked-LM head as (transform, decoder weight (V, E), bias (V,)): logits = transform(h) @ W.T + b,
        the same three parts in every family (SPLADE runs them on real tokens only, bertkit.vectors.sparse)."""
        self.require("mlm", "the masked-LM head")
        p = self.cls.predictions
        return p.transform, p.decoder.weight, p.bias

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
        compute_heads: bool | tuple[str, ...] = True,  # False: vectors only; ("nsp",): not the (B, T, V) MLM logits
    ) -> BertOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        if wants(compute_heads, "mlm") and self.has_mlm:
            out.mlm_logits = self.cls.predictions(out.last_hidden_state)  # (B, T, V)
        if wants(compute_heads, "nsp") and self.has_nsp:
            out.nsp_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        return out

    def forward_packed(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, T), 1 = token, 0 = padding
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        """Inference fast path with the outputs of forward() at every real token (within float rounding):
        no compute on padding (see packed.py). Padding positions of the returned tensors are zero. No dropout,
        no attention probabilities, no MLM/NSP heads."""
        last, hidden_states = forward_packed(self.bert, input_ids, attention_mask, token_type_ids, output_hidden_states)
        return BertOutput(
            last_hidden_state=last,
            pooler_output=self.bert.pooler(last) if self.has_pooler else None,
            hidden_states=hidden_states,
        )

    def named_parts(self) -> list[tuple[str, nn.Module, str]]:
        """The parts in reading order with a note each, for describe()."""
        parts: list[tuple[str, nn.Module, str]] = [("embeddings", self.bert.embeddings, "")]
        parts += [(f"encoder.layer.{i}", layer, "") for i, layer in enumerate(self.bert.encoder.layer)]
        if self.has_pooler:
            parts.append(("pooler", self.bert.pooler, self.config.pooler_note))
        if self.has_mlm:
            parts.append(("cls.predictions", self.cls.predictions, "decoder tied to word_embeddings, counted once"))
        if self.has_nsp:
            parts.append(("cls.seq_relationship", self.cls.seq_relationship, "NSP: pooler_output -> 2"))
        return parts

    def require(self, head: str, purpose: str) -> None:
        """Raise a clear error when `head` ('pooler', 'mlm', 'nsp') is missing (message: config.missing_head)."""
        if not {"pooler": self.has_pooler, "mlm": self.has_mlm, "nsp": self.has_nsp}[head]:
            raise MissingHeadError(self.config.missing_head(head, purpose))
