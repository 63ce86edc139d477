"""The server rows of bench/peers.py: `bertkit serve` against infinity-emb's `infinity_emb v2`, loopback only.

Both servers run the packaged model on the same threads, side by side, each in two modes: exact fp32 on torch
(`bertkit serve`; infinity's torch engine) and each one's fastest mode within 0.3 STS points of exact in the
offline rows (bertkit's ONNX Runtime dynamic int8, `--backend onnx --precision int8`, and its OpenVINO
int8-static; infinity's optimum engine on its int8 ONNX graph). Each repetition runs every client
count (1, 8, 64 by default) against each server in turn, with the same bounded schedule of requests (1 to 8
STS-B sentences each, OpenAI's /v1/embeddings body, base64), driven by bench/serve_load.py's aiohttp
client. Reported per server and client count: requests/s and p50 / p99 latency (medians over repetitions),
and the server's peak resident memory (VmHWM) at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from serve_load import free_port, run_clients

log = logging.getLogger("peers.serve")


def schedule(clients: int, total_requests: int, texts: list[str], seed: int = 0) -> list[list[tuple[str, list[int]]]]:
    """total_requests good requests spread over the clients (serve_load.plan's shape, none bad on purpose)."""
    rng, out, at = random.Random(seed), [], 0
    for _ in range(clients):
        reqs = []
        for _ in range(max(1, total_requests // clients)):
            k = rng.randint(1, 8)
            reqs.append(("ok", [(at + j) % len(texts) for j in range(k)]))
            at += k
        out.append(reqs)
    return out


def server_commands(python_main: str, infinity_bin: Path | None, model: Path, work: Path,
                    threads: int) -> dict[str, dict]:
    """name -> {"cmd": a command that serves on port {port}, "cwd", "env"}; infinity only where its venv is
    installed, on the folders bench/peers.py prepares in `work` (the model set to 512 tokens; the int8 graph)."""
    bertkit = [python_main, "-m", "bertkit.cli", "serve", "--model", str(model), "--port", "{port}",
               "--host", "127.0.0.1", "--threads", str(threads), "--log-level", "warning"]
    cmds = {"bertkit-serve": {"cmd": bertkit},
            "bertkit-serve-int8": {"cmd": [*bertkit, "--backend", "onnx", "--precision", "int8"]},
            "bertkit-serve-int8-static": {"cmd": [*bertkit, "--backend", "onnx", "--precision", "int8-static"]}}
    if infinity_bin is not None and infinity_bin.is_file():
        infinity = [str(infinity_bin.resolve()), "v2", "--device", "cpu", "--port", "{port}", "--host", "127.0.0.1",
                    "--url-prefix", "/v1", "--served-model-name", "bench", "--batch-size", "32", "--log-level",
                    "warning", "--no-model-warmup", "--no-bettertransformer", "--pooling-method", "mean"]
        cmds["infinity-v2"] = {"cmd": [*infinity, "--model-id", str(work / "infinity-torch"), "--engine", "torch"]}
        # its optimum engine finds a local graph only by a path relative to the working directory (as in
        # bench/peers_worker.load_infinity), and caches the graph it optimises under the hub cache
        optimum = [*infinity, "--model-id", ".", "--engine", "optimum"]
        cmds["infinity-v2-int8"] = {"cmd": optimum, "cwd": work / "infinity-onnx-int8",
                                    "env": {"HF_HUB_CACHE": str(work / "infinity-onnx-int8-cache")}}
    return cmds


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    import httpx

    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before it answered")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer on {url}/health within {seconds:.0f} s")


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024


def run_servers(cmds: dict[str, dict], env: dict[str, str], texts: list[str], levels: list[int],
                total_requests: int, reps: int, max_seconds: float) -> dict:
    """Start every server, then reps x levels x servers, interleaved; stop them all."""
    procs, urls, errors = {}, {}, {}
    try:
        for name, server in cmds.items():
            port = free_port()
            proc = subprocess.Popen([c.replace("{port}", str(port)) for c in server["cmd"]],
                                    env={**env, **server.get("env", {})}, cwd=server.get("cwd"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_ready(f"http://127.0.0.1:{port}", proc)
                procs[name], urls[name] = proc, f"http://127.0.0.1:{port}"
            except RuntimeError as e:
                proc.kill()
                errors[name] = f"{e}: {proc.communicate()[1].decode(errors='replace')[-800:]}"
                log.warning("%s did not start: %s", name, errors[name])
        samples: dict[str, dict[int, list[tuple[float, float, float]]]] = {n: {c: [] for c in levels} for n in urls}
        for rep in range(reps):
            for clients in levels:
                plan = schedule(clients, total_requests, texts, seed=rep)
                for name, url in urls.items():
                    wall, _, lat, statuses, _ = asyncio.run(run_clients(url, texts, plan, max_seconds))
                    if any(s != 200 for per in statuses.values() for s in per):
                        errors[f"{name}@{clients}"] = f"statuses {statuses}"
                    ms = np.asarray(lat) * 1000
                    samples[name][clients].append((len(lat) / wall, float(np.percentile(ms, 50)),
                                                   float(np.percentile(ms, 99))))
        rows = [dict(server=name, clients=c, requests_s=statistics.median(s[0] for s in runs),
                     p50_ms=statistics.median(s[1] for s in runs), p99_ms=statistics.median(s[2] for s in runs),
                     runs=runs) for name, per in samples.items() for c, runs in per.items()]
        memory = {name: peak_rss_mib(proc.pid) for name, proc in procs.items()}
        return {"rows": rows, "peak_rss_mib": memory, "errors": errors}
    finally:
        for proc in procs.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
