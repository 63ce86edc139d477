"""The model's structure, for `bertkit inspect`: its parts in reading order with their parameters."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bertkit.model.network import Bert


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
