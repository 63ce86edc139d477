"""Helpers for comparing bertkit's model with transformers (imported as `model_parity` by tests/model/)."""

from __future__ import annotations

import torch

TEXTS = [
    "Hi.",
    "A considerably longer sentence, with punctuation; numbers like 3.14 and words such as unbelievably.",
    "Short one",
    " ".join(["long"] * 90),
]
PAIRS = ["Is this the second segment?", "Yes.", "A pair's second text that is somewhat longer than most.", "no"]
ATOL = 1e-4


def hf_model(folder, cls_name: str):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(folder, attn_implementation="eager").eval()


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str, mask: torch.Tensor | None = None,
                 atol: float = ATOL) -> None:
    """Max abs error below atol. With `mask` (B, T), only real-token positions count: the vectors computed at
    padding positions are never used (every pooling excludes them) and differ by up to ~2e-4 between
    attention implementations, while real tokens agree to ~5e-6."""
    assert ours.shape == theirs.shape, what
    diff = ours - theirs
    err = (diff[mask.bool()] if mask is not None else diff).abs().max().item()
    assert err < atol, f"{what}: max abs error {err:.2e}"
