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


def test_an_idle_model_starts_a_lone_request_at_once_and_a_busy_one_gathers_company(encoder):
    """max_wait_ms is a wait for company while the model is busy; on an idle model it only added latency."""
    starts: list[tuple[float, int]] = []  # (start, texts) of each batch on the model thread

    def run(prepared, rows):
        starts.append((time.perf_counter(), len(prepared)))
        time.sleep(0.3)  # a long batch: the requests below arrive while it runs
        return encoder.encode(prepared)

    batcher = Batcher(encoder, Limits(max_wait_ms=1000), Metrics())  # a wait far longer than any batch here
    texts = ["a dog runs in the park", "a cat sleeps", "rain again today", "the river is high"]

    async def main():
        await batcher.start()
        try:
            submitted = time.perf_counter()
            first = asyncio.create_task(batcher.submit("mean", encoder.prepare(texts[:1]), run))
            await asyncio.sleep(0.1)  # the first batch is running now
            rest = [batcher.submit("mean", encoder.prepare([t]), run) for t in texts[1:]]
            return submitted, await asyncio.gather(first, *rest)
        finally:
            await batcher.stop()

    submitted, outs = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate(outs), encoder.encode(texts), atol=1e-5)  # other batch shapes
    assert starts[0][0] - submitted < 0.2, "a lone request on an idle model waited for company"
    assert [n for _, n in starts] == [1, 3], "requests that arrived while the model was busy were not merged"
