"""The batcher keeps the model busy: with two batches in flight (a model process's setting) the next batch waits
on the model thread while one runs, so a busy event loop (HTTP parsing, answers being encoded) does not leave the
model idle between batches."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np

from bertkit.serve.batcher import Batcher
from bertkit.serve.limits import Limits
from bertkit.serve.metrics import Metrics


def test_the_model_thread_does_not_wait_for_a_busy_event_loop(encoder):
    spans: list[tuple[float, float]] = []  # (start, end) of each batch on the model thread

    def run(prepared, rows):
        start = time.perf_counter()
        out = encoder.encode(prepared)
        spans.append((start, time.perf_counter()))
        return out

    # six requests of 64 texts, each a batch of its own that runs longer than the loop is held at a time
    texts = [f"sentence number {i} about a dog that runs in the park near the river" for i in range(6 * 64)]
    limits = Limits(batch_tokens=1, max_wait_ms=0, split_tokens=10**6)  # one request per batch, never split
    batcher = Batcher(encoder, limits, Metrics(), in_flight=2)  # as for a model process (in process: 1)

    async def hog():  # a handler holding the event loop, 20 ms at each turn of the loop, as HTTP work does
        while len(spans) < 6:
            time.sleep(0.02)  # noqa: ASYNC251 - blocking the loop on purpose
            await asyncio.sleep(0)

    async def main():
        await batcher.start()
        try:
            jobs = [batcher.submit(None, encoder.prepare(texts[i : i + 64]), run) for i in range(0, len(texts), 64)]
            out = await asyncio.gather(hog(), *jobs)
            await asyncio.sleep(0)
            return out[1:]
        finally:
            await batcher.stop()

    outs = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate(outs), encoder.encode(texts), atol=1e-6)
    assert len(spans) == 6
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    # Before: each next batch waited until the loop was free to see the last one end (a few turns: 30 ms here).
    assert max(gaps) < 0.01, [round(g * 1000, 1) for g in gaps]
