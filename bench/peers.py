"""bertkit against every peer's modes (issue 30), in one interleaved run, on the same texts and threads.

    make bench-peers                                  # creates .venv-bench and .venv-infinity, then runs this
    .venv/bin/python bench/peers.py --limit 50 --reps 1 --latency-texts 10 --cold-runs 1   # a smoke run

Every system runs in its own worker process (bench/peers_worker.py; its peak RSS is that system's memory),
in the virtual environment it installs into: bertkit in .venv; sentence-transformers 6 (torch, bf16, its
multi-process pool, OpenVINO, static int8 OpenVINO) and fastembed in .venv-bench; infinity-emb and
sentence-transformers 3's ONNX backend (plain, O3, dynamic int8: sentence-transformers 6's needs optimum-onnx,
which cannot import transformers 5) in .venv-infinity. All of them load the packaged model folder or an
export of it made here, offline, once, untimed (in --work).

Workloads: short (STS-B dev sentences), medium (AG News), long (512-token documents) at --batch; batch-1
latency p50 / p99 on short texts (in turns of --latency-chunk texts a system); cold start to the first vector
(a fresh process per system); peak RSS; and the servers (bench/peers_serve.py). Each repetition runs every
system once, in turn, so load from other jobs hits all alike; times are medians over repetitions after one
warm-up, whose vectors are scored: STS-B dev Spearman, and cosine (min / mean) against sentence-transformers
fp32, the exact reference.
Writes --json (everything) and --markdown (per workload, each system's best mode within 0.3 STS points of
exact, and bertkit's ratio to the best peer), with this CPU's lscpu flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cold_start import first_vector
from encode import ROOT, load_sets, stsb_spearman
from peers_report import REFERENCE, cpu_info, markdown
from peers_serve import run_servers, server_commands

log = logging.getLogger("peers")
# system -> the environment it runs in: main = bertkit's own .venv (this interpreter)
SYSTEMS = {
    **{f"bertkit-{m}": "main" for m in ("torch-fp32", "torch-bf16", "torch-int8", "onnx-fp32", "onnx-int8",
                                        "onnx-int8-static")},
    **{f"st6-{m}": "bench" for m in ("torch-fp32", "torch-bf16", "torch-pool", "openvino-fp32",
                                     "openvino-int8-static")},
    **{f"st3-{m}": "infinity" for m in ("onnx-fp32", "onnx-O3", "onnx-int8")},
    "fastembed-fp32": "bench", "fastembed-int8": "bench",
    **{f"infinity-{m}": "infinity" for m in ("torch-fp32", "onnx-fp32", "onnx-int8")},
}
NEEDS = {"st3": "st3", "fastembed": "st3", "infinity-onnx": "st3", "st6-openvino": "st6"}  # prefix -> export


def pythons(args) -> dict[str, str | None]:
    found = {"main": sys.executable}
    for key, folder in (("bench", args.venv_bench), ("infinity", args.venv_infinity)):
        py = folder / "bin" / "python"
        found[key] = str(py) if py.is_file() else None
    return found


def environment(threads: int, main: bool) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "BERTKIT_VERDICTS": "off"}
    if main:  # bertkit from this checkout; the peers' environments do not have it
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    else:
        env.pop("PYTHONPATH", None)
    return env


def prepare(args, model: Path, py: dict[str, str | None]) -> dict[str, str]:
    """The untimed exports, once (kept in --work). Returns export name -> why it is missing."""
    from bertkit.model import default_model_dir  # noqa: F401  (bertkit must import here)

    args.work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "src" / "bertkit" / "calibration_texts.txt", args.work / "calibration_texts.txt")
    failed: dict[str, str] = {}
    export = [py["main"], "-m", "bertkit.cli", "export", "--model", str(model)]
    for precision in ("fp32", "int8", "int8-static"):
        export += ["--precision", precision]
    steps = {"bertkit": (export, "main"), "st3": (None, "infinity"), "st6": (None, "bench")}
    for name, (cmd, venv) in steps.items():
        if py[venv] is None:
            failed[name] = f"{venv} environment not installed (make bench-peers creates it)"
            continue
        cmd = cmd or [py[venv], str(BENCH / "peers_worker.py"), "--prepare", name, "--model", str(model),
                      "--work", str(args.work)]
        done = subprocess.run(cmd, env=environment(args.threads, venv == "main"), capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            failed[name] = done.stderr.strip()[-1500:]
            log.warning("export %s failed:\n%s", name, failed[name])
    torch_folder = args.work / "infinity-torch"  # infinity's torch engine on the model, 512 tokens
    shutil.copytree(model, torch_folder, dirs_exist_ok=True)
    max_length_512(torch_folder)
    if "st3" not in failed:
        folders(args.work)
    return failed


def max_length_512(folder: Path) -> None:
    """Truncate at 512 tokens like every other system here: the packaged configs say 256 (sentence_bert_config,
    read by infinity's torch engine) and 128 (tokenizer_config's max_length, read by fastembed)."""
    for name, keys in (("tokenizer_config.json", ("max_length", "model_max_length")),
                       ("sentence_bert_config.json", ("max_seq_length",))):
        path = folder / name
        if path.is_file():
            config = json.loads(path.read_text())
            path.write_text(json.dumps({**config, **dict.fromkeys(keys, 512)}, indent=2))


def folders(work: Path) -> None:
    """fastembed's folder (graphs and tokenizer side by side) and one folder per infinity ONNX mode holding a
    single graph at its top (infinity picks a graph by name: 'quantize' in it on CPU, else model.onnx)."""
    src = work / "st_onnx"
    side = [f for f in src.iterdir() if f.is_file()]
    targets = {"fastembed": {"model.onnx": "model.onnx", "model_qint8.onnx": "model_qint8.onnx"},
               "infinity-onnx-fp32": {"model.onnx": "model.onnx"},
               "infinity-onnx-int8": {"model_qint8.onnx": "model_quantized.onnx"}}
    for folder, graphs in targets.items():
        (work / folder).mkdir(exist_ok=True)
        for f in side:
            shutil.copy(f, work / folder / f.name)
        if (src / "1_Pooling").is_dir():
            shutil.copytree(src / "1_Pooling", work / folder / "1_Pooling", dirs_exist_ok=True)
        for graph, name in graphs.items():
            shutil.copy(src / "onnx" / graph, work / folder / name)
        max_length_512(work / folder)


class Worker:
    """One system's process; ask() sends a command and waits for its one-line answer."""

    def __init__(self, system: str, python: str, model: Path, args):
        self.system = system
        cmd = [python, str(BENCH / "peers_worker.py"), "--system", system, "--model", str(model),
               "--work", str(args.work), "--threads", str(args.threads)]
        self.log = open(args.work / f"{system}.stderr.log", "w")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=environment(args.threads, SYSTEMS[system] == "main"))
        self.ask(None)  # its {"ready": true}

    def ask(self, cmd: dict | None) -> dict:
        """Its answer; a RuntimeError with the end of its log when it has died (the OOM killer takes the
        largest of ~19 resident workers on the 512-token set of a 24 GiB machine): the run goes on without it."""
        try:
            if cmd is not None:
                self.proc.stdin.write(json.dumps(cmd) + "\n")
                self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:  # BrokenPipeError: it died before reading the command
            line = ""
        if not line:
            tail = Path(self.log.name).read_text()[-1500:]
            raise RuntimeError(f"{self.system} exited ({self.proc.wait()}; -9: killed, e.g. out of memory): {tail}")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self.proc.wait(60)
        self.log.close()


