"""Sentence-embedding losses: small modules over two (B, H) embedding batches `u`, `v` (the two sides of B pairs),
a per-pair `target` and, for the ranking losses, optional hard negatives `negatives` (N, H).

| name    | data                                   | what it optimises                                                 |
|---------|----------------------------------------|-------------------------------------------------------------------|
| cosine  | scored pairs (STS-B, SICK relatedness) | MSE between cos(u, v) and the score scaled to [0, 1]              |
| cosent  | scored pairs                           | rank: a pair scored higher than another must have a higher cosine |
| angle   | scored pairs                           | CoSENT on the cosine + CoSENT on AnglE's angle similarity         |
| mnrl    | positive pairs (+ hard negatives)      | softmax over cos(u_i, [v; negatives]) * scale, target v_i         |
| softmax | pairs with a class label (SICK, NLI)   | cross-entropy of a linear layer over (u, v, |u - v|)              |

`MatryoshkaLoss(loss, dims)` applies any of them (but softmax, whose classifier has a fixed width) to the first
d coordinates for each d in dims and sums the results, so truncated vectors stay good vectors.

References: CoSENT (Su, 2022), AnglE (Li & Li, 2023, arXiv:2309.12871), MNRL (Henderson et al., 2017),
Matryoshka representation learning (Kusupati et al., 2022). The formulas match sentence-transformers' CoSENTLoss,
AnglELoss, MultipleNegativesRankingLoss and MatryoshkaLoss (tests compare them on the same embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SCORED_LOSSES = ("cosine", "cosent", "angle")  # need a score on every pair
LOSSES = ("cosine", "cosent", "angle", "mnrl", "softmax")


class CosineSimilarityLoss(nn.Module):
    """MSE between cos(u, v) and a target in [0, 1] (the gold score rescaled)."""

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        return F.mse_loss(F.cosine_similarity(u, v), target.to(u.dtype))


def cosent(sims: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """log(1 + sum over pairs (i, j) with target_i > target_j of exp(scale * (sims_j - sims_i)))."""
    s = sims.float() * scale
    diff = s[None, :] - s[:, None]  # diff[i, j] = s_j - s_i
    higher = target[:, None] > target[None, :]  # pair i should outrank pair j
    diff = diff.masked_fill(~higher, float("-inf"))
    return torch.logsumexp(torch.cat([s.new_zeros(1), diff.flatten()]), dim=0)


def angle_similarity(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """AnglE's similarity |cos + sin| of the L2-normalised vectors, read as complex numbers: the first half of
    the coordinates are real parts, the second half imaginary parts (an odd width gets a zero pad)."""
    if u.shape[-1] % 2:
        u, v = F.pad(u, (0, 1)), F.pad(v, (0, 1))
    u, v = F.normalize(u.float(), dim=-1), F.normalize(v.float(), dim=-1)
    re_u, im_u = u.chunk(2, dim=-1)
    re_v, im_v = v.chunk(2, dim=-1)
    cos = (u * v).sum(-1)
    sin = (im_u * re_v - re_u * im_v).sum(-1)
    return (cos + sin).abs()


class CoSENTLoss(nn.Module):
    """Rank-based loss on scored pairs: only the order of the gold scores matters, not their scale, so STS-B's
    0-5 and SICK's 1-5 can be mixed. scale 20 as in the CoSENT write-up and sentence-transformers."""

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        return cosent(F.cosine_similarity(u.float(), v.float()), target, self.scale)


class AnglELoss(nn.Module):
    """AnglE: CoSENT on the cosine plus CoSENT on the angle similarity, which keeps a gradient where the cosine
    saturates (near +-1). Weights 1 and 1 (the paper's in-batch-negative term is the separate mnrl loss)."""

    def __init__(self, scale: float = 20.0, cosine_weight: float = 1.0, angle_weight: float = 1.0):
        super().__init__()
        self.scale, self.cosine_weight, self.angle_weight = scale, cosine_weight, angle_weight

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.angle_weight * cosent(angle_similarity(u, v), target, self.scale)
        if self.cosine_weight:
            loss = loss + self.cosine_weight * cosent(F.cosine_similarity(u.float(), v.float()), target, self.scale)
        return loss


class MultipleNegativesRankingLoss(nn.Module):
    """Each u_i must pick its own v_i among every v_j of the batch and every hard negative (the other pairs'
    positives and all negatives are the wrong answers). scale = 1 / temperature: 20 as in sentence-transformers
    (SimCSE's 0.05 temperature is the same). `negatives` may have fewer rows than the batch (not every anchor
    has a hard negative): each is a wrong answer for every anchor."""

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor | None = None,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        candidates = v if negatives is None or len(negatives) == 0 else torch.cat([v, negatives])
        sims = F.normalize(u.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T * self.scale  # (B, B + N)
        return F.cross_entropy(sims, torch.arange(len(u), device=u.device))


class SoftmaxLoss(nn.Module):
    """A linear classifier over (u, v, |u - v|), trained with cross-entropy; discarded after training."""

    def __init__(self, hidden: int, num_labels: int):
        super().__init__()
        self.classifier = nn.Linear(3 * hidden, num_labels)

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
        return F.cross_entropy(logits, target.long())


class MatryoshkaLoss(nn.Module):
    """sum_d weight_d * loss(u[:, :d], v[:, :d], target, negatives[:, :d]) over the dims (the full width among
    them, usually): the leading coordinates learn to carry the most, so vectors cut to d keep their quality."""

    def __init__(self, loss: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None):
        super().__init__()
        if isinstance(loss, SoftmaxLoss):
            raise TypeError("the softmax loss has a fixed-width classifier; Matryoshka needs a loss over vectors")
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"Matryoshka dims must be positive, got {list(dims)}")
        self.loss = loss
        self.dims = sorted(set(dims), reverse=True)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.dims)
        if len(self.weights) != len(self.dims):
            raise ValueError(f"{len(self.weights)} weights for {len(self.dims)} dims")

    def forward(self, u: torch.Tensor, v: torch.Tensor, target: torch.Tensor | None = None,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        total = u.new_zeros((), dtype=torch.float32)
        for d, w in zip(self.dims, self.weights, strict=True):
            neg = negatives[:, :d] if negatives is not None else None
            total = total + w * self.loss(u[:, :d], v[:, :d], target, neg)
        return total


def make_loss(name: str, hidden: int, num_labels: int = 0, scale: float = 20.0,
              matryoshka: Sequence[int] | None = None) -> nn.Module:
    """The loss module for a name of LOSSES; wrapped in MatryoshkaLoss when dims are given."""
    if name == "cosine":
        loss: nn.Module = CosineSimilarityLoss()
    elif name == "cosent":
        loss = CoSENTLoss(scale)
    elif name == "angle":
        loss = AnglELoss(scale)
    elif name == "mnrl":
        loss = MultipleNegativesRankingLoss(scale)
    elif name == "softmax":
        loss = SoftmaxLoss(hidden, num_labels)
    else:
        raise ValueError(f"unknown loss {name!r}; one of {', '.join(LOSSES)}")
    return MatryoshkaLoss(loss, matryoshka) if matryoshka else loss
