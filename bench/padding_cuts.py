"""Batches cut by count against batches cut where padding is least (`Runner.batch_cost`), as a server calls.

    .venv/bin/python bench/padding_cuts.py                       # onnx int8 and int8-static, 106-text calls
    .venv/bin/python bench/padding_cuts.py --precision int8 --chunk 106 32 --rounds 5

A server's merged batch is ~100 short texts in arrival order (bertkit serve at 64 clients, /metrics'
bertkit_batch_size), and `encode` sorts only those. For STS-B dev sentences called in chunks of --chunk texts,
prints the padded tokens over the real ones with each cut, then the texts/s of the graph runner with its own
batch_cost and with count cuts (batch_cost None), interleaved round by round (median of --rounds, after one
untimed round: OpenVINO compiles kernels for each new shape).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encode import load_sets


def padded_share(lengths: np.ndarray, chunk: int, batch_cost: int | None) -> tuple[float, int]:
    """(padded tokens / real tokens, batches) over the chunks, batch size 32 as `encode`'s default."""
    from bertkit.batching import DEFAULT_MAX_TOKENS, by_length

    padded, batches = 0, 0
    for at in range(0, len(lengths), chunk):
        part = lengths[at : at + chunk]
        for b in by_length(part, 32, DEFAULT_MAX_TOKENS, batch_cost=batch_cost):
            padded += len(b) * int(part[b].max())
            batches += 1
    return padded / int(lengths.sum()), batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", nargs="+", default=["int8", "int8-static"])
    p.add_argument("--chunk", nargs="+", type=int, default=[106])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    from bertkit import Encoder
    from bertkit.runtime.seam import GRAPH_BATCH_COST

    texts = load_sets(["stsb"], None, None)["stsb"]
    for precision in args.precision:
        enc = Encoder.load(backend="onnx", precision=precision)
        own = enc.runner.batch_cost
        lengths = np.array(enc.prepare(texts).tokens)
        for chunk in args.chunk:
            for cost in (None, GRAPH_BATCH_COST):
                share, n = padded_share(lengths, chunk, cost)
                print(f"{precision} chunk {chunk} batch_cost {cost}: padded / real tokens {share:.3f}, {n} batches")
            times: dict[int | None, list[float]] = {None: [], GRAPH_BATCH_COST: []}
            for r in range(args.rounds + 1):
                for cost, got in times.items():
                    enc.runner.batch_cost = cost
                    start = time.perf_counter()
                    for at in range(0, len(texts), chunk):
                        enc.encode(texts[at : at + chunk])
                    if r:  # the first round compiles and warms up
                        got.append(len(texts) / (time.perf_counter() - start))
            enc.runner.batch_cost = own
            print(f"{precision} chunk {chunk} texts/s, median of {args.rounds}: "
                  + ", ".join(f"batch_cost {c}: {statistics.median(t):.0f}" for c, t in times.items())
                  + f" (its own: {own})")


if __name__ == "__main__":
    main()