def start_workers(names: list[str], py: dict, failed_exports: dict, model: Path, args) -> tuple[dict, dict]:
    workers, errors = {}, {}
    for name in names:
        need = next((exp for prefix, exp in NEEDS.items() if name.startswith(prefix)), None)
        if py[SYSTEMS[name]] is None or need in failed_exports:
            errors[name] = failed_exports.get(need) or f"{SYSTEMS[name]} environment not installed"
            continue
        try:
            workers[name] = Worker(name, py[SYSTEMS[name]], model, args)
        except RuntimeError as e:
            errors[name] = str(e)
            log.warning("%s", e)
    return workers, errors


def ask_each(workers: dict[str, Worker], cmd: dict, errors: dict) -> dict[str, dict]:
    """cmd to every worker in turn; one that dies is dropped (its reason kept) and the run goes on."""
    answers = {}
    for name, w in list(workers.items()):
        try:
            answers[name] = w.ask({**cmd, "save": str(cmd["save"]).format(name=name)} if cmd.get("save") else cmd)
        except RuntimeError as e:
            errors[name] = str(e)
            del workers[name]
    return answers


def throughput(workers: dict[str, Worker], sets: dict[str, list[str]], args, errors: dict) -> list[dict]:
    """Per set: warm-up (its vectors saved and scored), then reps x systems interleaved; median seconds."""
    rows = []
    for set_name, texts in sets.items():
        path = args.work / f"texts-{set_name}.json"
        path.write_text(json.dumps(texts))
        cmd = {"op": "encode", "texts": str(path), "batch": args.batch}
        saved = args.work / f"vectors-{set_name}-{{name}}.npy"
        vectors = {n: np.load(str(saved).format(name=n)) for n in ask_each(workers, {**cmd, "save": saved}, errors)}
        times: dict[str, list[float]] = {n: [] for n in workers}
        for _ in range(args.reps):
            for name, answer in ask_each(workers, cmd, errors).items():
                times[name].append(answer["seconds"])
        times = {n: t for n, t in times.items() if n in workers}
        spear = stsb_spearman(vectors, texts) if set_name == "stsb" else {}
        ref = vectors.get(REFERENCE)
        for name, runs in times.items():
            cos = cosines(vectors[name], ref) if ref is not None else None
            sec = statistics.median(runs)
            rows.append(dict(workload=set_name, system=name, texts=len(texts), batch=args.batch,
                             sent_s=len(texts) / sec, spearman=spear.get(name), cos_min=cos and cos[0],
                             cos_mean=cos and cos[1], runs=runs))
            log.info("%-8s %-28s %8.1f sent/s", set_name, name, len(texts) / sec)
    return rows


