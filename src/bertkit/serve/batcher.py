"""The queue in front of the model: merges concurrent `encode` requests into model batches on one thread.

Requests that want sentence vectors are put in a queue; a batcher task on the event loop merges whatever is
waiting (up to a token budget, after a short wait) into one `Encoder.encode` call in the model thread and
hands each request its rows. When a merged batch fails, each of its requests is retried alone, so one bad
request cannot fail the others it happened to be merged with.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.serve.costs import pieces
from bertkit.serve.errors import ServeError
from bertkit.serve.limits import Limits
from bertkit.serve.metrics import Metrics

if TYPE_CHECKING:
    from bertkit.encoder import Encoder

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005


@dataclass
class Job:
    key: tuple  # requests with equal keys can share a forward pass: (pooling, layers, normalize, template, truncate)
    texts: list[str]
    tokens: int
    future: asyncio.Future = field(repr=False)
    part: bool = False  # a piece of a request over split_tokens: at most one piece runs per model round


class Batcher:
    """Merges concurrent `encode` requests into model batches bounded by a token budget and a short wait.

    All model work (batched or not) goes through `run`, i.e. one worker thread: one model copy, no two
    forward passes fighting over the cores, and the event loop never waits on the model.
    """

    def __init__(self, encoder: Encoder, limits: Limits, metrics: Metrics):
        self.encoder, self.limits, self.metrics = encoder, limits, metrics
        # A runner's thread count is per OS thread: give the model thread the count set in this one (--threads).
        runner = encoder.runner
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertkit-model",
                                           initializer=runner.set_threads, initargs=(runner.threads(),))
        self.pending: deque[Job] = deque()
        self.accepted_tokens = 0  # accepted and not yet answered
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        # The model thread drops the GIL inside every torch op and must win it back after each one; with the
        # default 5 ms switch interval a busy event loop makes it wait up to 5 ms per op (a convoy).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="bertkit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self.pending:
            if not job.future.done():
                job.future.set_exception(ServeError("the server is shutting down", 503, "shutting_down"))
        self.executor.shutdown(wait=True)

    async def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Any model call, on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def encode(self, key: tuple, texts: list[str], tokens: int, counts: list[int] | None = None) -> np.ndarray:
        """The texts' vectors. `counts` (tokens per text) lets a request over split_tokens run in pieces, with
        other requests' batches between them (no small request waits behind the whole of a huge one)."""
        limit = self.limits.max_queued_tokens
        if self.accepted_tokens and self.accepted_tokens + tokens > limit:
            raise ServeError(
                f"server busy: {self.accepted_tokens} tokens queued, this request adds {tokens} and "
                f"max_queued_tokens is {limit}; retry shortly", 429, "max_queued_tokens",
            )
        split = counts is not None and tokens > self.limits.split_tokens
        spans = pieces(counts, self.limits.split_tokens) if split else [(0, len(texts))]
        loop = asyncio.get_running_loop()
        jobs = [Job(key, texts[a:b], sum(counts[a:b]) if split else tokens, loop.create_future(), part=split)
                for a, b in spans]
        self.pending.extend(jobs)
        self._account(tokens)
        self._wakeup.set()
        try:
            parts = await asyncio.gather(*(j.future for j in jobs))
        finally:
            for job in jobs:  # one piece failed (or the request was cancelled): the others are not run
                job.future.cancel()
            self._account(-tokens)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _account(self, tokens: int) -> None:
        self.accepted_tokens += tokens
        self.metrics.queued_tokens.set(self.accepted_tokens)
        self.metrics.queue_depth.set(len(self.pending))

    async def _loop(self) -> None:
        budget = self.limits.batch_tokens
        while True:
            if not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if sum(j.tokens for j in self.pending) < budget:
                await asyncio.sleep(self.limits.max_wait_ms / 1000)  # let concurrent requests join
            jobs = self._take(budget)
            self.metrics.queue_depth.set(len(self.pending))
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:  # a piece of a huge request is never merged with small requests: it runs alone, last
                groups.setdefault((job.part, job.key), []).append(job)
            for (_, key), group in sorted(groups.items(), key=lambda kv: kv[0][0]):
                try:
                    await self._run_group(key, group)
                except Exception as e:  # the batcher must outlive any one batch, or all requests hang
                    log.exception("batch failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)

    def _take(self, budget: int) -> list[Job]:
        """The next round's jobs: in arrival order while they fit the token budget (the first always does),
        skipping, not stopping at, what does not fit; at most one piece of a split request per round."""
        jobs, kept, tokens, piece = [], deque(), 0, False
        while self.pending:
            job = self.pending.popleft()
            if job.future.done():  # cancelled: its client went away, or another piece of its request failed
                continue
            if (not jobs or tokens + job.tokens <= budget) and not (job.part and piece):
                jobs.append(job)
                tokens += job.tokens
                piece = piece or job.part
            else:
                kept.append(job)
        self.pending = kept
        return jobs

    async def _run_group(self, key: tuple, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # the client may have gone away
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        start = time.perf_counter()
        try:
            vectors = await self.run(self._encode, key, texts)
        except Exception as e:  # noqa: BLE001 - one bad request must not fail the others it was merged with
            if len(jobs) > 1:
                for job in jobs:
                    await self._run_group(key, [job])
                return
            # Alone, the error is this request's own: its handler answers it (4xx, or 500 logged with its id).
            if not jobs[0].future.done():
                jobs[0].future.set_exception(e)
            return
        self.metrics.model_seconds.inc(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(texts))
        tokens = sum(j.tokens for j in jobs)
        self.metrics.batch_tokens.observe(tokens)
        self.metrics.add_tokens(tokens)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)

    def _encode(self, key: tuple, texts: list[str]) -> np.ndarray:
        pooling, layers, normalize, template, truncate = key
        return self.encoder.encode(
            texts, pooling=pooling, layers=list(layers) if layers else None, normalize=normalize,
            batch_size=self.limits.encode_batch_size, template=template, truncate=truncate,
        )
