"""The packed inference forward: the encoder's hot path.

Padding is removed before the embeddings: every Linear, LayerNorm and activation runs on the N real tokens
only, as one (N, H) matrix. Only attention needs the sequences apart: the fused QKV rows are scattered into
the padded (B, T) layout for one masked SDPA call and gathered back. Inference only: no dropout, no attention
probabilities, no heads. The large intermediates go to per-thread scratch buffers (see `_scratch`); returned
tensors never alias them.

It runs the same blocks as the padded forward (network.py), layer by layer; where plain fp32/fp16 math
allows, a block's Linear is computed into a scratch buffer with the block's own weights, else the block is
simply called. This module imports nothing from the network (it is handed the body), so there is no cycle.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from itertools import accumulate, pairwise

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# Scratch memory
#
# Each layer of the packed forward makes a few large intermediates ((N, 3H) qkv, (N, 4H) feed-forward). Freshly
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
    # An inference-mode buffer cannot be written outside inference mode (a no_grad call after an
    # inference_mode one on the same thread), so each kind gets its own.
    key = (name, like.dtype, like.device, like.is_inference())
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
# Measured on CPU only, so GPUs keep the usual layout. Read at call time: bench/gemm_layout.py sets it here.
SMALL_ROWS = 48


def _gemm_out(name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, cols) scratch buffer for a GEMM output: column-major for a small batch on CPU (see SMALL_ROWS)."""
    if rows <= SMALL_ROWS and like.device.type == "cpu":
        return _scratch(name, (cols, rows), like).t()
    return _scratch(name, (rows, cols), like)


def _scratch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, name: str) -> torch.Tensor:
    """F.linear(x, weight, bias) written into a scratch buffer; only called where _plain(x) holds."""
    return torch.addmm(bias, x, weight.t(), out=_gemm_out(name, x.shape[0], weight.shape[0], x))


# ----------------------------------------------------------------------------------------------------------
# The blocks, packed


# Attention is the one step that needs the sequences apart, padded to a common width, and its cost grows with
# that width squared. A server's batch is whatever arrived together: even sorted by length, its rows span 5 to
# 60 tokens, and one padded SDPA call per layer spent 1.75x the attention time of the same texts batched by
# length across the whole set (0.66 vs 0.38 s of 6.5 s). So the rows (longest first, as by_length orders them)
# are cut into groups, one SDPA call each at its own width, wherever a cut saves more than a call costs.
# What one more SDPA call costs, in padded (row x width^2) units of attention work. On CPU next to nothing: a
# group of rows of one length needs no mask, and cutting at (almost) every change of length ran a server's
# merged batches 5 % faster than 2,048 and offline's sorted batches 1 % faster (docs/RESULTS.md, "The last
# 3-4 %"). On an accelerator, where a call is kernel launches, the earlier 2,048.
GROUP_COST = 16
ACCELERATOR_GROUP_COST = 2048


@dataclass
class Group:
    """Consecutive rows of a batch whose attention is one SDPA call, padded to their own longest row."""

    tokens: slice  # their real tokens in the packed (N, ...) order
    B: int
    T: int
    keep: torch.Tensor  # flat positions of those tokens in the group's (B*T) grid
    padded: bool  # False when every position of the grid is a real token
    mask: torch.Tensor | None  # the mask the family's stack makes for the group (see forward_packed)


@dataclass
class Packing:
    """Where the N real tokens of a (B, T) batch sit, and the key mask attention needs to keep rows apart."""

    B: int
    T: int
    keep: torch.Tensor  # (N,) flat positions of the real tokens in the (B*T) grid
    padded: bool  # False when every position is a real token (then keep is 0..B*T-1)
    mask: torch.Tensor | None  # (B, 1, 1, T) keys only: padding queries are dropped anyway; MPNet: additive
    # attention's calls (forward_packed's _groups; ModernBERT's packed path has its own attention and none)
    groups: list[Group] = field(default_factory=list)

    def unpack(self, t: torch.Tensor) -> torch.Tensor:
        """(N, H) -> (B, T, H), zeros at padding."""
        H = t.shape[1]
        flat = t.new_zeros(self.B * self.T, H).index_copy_(0, self.keep, t) if self.padded else t  # (B*T, H)
        return flat.view(self.B, self.T, H)


def row_groups(lengths: list[int], cost: int | None = None) -> list[tuple[int, int]]:
    """Row ranges [a, b) of a batch whose attention runs apart: a cut before row j when the rows from j on,
    padded to row j's length instead of the current group's, save more than `cost` (None: GROUP_COST, CPU's).
    Rows not sorted longest first (not made by by_length), or an empty row among them: one group."""
    cost = GROUP_COST if cost is None else cost
    if any(a < b for a, b in pairwise(lengths)) or (lengths and lengths[-1] < 1):
        return [(0, len(lengths))]
    starts, width = [0], lengths[0] if lengths else 0
    for j in range(1, len(lengths)):
        if (len(lengths) - j) * (width * width - lengths[j] * lengths[j]) > cost:
            starts.append(j)
            width = lengths[j]
    return list(zip(starts, starts[1:] + [len(lengths)]))


