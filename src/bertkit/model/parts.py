"""The model's structure, for `bertkit inspect`: its parts in reading order with their parameters and a note
(e.g. that RoBERTa's pooler was never trained); each family's model lists its own parts (`named_parts`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Part:
    name: str  # e.g. "embeddings", "encoder.layer.0", "pooler", "cls.predictions"
    tensors: list[tuple[str, tuple[int, ...], int]]  # (parameter name within the part, shape, count)
    count: int
    note: str = ""


def describe(model: nn.Module) -> list[Part]:
    """The model's parts in reading order with their parameters (any family: its `named_parts`); a tied
    matrix is counted once."""
    seen: set[int] = set()
    parts = []
    for name, module, note in model.named_parts():
        tensors = []
        for pname, p in module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            tensors.append((pname, tuple(p.shape), p.numel()))
        parts.append(Part(name, tensors, sum(t[2] for t in tensors), note))
    return parts