def cosines(v: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    a = v / np.linalg.norm(v, axis=1, keepdims=True)
    b = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    c = (a * b).sum(1)
    return float(c.min()), float(c.mean())


def latency(workers: dict[str, Worker], texts: list[str], args, errors: dict) -> list[dict]:
    """One text per call. The texts go round in chunks of --latency-chunk, every system a chunk in turn, so a
    slow spell of the machine (seconds long on a shared VM) falls on every system alike, not on one. Each chunk
    starts with one untimed call: the first call after another process held the CPUs is slower for every
    system (caches, thread wake-ups), and with chunks of 10 it would be a tenth of the calls and set the p99."""
    chunks = [texts[i: i + args.latency_chunk] for i in range(0, len(texts), args.latency_chunk)]
    cmds = []
    for i, chunk in enumerate(chunks):
        path = args.work / f"texts-latency-{i}.json"
        path.write_text(json.dumps(chunk))
        cmds.append({"op": "latency", "texts": str(path), "warm": True})
    for cmd in cmds:
        ask_each(workers, cmd, errors)  # warm-up
    per: dict[str, list[float]] = {n: [] for n in workers}
    for _ in range(args.reps):
        for cmd in cmds:
            for name, answer in ask_each(workers, cmd, errors).items():
                per[name] += answer["seconds"]
    per = {n: s for n, s in per.items() if n in workers}
    return [dict(workload="batch-1", system=n, texts=len(texts), calls=len(s),
                 p50_ms=1000 * float(np.percentile(s, 50)), p99_ms=1000 * float(np.percentile(s, 99)))
            for n, s in per.items()]


def cold_starts(names: list[str], py: dict, model: Path, args) -> list[dict]:
    """A fresh process per system and run, interleaved; one untimed run each first (page cache)."""
    cmds = {n: [py[SYSTEMS[n]], str(BENCH / "peers_worker.py"), "--system", n, "--model", str(model),
                "--work", str(args.work), "--threads", str(args.threads), "--cold", "hello world"] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.cold_runs + 1):
        for name, cmd in cmds.items():
            try:
                t, _ = first_vector(cmd, environment(args.threads, SYSTEMS[name] == "main"))
            except SystemExit as e:  # first_vector exits on a failed command: one system's failure, not the run's
                log.warning("cold start of %s failed: %s", name, e)
                continue
            if rep:
                times[name].append(t)
    return [dict(workload="cold-start", system=n, seconds=statistics.median(t), runs=t) for n, t in times.items() if t]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--sets", nargs="+", default=["stsb", "agnews", "long"], choices=["stsb", "agnews", "long"])
    p.add_argument("--limit", type=int, default=None, help="first N texts of each set (default: all)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--latency-texts", type=int, default=100)
    p.add_argument("--latency-chunk", type=int, default=10, help="texts per system per turn in the batch-1 rows")
    p.add_argument("--cold-runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--clients", nargs="+", type=int, default=[1, 8, 64], help="server rows; none: --clients 0")
    p.add_argument("--server-requests", type=int, default=512, help="requests per client count and server")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bertkit" / "peers")
    p.add_argument("--venv-bench", type=Path, default=ROOT / ".venv-bench")
    p.add_argument("--venv-infinity", type=Path, default=ROOT / ".venv-infinity")
    p.add_argument("--json", type=Path, default=Path("peers.json"))
    p.add_argument("--markdown", type=Path, default=Path("peers.md"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bertkit.model import default_model_dir
    from bertkit.tokenizer import BertTokenizer

    model = default_model_dir()
    py = pythons(args)
    failed = prepare(args, model, py)
    sets = load_sets(args.sets, args.limit, BertTokenizer.from_dir(model, max_length=512).tokenizer)
    report = {"cpu": cpu_info(), "threads": args.threads, "exports_failed": failed, "rows": []}
    workers, report["errors"] = start_workers(args.systems, py, failed, model, args)
    try:
        report["rows"] += throughput(workers, sets, args, report["errors"])
        short = sets.get("stsb") or load_sets(["stsb"], None, None)["stsb"]
        report["rows"] += latency(workers, short[: args.latency_texts], args, report["errors"])
        report["rows"] += [dict(workload="peak-rss", system=n, mib=a["peak_mib"])
                           for n, a in ask_each(workers, {"op": "rss"}, report["errors"]).items()]
    finally:
        for w in workers.values():
            w.close()
    report["rows"] += cold_starts(list(workers), py, model, args)
    args.json.write_text(json.dumps(report, indent=1) + "\n")  # the offline rows, should the servers fail
    if args.clients != [0]:
        infinity_bin = args.venv_infinity / "bin" / "infinity_emb"
        report["servers"] = run_servers(server_commands(py["main"], infinity_bin, model, args.work, args.threads),
                                        environment(args.threads, True), short, args.clients,
                                        args.server_requests, args.reps, max_seconds=300)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    args.markdown.write_text(markdown(report))
    print(args.markdown.read_text())


if __name__ == "__main__":
    main()