def _groups(stack: nn.Module, attention_mask: torch.Tensor, keep: torch.Tensor, padded: bool,
            mask: torch.Tensor | None) -> list[Group]:
    """Attention's calls for a right-padded (B, T) batch (see row_groups); one when cutting does not pay."""
    B, T = attention_mask.shape
    whole = [Group(slice(None), B, T, keep, padded, mask)]
    if not padded:
        return whole
    lengths = attention_mask.sum(1)  # (B,)
    if not bool((attention_mask.bool() == (torch.arange(T, device=lengths.device) < lengths[:, None])).all()):
        return whole  # not right-padded: the rows' tokens are not their first positions
    lengths = lengths.tolist()
    spans = row_groups(lengths, None if attention_mask.device.type == "cpu" else ACCELERATOR_GROUP_COST)
    if len(spans) == 1:
        return whole
    ends = list(accumulate(lengths))
    groups = []
    for a, b in spans:
        rows = attention_mask[a:b, : lengths[a]]  # (b-a, width): row a is the group's longest
        sub_keep = rows.reshape(-1).nonzero().squeeze(1)
        sub_padded = sub_keep.numel() != rows.numel()
        sub_mask = stack.attention_mask(rows.bool()[:, None, None, :] if sub_padded else None, lengths[a])
        groups.append(Group(slice(ends[a - 1] if a else 0, ends[b - 1]), b - a, lengths[a], sub_keep, sub_padded,
                            sub_mask))
    return groups


def _attention(att: nn.Module, x: torch.Tensor, pack: Packing, plain: bool) -> torch.Tensor:
    """A SelfAttention block on (N, H) real tokens -> (N, H) context."""
    if type(att.query) is nn.Linear and plain:
        # (N, 3H); SDPA's flash kernel wants unit-stride head vectors, which a small batch's
        # column-major GEMM output (see SMALL_ROWS) lacks
        qkv = _scratch_linear(x, *att.fused_qkv(), "qkv").contiguous()
    else:  # gradients or a quantized model: the three HF-named layers
        qkv = torch.cat([att.query(x), att.key(x), att.value(x)], dim=1)
    if len(pack.groups) == 1:
        return _attend(att, qkv, pack.groups[0], plain)
    return torch.cat([_attend(att, qkv[g.tokens], g, plain) for g in pack.groups])  # (N, H)


def _attend(att: nn.Module, qkv: torch.Tensor, g: Group, plain: bool) -> torch.Tensor:
    """One group's (n, 3H) fused q, k, v rows -> its (n, H) attention context."""
    B, T, H = g.B, g.T, qkv.shape[1] // 3
    if g.padded:
        grid = _scratch("qkv_padded", (B * T, 3 * H), qkv) if plain else qkv.new_empty(B * T, 3 * H)
        qkv = grid.zero_().index_copy_(0, g.keep, qkv)  # (B*T, 3H), zeros at padding
    q, k, v = qkv.view(B, T, 3, att.num_heads, att.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=g.mask).transpose(1, 2).reshape(B * T, H)
    return context[g.keep] if g.padded else context  # (n, H)


def _intermediate(block: nn.Module, x: torch.Tensor, plain: bool) -> torch.Tensor:
    """An Intermediate block: (N, H) -> (N, I); exact GELU in place in a scratch buffer when it can."""
    up = block.dense
    if type(up) is nn.Linear and block.act is F.gelu and plain:
        return torch.ops.aten.gelu_(_scratch_linear(x, up.weight, up.bias, "inner"))
    return block(x)


def _add_norm(block: nn.Module, x: torch.Tensor, residual: torch.Tensor, plain: bool) -> torch.Tensor:
    """An AddNorm block, block(x, residual), with residual + dense(x) accumulated by the GEMM itself into a
    scratch buffer."""
    dense = block.dense
    if type(dense) is not nn.Linear or not plain:
        return block(x, residual)
    out = torch.add(residual, dense.bias, out=_gemm_out("residual", x.shape[0], dense.out_features, x))
    return block.LayerNorm(torch.addmm(out, x, dense.weight.t(), out=out))  # beta=1: no extra pass


def _layer(layer: nn.Module, x: torch.Tensor, pack: Packing, plain: bool) -> torch.Tensor:
    """A Layer on (N, H) real tokens: the same steps as Layer.forward, block by block."""
    x = _add_norm(layer.attention.output, _attention(layer.attention.self, x, pack, plain), x, plain)
    return _add_norm(layer.output, _intermediate(layer.intermediate, x, plain), x, plain)  # (N, H)


def forward_packed(
    body: nn.Module,  # a network.BertModel: its embeddings and encoder.layer are used, not its pooler
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T), 1 = token, 0 = padding
    token_type_ids: torch.Tensor | None = None,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """(last hidden state (B, T, H), embeddings + every layer's output or None), zeros at padding."""
    B, T = input_ids.shape
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    keep = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    padded = keep.numel() != B * T
    # The family's stack makes the mask its layers attend with (MPNet adds its relative position bias).
    mask = body.encoder.attention_mask(attention_mask.bool()[:, None, None, :] if padded else None, T)
    pack = Packing(B, T, keep, padded, mask, _groups(body.encoder, attention_mask, keep, padded, mask))

    positions = torch.arange(T, device=input_ids.device).repeat(B)  # (B*T,)
    x = body.embeddings(input_ids.reshape(-1)[keep], token_type_ids.reshape(-1)[keep], positions[keep])  # (N, H)
    plain = _plain(x)  # scratch buffers and fused kernels need plain fp32/fp16 math (see _plain)
    hidden_states = [x] if output_hidden_states else None
    for layer in body.encoder.layer:
        x = _layer(layer, x, pack, plain)
        if output_hidden_states:
            hidden_states.append(x)
    last = pack.unpack(x)
    return last, tuple(pack.unpack(h) for h in hidden_states) if output_hidden_states else None
