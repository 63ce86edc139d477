"""What one request may cost: the checks that bound it (issue 16), shared by the service and the batcher.

- `layers`: each hidden state at most once (a repeated layer would silently re-weight the average and make the
  model thread stack it again), at most `Limits.max_layers`, never an empty list;
- `poolings`: duplicates merged (the answer is keyed by pooling, so "mean" twice is "mean" once), at most
  `Limits.max_poolings`;
- `pieces`: a request over `Limits.split_tokens` tokens is cut into pieces of consecutive texts, so the batcher
  can run other requests between them instead of behind the whole of it;
- `gather_or_cancel`: the parts of one request (its poolings, its pieces) stop together when one is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from bertkit.serve.errors import ServeError
from bertkit.serve.limits import Limits


def check_layers(layers: list[int] | None, hidden_states: int, limits: Limits) -> None:
    """Refuse an empty list (400), a layer the model lacks (400), one named twice (400), too many (413)."""
    if layers is None:
        return
    if not layers:
        raise ServeError("layers is empty; name at least one hidden state (0 = embeddings, -1 = last) or leave "
                         "layers out", 400, "invalid_layers", "layers")
    n = hidden_states
    for i in layers:
        if not -n <= i < n:
            raise ServeError(f"layer {i} does not exist; this model has hidden states 0..{n - 1} (or -1..-{n})",
                             400, "invalid_layers", "layers")
    seen: dict[int, int] = {}
    for i in layers:
        if i % n in seen:
            same = "twice" if seen[i % n] == i else f"twice (as {seen[i % n]} and {i})"
            raise ServeError(f"layers names hidden state {i % n} {same}; list each layer once", 400,
                             "duplicate_layers", "layers")
        seen[i % n] = i
    if len(layers) > limits.max_layers:
        raise ServeError(f"{len(layers)} layers in one request; max_layers is {limits.max_layers}: average fewer",
                         413, "max_layers", "layers")


def unique_poolings(poolings: Sequence[str], limits: Limits) -> list[str]:
    """The poolings in the order asked, each once; refused when empty (400) or more than max_poolings (413)."""
    if not poolings:
        raise ServeError('poolings is empty; name at least one, e.g. ["mean"]', 400, "bad_pooling", "poolings")
    unique = list(dict.fromkeys(poolings))
    if len(unique) > limits.max_poolings:
        raise ServeError(f"{len(unique)} poolings in one request; max_poolings is {limits.max_poolings}: ask for "
                         "fewer", 413, "max_poolings", "poolings")
    return unique


def pieces(counts: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """(start, end) ranges of consecutive texts holding at most `limit` tokens each (a longer text alone)."""
    spans, start, tokens = [], 0, 0
    for i, n in enumerate(counts):
        if i > start and tokens + n > limit:
            spans.append((start, i))
            start, tokens = i, 0
        tokens += n
    spans.append((start, len(counts)))
    return spans


async def gather_or_cancel(*steps: Awaitable[Any]) -> list[Any]:
    """asyncio.gather, but the first failure cancels the other steps: a request refused half-way (a 429 for
    one of its poolings) must not leave its other parts queued for the model."""
    tasks = [asyncio.ensure_future(s) for s in steps]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
