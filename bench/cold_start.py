"""Cold start, side by side: process start to the first vector on stdout, for one short text.

    .venv/bin/python bench/cold_start.py                     # median of 5 runs of each, interleaved
    .venv/bin/python bench/cold_start.py --runs 7 --json cold.json

Three commands do the same job (the packaged all-MiniLM-L6-v2, "hello world", a normalised vector printed as
JSON) in a fresh process each time:
- bertkit torch:  `bertkit encode "hello world" --normalize`
- bertkit onnx:   `bertkit encode "hello world" --normalize --backend onnx` (the graph exported once beforehand,
                  untimed: the cached-graph case, which imports no torch)
- sentence-transformers: a 3-line script, SentenceTransformer(folder).encode(["hello world"])
Runs are interleaved (torch, onnx, st, torch, ...) so that load from other jobs hits all three alike, after one
untimed warm-up run each (which also brings the files into the OS page cache). The clock stops when the first
line of the vector reaches our pipe. Printed: median and every run per command, the ratios to
sentence-transformers, and the largest 1 - cosine between the three vectors (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TEXT = "hello world"
ST_SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
print(json.dumps(SentenceTransformer(sys.argv[1], device="cpu").encode([sys.argv[2]])[0].tolist()), flush=True)
"""


def bertkit_cmd() -> list[str]:
    script = Path(sys.executable).with_name("bertkit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bertkit.cli"]


def commands(model: Path) -> dict[str, list[str]]:
    bk = [*bertkit_cmd(), "encode", TEXT, "--normalize", "--model", str(model)]
    return {"bertkit-torch": bk, "bertkit-onnx": [*bk, "--backend", "onnx"],
            "sentence-transformers": [sys.executable, "-c", ST_SCRIPT, str(model), TEXT]}


def first_vector(cmd: list[str], env: dict[str, str]) -> tuple[float, np.ndarray]:
    """Seconds from process start to the first stdout line, and that line as a vector."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0 or not line:
        sys.exit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return elapsed, np.asarray(json.loads(line), dtype=np.float64)


def cpu_line() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name}, {os.cpu_count()} CPUs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    from bertkit.model.locate import default_model_dir

    model = args.model or default_model_dir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmds = commands(model)
    export = subprocess.run([*bertkit_cmd(), "export", "--model", str(model)], capture_output=True, text=True, env=env,
                            check=False)  # the cached-graph case: export once, untimed
    if export.returncode != 0:
        sys.exit(f"bertkit export failed:\n{export.stderr}")
    vectors = {name: first_vector(cmd, env)[1] for name, cmd in cmds.items()}  # warm-up, untimed
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            times[name].append(first_vector(cmd, env)[0])
    med = {name: statistics.median(t) for name, t in times.items()}
    unit = {k: v / np.linalg.norm(v) for k, v in vectors.items()}
    worst = max(1 - float(unit[a] @ unit[b]) for a in unit for b in unit)
    st = med["sentence-transformers"]
    print(f"cold start, process start to first vector on stdout; median of {args.runs}; {cpu_line()}")
    print(f"{'command':<24} {'median s':>9} {'x ST':>6}   runs (s)")
    for name, t in times.items():
        print(f"{name:<24} {med[name]:9.2f} {med[name] / st:6.2f}   {' '.join(f'{x:.2f}' for x in t)}")
    print(f"bertkit onnx / sentence-transformers = {med['bertkit-onnx'] / st:.3f} (goal <= 0.3); "
          f"vectors agree to 1 - cos = {worst:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_line(), "runs": times, "median": med,
                                         "onnx_over_st": med["bertkit-onnx"] / st, "max_1_minus_cos": worst}, indent=2))


if __name__ == "__main__":
    main()
