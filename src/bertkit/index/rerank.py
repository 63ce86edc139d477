"""Rerank an index's hits with a cross-encoder (bertkit.heads.rerank): recall with vectors, order by pairs."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from bertkit.errors import InputError
from bertkit.index.base import Hit

if TYPE_CHECKING:
    from bertkit.heads.rerank import CrossEncoder


def rerank_hits(ce: CrossEncoder, query: str, hits: list[Hit], k: int | None = None) -> list[Hit]:
    """Reorder an index's candidates by the cross-encoder (score = its score); the best k, ranks renumbered.
    Every hit needs its text (stored with --keep-text, or read back by Index.fill_texts)."""
    if not hits:
        return []
    missing = [h.id for h in hits if h.text is None]
    if missing:
        raise InputError(f"{len(missing)} candidate(s) have no text to rerank (first id {missing[0]}); embed "
                         "the corpus with --keep-text, or keep its input file unchanged")
    ranked = ce.rank(query, [h.text for h in hits], top_k=k)
    return [replace(hits[r["index"]], rank=n, score=r["score"]) for n, r in enumerate(ranked, start=1)]
