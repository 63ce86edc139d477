"""Batching tokenized inputs: length-sorted index batches and the count (and warning) of truncated inputs.

Every place that runs many texts through the model uses these: `run_batches` (the one inference batch loop,
over a `Prepared` from `Encoder.prepare` or a task model's encodings), and the training loop (by_length,
inside seeded shuffling windows).

    from bertkit.batching import by_length, truncation_note
    batches = by_length([len(e.ids) for e in encodings], batch_size=32, max_tokens=4096)
    cut = truncation_note(encodings, tokenizer.max_length)   # logs "2 of 40 inputs were longer than ..."
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import OptionError

if TYPE_CHECKING:
    from tokenizers import Encoding

log = logging.getLogger(__name__)

# Upper bound on padded tokens per batch in encode(): long texts get smaller batches, short ones keep
# batch_size. Bounds activation memory and keeps the working set in cache; bench/token_budget.py.
DEFAULT_MAX_TOKENS = 4096


def by_length(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    max_tokens: int | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_cost: int | None = None,
) -> list[np.ndarray]:
    """Index batches of similar length, longest first, so that little compute goes to padding.

    lengths: tokens per item, indexed by item number. indices: the items to batch (default: all of them); ties
    keep their order in `indices`, which is what lets the training loop keep its seeded shuffle. A batch holds
    at most batch_size items and, with max_tokens, at most max_tokens padded tokens (but always one item).
    batch_cost: for a runner that computes on padding (an exported graph), what one more batch costs in padded
    tokens; the sorted items are then cut where padded tokens plus batch_cost per batch are fewest
    (`padding_cuts`), not every batch_size items. None: every batch_size items (and max_tokens).
    """
    if batch_size < 1:  # usually a user's option passed straight through
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    items = np.arange(len(lengths)) if indices is None else np.asarray(indices, dtype=np.int64)
    order = items[np.argsort(-lengths[items], kind="stable")]
    if batch_cost is not None:
        sizes = padding_cuts(lengths[order], batch_size, max_tokens, batch_cost)
        return np.split(order, np.cumsum(sizes)[:-1]) if len(order) else []
    if max_tokens is None:
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        # The first item of a batch is its longest, so it sets the padded width.
        size = max(1, min(batch_size, max_tokens // max(1, int(lengths[order[start]]))))
        batches.append(order[start : start + size])
        start += size
    return batches


# padding_cuts works on windows of this many sorted items (its cost grows with window x batch_size): a 106-text
# merged batch of a server is cut in ~0.5 ms, 4,096 texts in ~20 ms; across windows, sorted texts pad little.
CUT_WINDOW = 4096


def padding_cuts(widths: np.ndarray, batch_size: int, max_tokens: int | None, batch_cost: int) -> list[int]:
    """Batch sizes, in order, over `widths` (tokens per item, longest first) that minimise padded tokens plus
    `batch_cost` per batch, each batch within batch_size items and max_tokens padded tokens (or one item).

    A batch's width is its first item's, so this is a shortest path over the cut points (dynamic programming):
    best[j] is the least cost of the first j items. Why: a server's merged batch (~100 short texts in arrival
    order) cut every 32 sorted texts pads ~22 % of its tokens (STS-B sentences); an exported graph computes on
    all of them, and one more batch costs it far less (runtime/seam.py's GRAPH_BATCH_COST, docs/RESULTS.md).
    """
    sizes: list[int] = []
    for start in range(0, len(widths), CUT_WINDOW):
        w = np.asarray(widths[start : start + CUT_WINDOW], dtype=np.float64)
        n = len(w)
        best = np.full(n + 1, np.inf)
        best[0] = 0.0
        size_at = np.zeros(n + 1, dtype=np.int64)  # size_at[j]: the size of the last batch of the best cut of j
        for k in range(n):  # from each cut point k, every batch [k, k + s) that fits
            most = min(batch_size, n - k)
            if max_tokens is not None:
                most = max(1, min(most, int(max_tokens // max(1.0, w[k]))))
            s = np.arange(1, most + 1)
            cost = best[k] + s * w[k] + batch_cost
            better = cost < best[k + 1 : k + most + 1]
            best[k + 1 : k + most + 1][better] = cost[better]
            size_at[k + 1 : k + most + 1][better] = s[better]
        window, j = [], n
        while j > 0:
            window.append(int(size_at[j]))
            j -= window[-1]
        sizes += window[::-1]
    return sizes


def truncated_positions(encodings: Sequence[Encoding]) -> list[int]:
    """Positions of the inputs that the tokenizer cut to its max_length."""
    return [i for i, e in enumerate(encodings) if e.overflowing]


def truncation_note(encodings: Sequence[Encoding], limit: int, what: str = "inputs") -> int:
    """How many of `encodings` were cut to `limit` tokens, with a warning when any were."""
    n = len(truncated_positions(encodings))
    if n:
        log.warning("%d of %d %s were longer than %d tokens and were truncated", n, len(encodings), what, limit)
    return n


def progress_iter(items: Iterable[np.ndarray], enabled: bool, total_items: int):
    """Iterate `items` (index batches, e.g. as they finish) with a rich progress bar counting texts, if enabled."""
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("encoding"), BarColumn(), TextColumn("{task.completed}/{task.total} texts"),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("encode", total=total_items)
        for item in items:
            yield item
            bar.advance(task, len(item))


@dataclass
class Prepared:
    """Texts validated and tokenized once (`Encoder.prepare`): what the batch loop runs, and what a server
    counts and queues instead of the texts."""

    texts: list[str]  # as given (validated), before any template
    encodings: list[Encoding]  # one per text: what runs (the template-wrapped text when template is set)
    truncated: list[int]  # positions of the texts that were cut to max_length
    tokens: list[int]  # tokens per text as it runs ([CLS] and [SEP] included)
    template: str | None = None  # the mask_prompt template the texts are wrapped in, or None
    truncate: bool = True

    def __len__(self) -> int:
        return len(self.texts)


Mapper = Callable[[Callable[[np.ndarray], None], list[np.ndarray]], None]


def run_batches(
    encodings: Sequence[Encoding],
    step: Callable[[np.ndarray, Any], None],
    pad: Callable[[list[Encoding]], Any],
    *,
    batch_size: int = 32,
    max_tokens: int | None = None,
    mapper: Mapper | None = None,
    batch_cost: int | None = None,
) -> None:
    """THE batch loop: length-sorted index batches (by_length), each padded by `pad` and handed with its
    indices to `step(idx, batch)`, which runs the model (any per-batch call: the encoder's runner, a task
    model) and writes its rows. `mapper(fn, batches)` runs the batches (Encoder.map_batches: worker threads
    and progress); None runs them here, one after another. batch_cost: by_length's, from the runner."""
    batches = by_length([len(e.ids) for e in encodings], batch_size, max_tokens, batch_cost=batch_cost)

    def one(idx: np.ndarray) -> None:
        step(idx, pad([encodings[i] for i in idx]))

    if mapper is not None:
        mapper(one, batches)
        return
    for idx in batches:
        one(idx)


def prompt_texts(tokenizer, texts: list[str], template: str) -> tuple[list[str], list[Encoding]]:
    """Each text wrapped in a mask_prompt template ('... {text} ... [MASK] ...'), the text (never the template)
    shortened to fit the tokenizer's max_length; and the encodings of the uncut prompts, which say which
    prompts were too long (returned, so that concurrent calls each report their own truncation)."""
    if not texts:
        return [], []
    prefix, suffix = template.split("{text}")
    wrapped = [prefix + t + suffix for t in texts]
    encodings = tokenizer.encode(wrapped)
    overhead = len(tokenizer.encode([prefix + suffix])[0].ids)
    budget = tokenizer.max_length - overhead
    for i in truncated_positions(encodings):
        # Cut the text itself at the character where its `budget`-th wordpiece ends.
        text_enc = tokenizer.tokenizer.encode(texts[i], add_special_tokens=False)
        end = text_enc.offsets[max(budget, 1) - 1][1]
        wrapped[i] = prefix + texts[i][:end] + suffix
    return wrapped, encodings


class WorkerPools:
    """An encoder's CPU worker threads: `map` runs batches several at once, each on one thread.

    Why: BERT-base-sized GEMMs on a few hundred rows, and the many small ops between them, scale poorly
    across intra-op threads (every op ends in a barrier). One batch per thread keeps each core busy on
    its own work: on 2 cores, forward_packed ran +19% faster on 16-token and +25% on 512-token batches.
    Thread counts are per OS thread (runner.set_threads(1) in each worker), so the caller's setting is left as
    it was. One pool per worker count, kept between calls (their scratch buffers are reused too) and never shut
    down while the encoder lives: calls from several threads at once, with different counts, each keep theirs.
    """

    def __init__(self):
        self._pools: dict = {}  # workers -> ThreadPoolExecutor
        self._lock = threading.Lock()

    def __getitem__(self, workers: int):
        return self._pools[workers]

    def __iter__(self):
        return iter(list(self._pools))

    def map(self, runner, fn, batches: list[np.ndarray], workers: int, progress: bool, total: int) -> None:
        if min(workers, len(batches)) <= 1:
            with runner.inference():
                for idx in progress_iter(batches, progress, total_items=total):
                    fn(idx)
            return

        def run(idx: np.ndarray) -> np.ndarray:
            with runner.inference():  # grad mode is per thread too
                fn(idx)
            return idx

        for _ in progress_iter(self._pool(runner, workers).map(run, batches), progress, total_items=total):
            pass

    def _pool(self, runner, workers: int):
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            pool = self._pools.get(workers)
            if pool is None:
                pool = self._pools[workers] = ThreadPoolExecutor(
                    workers, thread_name_prefix="bertkit-encode", initializer=runner.set_threads, initargs=(1,)
                )
            return pool
