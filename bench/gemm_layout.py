"""Which GEMM layout the packed forward should use for a Linear layer, by number of rows (tokens).

    .venv/bin/python bench/gemm_layout.py                 # 2 threads (torch's default here), then 1 thread
    .venv/bin/python bench/gemm_layout.py --threads 2 --rows 13 48 64

F.linear computes x @ W.T; the same numbers come out of (W @ x.T).T. For each row count this times both over
all 24 Linear layers of the packaged model, in model order, so the weights (42 MB) come from memory as they
do in a real forward rather than from cache. Then the whole forward_packed, with model.packed.SMALL_ROWS set so
that every layer uses one layout or the other, alternating the two settings between repetitions.
The printed ratio is (W @ x.T time) / (x @ W.T time): below 1, the transposed form is faster.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def time_rows(model, linears: list, rows: int, reps: int) -> tuple[float, float, float, float]:
    """(x@W.T ms, W@x.T ms) over the 24 GEMMs, then the same for the whole forward_packed."""
    import bertkit.model.packed as M  # SMALL_ROWS is read there at call time

    xs = {n: torch.randn(rows, n) for n in {w.shape[1] for w, _ in linears}}
    cols = [b[:, None] for _, b in linears]

    def row_major():
        for w, b in linears:
            torch.addmm(b, xs[w.shape[1]], w.t())

    def transposed():
        for (w, _), b in zip(linears, cols):
            torch.addmm(b, w, xs[w.shape[1]].t())

    gemm_a, gemm_b = median_ms(row_major, reps), median_ms(transposed, reps)
    # The whole packed forward: one sequence of `rows` tokens, or 16-token texts when there are more.
    n = max(1, rows // 16)
    ids = torch.randint(1000, 20000, (n, rows // n))
    mask = torch.ones_like(ids)
    fwd: dict[int, list[float]] = {0: [], 1 << 30: []}  # SMALL_ROWS: never / always transposed
    saved = M.SMALL_ROWS
    try:
        with torch.inference_mode():
            for _ in range(9):  # alternate the two settings, so that machine load hits both alike
                for setting, times in fwd.items():
                    M.SMALL_ROWS = setting
                    times.append(median_ms(lambda: model.forward_packed(ids, mask), reps))
    finally:
        M.SMALL_ROWS = saved
    return gemm_a, gemm_b, statistics.median(fwd[0]), statistics.median(fwd[1 << 30])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 13, 32, 48, 64, 96, 128, 512])
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args()

    from bertkit.encoder import Encoder

    model = Encoder.load(device="cpu").model
    linears = []  # (weight, bias) in the order forward_packed uses them: fused QKV, attention out, FFN in, FFN out
    for layer in model.bert.encoder.layer:
        linears.append(layer.attention.self.fused_qkv())
        for dense in (layer.attention.output.dense, layer.intermediate.dense, layer.output.dense):
            linears.append((dense.weight, dense.bias))
    mb = sum(w.numel() for w, _ in linears) * 4 / 1e6
    print(f"torch {torch.__version__}, {len(linears)} weight matrices, {mb:.0f} MB")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n== {threads} thread(s); ratio = W@x.T time / x@W.T time")
        print(f"{'rows':>5} | 24 GEMMs: {'x@W.T ms':>9} {'W@x.T ms':>9} {'ratio':>6} | forward_packed: "
              f"{'x@W.T ms':>9} {'W@x.T ms':>9} {'ratio':>6}")
        for rows in args.rows:
            a, b, fa, fb = time_rows(model, linears, rows, args.reps)
            print(f"{rows:>5} | {'':>10}{a:>9.2f} {b:>9.2f} {b / a:>6.2f} | "
                  f"{'':>16}{fa:>9.2f} {fb:>9.2f} {fb / fa:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
