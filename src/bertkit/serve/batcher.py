"""The queue in front of the model: every request's model work, as prepared encodings, on one thread.

Every route that runs the model hands its work here (through `Service.admit`, serve/admission.py) as a
`Prepared` (texts tokenized once) and a function that runs the model on it. The batcher task on the event loop
merges waiting jobs with the same key (sentence vectors pooled the same way: their encodings are concatenated
and run as one `encode`) up to a token budget, after a short wait, and hands each job its rows. A request over
`split_tokens` is queued as pieces of consecutive texts, its own jobs, with other requests' batches between
them. When a merged batch fails, each of its jobs is retried alone, so one bad request cannot fail the others
it happened to be merged with.
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

from bertkit.batching import Prepared
from bertkit.runtime.process import ProcessRunner
from bertkit.serve.costs import pieces
from bertkit.serve.errors import ServeError
from bertkit.serve.limits import Limits
from bertkit.serve.metrics import Metrics

if TYPE_CHECKING:
    from bertkit.encoder import Encoder

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005

# The model work of a job: (its prepared encodings, the request's rows they are) -> one result per row
# (an array, a list, a sparse matrix: anything sliced by rows), or any value for work that is not split.
Run = Callable[[Prepared, slice], Any]


@dataclass
class Job:
    key: Any  # jobs with equal keys share a forward pass; a fresh object() for work that is never merged
    prepared: Prepared  # the encodings it runs (a piece of its request's when split)
    rows: slice  # which rows of its request they are
    run: Run = field(repr=False)
    future: asyncio.Future = field(repr=False)
    part: bool = False  # a piece of a request over split_tokens: at most one piece runs per model round

    @property
    def tokens(self) -> int:
        return sum(self.prepared.tokens)


def piece(prepared: Prepared, start: int, end: int) -> Prepared:
    """Rows start:end of a Prepared (their truncated positions renumbered)."""
    if (start, end) == (0, len(prepared)):
        return prepared
    cut = [i - start for i in prepared.truncated if start <= i < end]
    return Prepared(prepared.texts[start:end], prepared.encodings[start:end], cut, prepared.tokens[start:end],
                    prepared.template, prepared.truncate)


def merged(parts: list[Prepared]) -> Prepared:
    """Prepared batches one after another, as one (same template and truncation: the jobs' key says so)."""
    if len(parts) == 1:
        return parts[0]
    texts, encodings, cut, tokens = [], [], [], []
    for p in parts:
        cut += [len(texts) + i for i in p.truncated]
        texts += p.texts
        encodings += p.encodings
        tokens += p.tokens
    return Prepared(texts, encodings, cut, tokens, parts[0].template, parts[0].truncate)


def joined(results: list[Any]) -> Any:
    """The results of a request's pieces, in order, as one (rows stacked)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(results)
    if isinstance(first, list):
        return [row for r in results for row in r]
    if hasattr(first, "tocsr"):  # a scipy.sparse matrix (SPLADE vectors)
        from scipy.sparse import vstack

        return vstack(results, format="csr")
    raise TypeError(f"cannot join pieces of type {type(first).__name__}")


def _timed(run: Run, batch: Prepared, rows: slice) -> tuple[Any, float]:
    """run(batch, rows) and the seconds it took on the model thread (not counting its wait in the queue)."""
    start = time.perf_counter()
    return run(batch, rows), time.perf_counter() - start


def forward_rows(encoder: Encoder, limits: Limits) -> int:
    """Rows per forward pass inside a merged batch: the operator's `encode_batch_size`, else 256 for a model
    process and 32 in process. A merged batch is ~90-130 texts in arrival order; in a model process one forward
    over all of them (attention in length groups, model/packed.py) costs offline's CPU per text where three of
    32 cost 5-10 % more (serve_load --threads 1: 0.96-1.00 of offline vs 0.87-0.92). In process, encode runs a
    batch per CPU worker, so one big batch would leave all workers but one idle (2 threads, 64 clients: 78 vs
    101-103 requests/s) (docs/RESULTS.md, "Length-grouped attention and one forward per merged batch")."""
    if limits.encode_batch_size is not None:
        return limits.encode_batch_size
    return 256 if isinstance(encoder.runner, ProcessRunner) else 32


class Batcher:
    """Merges concurrent model work into model batches bounded by a token budget and a short wait.

    All model work goes through one worker thread (two when the model runs in a child process, which still runs
    one batch at a time): one model copy, no two forward passes fighting over the cores, and the event loop
    never waits on the model.
    """

    def __init__(self, encoder: Encoder, limits: Limits, metrics: Metrics, in_flight: int | None = None):
        self.encoder, self.limits, self.metrics = encoder, limits, metrics
        # Merged batches handed to the model threads at once. With the model in a child process, two, on two
        # threads: the next batch is padded and sent to the child while it runs one, and an answer is read and
        # pooled while it runs the next, so the child never idles while the event loop, busy with HTTP, gets
        # round to answering and taking more work (runtime/process.py pipelines the pipe). In process, one:
        # the model thread is never idle there (it is slowed by the GIL instead), and two made the merged
        # batches smaller and 2 threads ~3 % slower (docs/RESULTS.md).
        piped = isinstance(encoder.runner, ProcessRunner)
        self.in_flight = in_flight or (2 if piped else 1)
        workers = self.in_flight if piped else 1
        # A runner's thread count is per OS thread: give the model thread the count set in this one (--threads).
        runner = encoder.runner
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bertkit-model",
                                           initializer=runner.set_threads, initargs=(runner.threads(),))
        self.pending: deque[Job] = deque()
        self.accepted_tokens = 0  # accepted and not yet answered
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()

    async def start(self) -> None:
        # The model thread drops the GIL inside every torch op and must win it back after each one; with the
        # default 5 ms switch interval a busy event loop makes it wait up to 5 ms per op (a convoy).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.in_flight)
        self._task = asyncio.create_task(self._loop(), name="bertkit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for task in list(self._running):  # batches on the model thread: their requests get an answer
            await asyncio.wait({task})
        for job in self.pending:
            if not job.future.done():
                job.future.set_exception(ServeError("the server is shutting down", 503, "shutting_down"))
        self.executor.shutdown(wait=True)

    async def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """A call on the model thread, outside the queue (the batcher's own merged batches)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def submit(self, key: Any, prepared: Prepared, run: Run, split: bool = True) -> Any:
        """`run`'s result on `prepared`, after the work queued before it. A request over split_tokens (when
        `split`: its result has a row per text) runs in pieces, other requests' batches between them; with a
        key (None: never merged) it may share a forward pass with other jobs of that key. 429 when the tokens
        accepted and not yet answered would pass max_queued_tokens."""
        tokens, limit = sum(prepared.tokens), self.limits.max_queued_tokens
        if self.accepted_tokens and self.accepted_tokens + tokens > limit:
            raise ServeError(
                f"server busy: {self.accepted_tokens} tokens queued, this request adds {tokens} and "
                f"max_queued_tokens is {limit}; retry shortly", 429, "max_queued_tokens",
            )
        split = split and tokens > self.limits.split_tokens
        spans = pieces(prepared.tokens, self.limits.split_tokens) if split else [(0, len(prepared))]
        loop = asyncio.get_running_loop()
        jobs = [Job(key if key is not None else object(), piece(prepared, a, b), slice(a, b), run,
                    loop.create_future(), part=split) for a, b in spans]
        self.pending.extend(jobs)
        self._account(tokens)
        self._wakeup.set()
        try:
            parts = await asyncio.gather(*(j.future for j in jobs))
        finally:
            for job in jobs:  # one piece failed (or the request was cancelled): the others are not run
                job.future.cancel()
            self._account(-tokens)
        return joined(parts)

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
            # Wait for company only while the model is busy: there a batch cannot start before a slot frees
            # anyway, and requests arriving meanwhile join it. An idle model runs a lone request at once, as
            # TEI's queue does; waiting then only added max_wait_ms to every request at low load.
            if self._running and sum(j.tokens for j in self.pending) < budget:
                await asyncio.sleep(self.limits.max_wait_ms / 1000)
            await self._slots.acquire()  # at most in_flight batches handed to the model thread
            jobs = self._take(budget)
            self.metrics.queue_depth.set(len(self.pending))
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:  # a piece of a huge request is never merged with small requests: it runs alone, last
                groups.setdefault((job.part, job.key), []).append(job)
            task = asyncio.create_task(self._run_round([g for _, g in sorted(groups.items(), key=lambda kv: kv[0][0])]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_round(self, groups: list[list[Job]]) -> None:
        """One round's groups, one after another, then its slot back to the loop."""
        try:
            for group in groups:
                try:
                    await self._run_group(group)
                except Exception as e:  # the batcher must outlive any one batch, or all requests hang
                    log.exception("batch failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)
        finally:
            self._slots.release()

    def _take(self, budget: int) -> list[Job]:
        """The next round's jobs: in arrival order while they fit the token budget (the first always does),
        skipping, not stopping at, what does not fit; at most one piece of a split request per round."""
        jobs, kept, tokens, piece_taken = [], deque(), 0, False
        while self.pending:
            job = self.pending.popleft()
            if job.future.done():  # cancelled: its client went away, or another piece of its request failed
                continue
            if (not jobs or tokens + job.tokens <= budget) and not (job.part and piece_taken):
                jobs.append(job)
                tokens += job.tokens
                piece_taken = piece_taken or job.part
            else:
                kept.append(job)
        self.pending = kept
        return jobs

    async def _run_group(self, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # the client may have gone away
        if not jobs:
            return
        batch = merged([j.prepared for j in jobs])  # one encode over every job's encodings: not tokenized again
        try:
            result, seconds = await self.run(_timed, jobs[0].run, batch,
                                             jobs[0].rows if len(jobs) == 1 else slice(0, len(batch)))
        except Exception as e:  # noqa: BLE001 - one bad request must not fail the others it was merged with
            if len(jobs) > 1:
                for job in jobs:
                    await self._run_group([job])
                return
            # Alone, the error is this request's own: its handler answers it (4xx, or 500 logged with its id).
            if not jobs[0].future.done():
                jobs[0].future.set_exception(e)
            return
        self.metrics.model_seconds.inc(seconds)
        self.metrics.batch_size.observe(len(batch))
        tokens = sum(batch.tokens)
        self.metrics.batch_tokens.observe(tokens)
        self.metrics.add_tokens(tokens)
        if len(jobs) == 1:  # its own result, whatever its shape
            if not jobs[0].future.done():
                jobs[0].future.set_result(result)
            return
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(result[start : start + len(job.prepared)])
            start += len(job.prepared)
