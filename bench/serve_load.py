"""Load test for `bertkit serve`: many concurrent small requests vs offline `Encoder.encode` on the same texts.

    .venv/bin/python bench/serve_load.py                      # 64 clients x 16 requests of 1-8 texts
    .venv/bin/python bench/serve_load.py --clients 64 --requests 24 --json out.json
    .venv/bin/python bench/serve_load.py --tei-fraction 0.5   # half the clients post TEI's body to /embed

Loopback only, bounded in count (--requests per client) and time (--max-seconds). It

1. encodes all texts offline in this process (`encode(..., normalize=True)`, batch size 32) and times it;
2. starts `bertkit serve` in a subprocess on a free port and waits for /health;
3. runs --clients concurrent clients, each sending its requests one after another to /v1/embeddings
   (base64, as the OpenAI SDK does); about 1 request in 16 is bad on purpose (too many inputs, a text over
   --max-chars, malformed JSON, a wrong type) and must get its 4xx; with --tei-fraction F, the first F of the
   clients send TEI's body to /embed instead ({"inputs": [...], "normalize": true}, answered as a list of vectors;
   their bad requests in TEI's shape too), the way huggingface_hub / LangChain / LlamaIndex clients do;
4. checks every good response against the offline vectors (the bad requests changed nothing else), and
   reports throughput (texts/s) relative to offline, p50/p99 latency and the status counts (5xx must be 0).

Texts: STS-B train sentences from ../shared/data when present, else generated sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "stsb" / "train.tsv"
MAX_INPUTS, MAX_CHARS = 64, 2000


def load_texts(n: int) -> list[str]:
    texts: list[str] = []
    if DATA.is_file():
        seen = set()
        for line in DATA.read_text(encoding="utf-8").splitlines():
            for s in line.split("\t")[5:7]:
                s = s.strip()
                if s and s not in seen:
                    seen.add(s)
                    texts.append(s)
            if len(texts) >= n:
                break
    rng = random.Random(1)
    words = ["a", "man", "woman", "dog", "cat", "plays", "guitar", "runs", "in", "the", "park", "market",
             "fell", "today", "quickly", "new", "old", "red", "car"]
    while len(texts) < n:
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + ".")
    return texts[:n]


def plan(clients: int, requests: int, texts: list[str], seed: int = 0) -> list[list[tuple[str, object]]]:
    """Per client, a list of (kind, payload): kind 'ok' with a list of text indices, or a bad request kind."""
    rng = random.Random(seed)
    bad_kinds = ["too_many_inputs", "too_long_text", "malformed_json", "wrong_type"]
    out, next_text = [], 0
    for _ in range(clients):
        reqs = []
        for r in range(requests):
            if rng.random() < 1 / 16:
                reqs.append((rng.choice(bad_kinds), None))
                continue
            k = rng.randint(1, 8)
            idx = [(next_text + j) % len(texts) for j in range(k)]
            next_text += k
            reqs.append(("ok", idx))
        out.append(reqs)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (a freed buffer handed back to the system faults in again)."""
    return int(_stat(pid)[7])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The processes a process started (a `--model-process` server's model child), from /proc."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def offline(texts: list[str], model: str | None, threads: int | None) -> tuple[np.ndarray, float, float, int]:
    """The texts' vectors, and the encode call's wall seconds, CPU seconds and minor page faults."""
    from bertkit import Encoder
    from bertkit.serve import set_threads

    set_threads(threads)
    enc = Encoder.load(model, device="cpu")
    enc.encode(texts[:64], normalize=True)  # warm-up
    t, c, f = time.perf_counter(), time.process_time(), minor_faults(os.getpid())
    vecs = enc.encode(texts, normalize=True, batch_size=32)
    return vecs, time.perf_counter() - t, time.process_time() - c, minor_faults(os.getpid()) - f


async def run_clients(url: str, texts: list[str], schedule, max_seconds: float, tei_clients: int = 0):
    # aiohttp, not httpx, for the load generator: it shares the 2 cores with the server, and aiohttp spends
    # several times less CPU per request.
    import aiohttp
    import orjson

    statuses: dict[str, dict[int, int]] = {}
    latencies: list[float] = []
    answers: list[tuple[list[int], list[str]]] = []
    good_texts = 0
    deadline = time.perf_counter() + max_seconds
    headers = {"content-type": "application/json"}
    bad_bodies = {
        "malformed_json": b'{"input": ["unterminated',
        "wrong_type": orjson.dumps({"input": [1, 2, 3], "model": "bench"}),
        "too_many_inputs": orjson.dumps({"input": ["x"] * (MAX_INPUTS + 1), "model": "bench"}),
        "too_long_text": orjson.dumps({"input": ["y" * (MAX_CHARS + 1)], "model": "bench"}),
    }
    tei_bad_bodies = {  # the same mistakes in TEI's shape, to /embed
        "malformed_json": b'{"inputs": ["unterminated',
        "wrong_type": orjson.dumps({"inputs": [1, 2, 3]}),
        "too_many_inputs": orjson.dumps({"inputs": ["x"] * (MAX_INPUTS + 1)}),
        "too_long_text": orjson.dumps({"inputs": ["y" * (MAX_CHARS + 1)]}),
    }
    connector = aiohttp.TCPConnector(limit=len(schedule) + 8)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:

        async def post(body: bytes, path: str = "/v1/embeddings") -> tuple[int, bytes]:
            async with client.post(path, data=body, headers=headers) as r:
                return r.status, await r.read()

        async def one_client(reqs, tei: bool = False):
            nonlocal good_texts
            path = "/embed" if tei else "/v1/embeddings"
            for kind, idx in reqs:
                if time.perf_counter() > deadline:
                    return
                if kind == "ok":
                    if tei:
                        body = {"inputs": [texts[i] for i in idx], "normalize": True}
                    else:
                        body = {"input": [texts[i] for i in idx], "model": "bench", "encoding_format": "base64"}
                    t = time.perf_counter()
                    status, raw = await post(orjson.dumps(body), path)
                    if status == 200:
                        latencies.append(time.perf_counter() - t)
                        good_texts += len(idx)
                        answers.append((idx, raw, tei))  # decoded and checked after the timed phase
                else:
                    status, _ = await post((tei_bad_bodies if tei else bad_bodies)[kind], path)
                per_kind = statuses.setdefault(kind, {})
                per_kind[status] = per_kind.get(status, 0) + 1

        # Warm-up, not timed: the first requests pay for lazy initialisation.
        for _ in range(3):
            await post(orjson.dumps({"input": texts[:8], "model": "bench"}))
        start = time.perf_counter()
        await asyncio.gather(*(one_client(reqs, n < tei_clients) for n, reqs in enumerate(schedule)))
        wall = time.perf_counter() - start

    def vectors(raw: bytes, tei: bool) -> np.ndarray:
        if tei:  # TEI: a list of float vectors
            return np.array(json.loads(raw), dtype=np.float32)
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in json.loads(raw)["data"]])

    answers = [(idx, vectors(raw, tei)) for idx, raw, tei in answers]
    return wall, good_texts, latencies, statuses, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=16, help="requests per client")
    ap.add_argument("--max-seconds", type=float, default=180)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads, offline and in the server alike")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="an extra `bertkit serve` option, e.g. --serve-arg=--model-process (repeatable)")
    ap.add_argument("--tei-fraction", type=float, default=0.0,
                    help="share of the clients that post TEI's body to /embed (the rest: OpenAI's, base64)")
    args = ap.parse_args()

    texts = load_texts(args.clients * args.requests * 5)
    schedule = plan(args.clients, args.requests, texts)
    used = sorted({i for reqs in schedule for kind, idx in reqs if kind == "ok" for i in idx})
    bench_texts = [texts[i] for i in used]

    ref, t_offline, cpu_offline, _ = offline(bench_texts, args.model, args.threads)
    row_of = {i: n for n, i in enumerate(used)}

    port = free_port()
    cmd = [sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--max-inputs", str(MAX_INPUTS), "--max-chars", str(MAX_CHARS), "--max-wait-ms", str(args.max_wait_ms)]
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += args.serve_arg
    server = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(1200):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        children = child_pids(server.pid)  # started before /health answers
        server_cpu0, client_cpu0 = cpu_seconds(server.pid), time.process_time()
        child_cpu0 = sum(cpu_seconds(c) for c in children)
        child_faults0 = sum(minor_faults(c) for c in children)
        tei_clients = round(args.tei_fraction * args.clients)
        wall, good, latencies, statuses, answers = asyncio.run(
            run_clients(url, texts, schedule, args.max_seconds, tei_clients))
        server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu0, time.process_time() - client_cpu0
        child_cpu = sum(cpu_seconds(c) for c in children) - child_cpu0
        child_faults = sum(minor_faults(c) for c in children) - child_faults0
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        server.wait(60)
    # again, after: the machine is shared, so average the two
    _, t_offline2, cpu_offline2, faults_offline = offline(bench_texts, args.model, args.threads)

    worst = 0.0
    for idx, got in answers:
        worst = max(worst, float(np.abs(got - ref[[row_of[i] for i in idx]]).max()))
    offline_tps = len(bench_texts) / ((t_offline + t_offline2) / 2)
    served_tps = good / wall
    lat = np.array(latencies) * 1000
    batches = [float(x) for x in (_metric(metrics, "bertkit_batch_size_sum"),
                                  _metric(metrics, "bertkit_batch_size_count"))]
    five_xx = sum(n for per in statuses.values() for s, n in per.items() if s >= 500)
    result = {
        "clients": args.clients,
        "tei_clients": tei_clients,
        "requests_per_client": args.requests,
        "good_requests": len(latencies),
        "good_texts": good,
        "wall_s": round(wall, 2),
        "served_texts_per_s": round(served_tps, 1),
        "offline_texts_per_s": round(offline_tps, 1),
        "ratio": round(served_tps / offline_tps, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        # CPU seconds per 1000 texts: what each path costs whatever else the shared machine is doing.
        "offline_cpu_s_per_1k": round(1000 * (cpu_offline + cpu_offline2) / 2 / len(bench_texts), 2),
        "server_cpu_s_per_1k": round(1000 * server_cpu / max(good, 1), 2),
        "client_cpu_s_per_1k": round(1000 * client_cpu / max(good, 1), 2),
        # --model-process: the model child's CPU seconds per 1000 texts, and how much of the wall it computed
        "model_child_cpu_s_per_1k": round(1000 * child_cpu / max(good, 1), 2) if children else None,
        "model_child_cpu_fraction": round(child_cpu / wall, 3) if children else None,
        # minor page faults per 1000 texts: the model child's against offline encode's (the second run's)
        "model_child_faults_per_1k": round(1000 * child_faults / max(good, 1)) if children else None,
        "offline_faults_per_1k": round(1000 * faults_offline / len(bench_texts)),
        "load_average_1m": round(os.getloadavg()[0], 1),
        # summed over the model threads: up to 2 with a model process (two batches in flight on two threads)
        "model_busy_fraction": round(_metric(metrics, "bertkit_model_seconds_total") / wall, 3),
        "mean_batch_texts": round(batches[0] / max(batches[1], 1), 1),
        "statuses": {k: {str(s): n for s, n in v.items()} for k, v in sorted(statuses.items())},
        "five_xx": five_xx,
        "max_abs_diff_vs_offline": worst,
        "threads": args.threads,
        "serve_args": args.serve_arg,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    expected_bad = {"too_many_inputs": 413, "too_long_text": 413, "malformed_json": 422, "wrong_type": 422}
    ok = five_xx == 0 and worst < 1e-4 and all(
        set(statuses.get(k, {expected_bad[k]: 0})) == {expected_bad[k]} for k in expected_bad
    ) and set(statuses.get("ok", {})) == {200}
    sys.exit(0 if ok else 1)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


if __name__ == "__main__":
    main()
