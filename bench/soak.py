"""Soak test for `bertkit serve`: mixed good and bad traffic from many clients for a long time.

    .venv/bin/python bench/soak.py --minutes 30 --json soak.json      # the issue's run: 16 clients, 30 minutes
    .venv/bin/python bench/soak.py --minutes 0.5 --clients 4          # a quick try

Starts `bertkit serve` in a subprocess, warms it up, then --clients clients send requests one after another
for --minutes: good ones on every kind of route (OpenAI, bertkit's and TEI's /embed, /tokens, /similarity,
/tokenize) and, --bad-fraction of the time, requests that must be refused (malformed or deeply nested JSON,
lone surrogates, invisible texts, too many inputs, a text too long, a body over --max-body-bytes, repeated or
empty layers, wrong types). Reports requests, status counts per kind, p50 / p99 of the good requests, the
server's RSS after warm-up and at the end. Goals (exit status 1 when one fails): zero 5xx, every answer the
status its kind expects, every good vector equal to the offline one (1e-4), RSS growth under 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from serve_load import free_port, load_texts

MAX_INPUTS, MAX_CHARS, MAX_BODY = 32, 2000, 1_000_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def good_request(rng: random.Random, n_texts: int) -> tuple[str, str, dict, list[int] | None]:
    """(kind, path, body, text indices whose mean-pooled normalized vectors the answer must equal, or None)."""
    idx = rng.sample(range(n_texts), rng.randint(1, 8))
    kind = rng.choice(["openai", "embed", "embed_cls", "tei_embed", "tokens", "similarity", "tokenize"])
    if kind == "openai":
        return kind, "/v1/embeddings", {"input": idx, "model": "soak"}, idx
    if kind == "embed":
        return kind, "/embed", {"texts": idx, "normalize": True}, idx
    if kind == "embed_cls":
        return kind, "/embed", {"texts": idx, "pooling": "cls", "layers": [-2, -1]}, None
    if kind == "tei_embed":
        return kind, "/embed", {"inputs": idx, "normalize": True}, idx
    if kind == "tokens":
        return kind, "/tokens", {"texts": idx, "vectors": rng.random() < 0.2}, None
    if kind == "similarity":
        return kind, "/similarity", {"texts": idx + idx[:1], "poolings": ["mean", "cls", "mean"]}, None
    return kind, "/tokenize", {"inputs": idx}, None


BAD = {  # kind -> (path, raw body, expected status)
    "malformed_json": ("/v1/embeddings", b'{"input": ["unterminated', 422),
    "nested_json": ("/embed", b"[" * 5000 + b"]" * 5000, 422),
    "long_number": ("/v1/embeddings", b'{"input": ["a"], "dimensions": ' + b"7" * 5000 + b"}", 422),
    "surrogate": ("/embed", b'{"texts": ["ok", "\\ud800"]}', 400),
    "invisible": ("/v1/embeddings", b'{"input": ["\\u200b\\u0000"]}', 400),
    "too_many_inputs": ("/v1/embeddings", json.dumps({"input": ["x"] * (MAX_INPUTS + 1)}).encode(), 413),
    "too_long_text": ("/embed", json.dumps({"texts": ["y" * (MAX_CHARS + 1)]}).encode(), 413),
    "body_too_large": ("/embed", b'{"texts": ["z"], "junk": "' + b"j" * MAX_BODY + b'"}', 413),
    "repeated_layers": ("/embed", json.dumps({"texts": ["a"], "layers": [0] * 500}).encode(), 400),
    "empty_layers": ("/tokens", b'{"texts": "hi", "layers": []}', 400),
    "wrong_type": ("/embed", b'{"texts": [1, 2]}', 422),
    "tei_empty": ("/embed", b'{"inputs": []}', 400),
}


async def client(session, url, rng, texts, deadline, bad_fraction, record) -> None:
    while time.perf_counter() < deadline:
        if rng.random() < bad_fraction:
            kind = rng.choice(sorted(BAD))
            path, body, expected = BAD[kind]
            want = None
        else:
            kind, path, payload, want = good_request(rng, len(texts))
            for key in ("input", "texts", "inputs"):
                if key in payload:
                    payload[key] = [texts[i] for i in payload[key]]
            body, expected = json.dumps(payload).encode(), 200
        start = time.perf_counter()
        try:
            async with session.post(url + path, data=body, headers={"content-type": "application/json"}) as r:
                answer = await r.read()
                status = r.status
        except Exception as e:  # noqa: BLE001 - a dropped connection is a finding, not a crash of the bench
            record(kind, f"error {type(e).__name__}", expected, time.perf_counter() - start, None, None)
            continue
        record(kind, status, expected, time.perf_counter() - start, want, answer if want is not None else None)


def run(url: str, texts: list[str], clients: int, seconds: float, bad_fraction: float, seed: int, ref, pid: int):
    import aiohttp

    statuses: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    latencies, unexpected, worst = [], [], [0.0]
    samples = []

    def record(kind, status, expected, seconds, want, answer):
        statuses[kind][status] += 1
        if status != expected:
            unexpected.append((kind, status, expected))
        if status == 200:
            latencies.append(seconds)
        if want is not None and status == 200:
            body = json.loads(answer)
            rows = [d["embedding"] for d in body["data"]] if isinstance(body, dict) and "data" in body else \
                body["embeddings"] if isinstance(body, dict) else body
            worst[0] = max(worst[0], float(np.abs(np.array(rows, np.float32) - ref[want]).max()))

    async def main():
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
            async def sampler():
                while time.perf_counter() < deadline:
                    samples.append(round(rss_mb(pid), 1))
                    print(f"soak: {sum(sum(v.values()) for v in statuses.values())} requests, RSS {samples[-1]} MB",
                          file=sys.stderr)
                    await asyncio.sleep(min(60.0, max(seconds / 10, 1.0)))

            await asyncio.gather(sampler(), *(client(session, url, random.Random(seed + i), texts, deadline,
                                                     bad_fraction, record) for i in range(clients)))

    asyncio.run(main())
    return statuses, latencies, unexpected, worst[0], samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--bad-fraction", type=float, default=0.25)
    ap.add_argument("--warmup-seconds", type=float, default=60.0,
                    help="the same mixed traffic before RSS is first read (caches and allocator settle)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from bertkit import Encoder

    texts = load_texts(400)
    ref = Encoder.load(args.model, device="cpu").encode(texts, normalize=True)
    port = free_port()
    cmd = [sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--max-inputs", str(MAX_INPUTS), "--max-chars", str(MAX_CHARS), "--max-body-bytes", str(MAX_BODY)]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
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
        rss_ready = rss_mb(server.pid)
        warm = run(url, texts, args.clients, args.warmup_seconds, args.bad_fraction, args.seed + 1000, ref, server.pid)
        rss_start = rss_mb(server.pid)
        start = time.perf_counter()
        statuses, latencies, unexpected, worst, samples = run(
            url, texts, args.clients, args.minutes * 60, args.bad_fraction, args.seed, ref, server.pid)
        wall = time.perf_counter() - start
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    lat = np.array(latencies or [0.0]) * 1000
    five_xx = sum(n for per in statuses.values() for s, n in per.items() if isinstance(s, int) and s >= 500)
    result = {
        "minutes": round(wall / 60, 2),
        "clients": args.clients,
        "requests": sum(sum(v.values()) for v in statuses.values()),
        "good_requests": len(latencies),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "statuses": {k: {str(s): n for s, n in sorted(v.items(), key=str)} for k, v in sorted(statuses.items())},
        "five_xx": five_xx,
        "unexpected": len(unexpected),
        "unexpected_examples": sorted({str(u) for u in unexpected})[:10],
        "max_abs_diff_vs_offline": worst,
        "rss_mb": {"ready": round(rss_ready, 1), "start": round(rss_start, 1), "end": round(rss_end, 1),
                   "samples": samples},
        "rss_growth": round(rss_end / rss_start - 1, 4),
    }
    warm_5xx = sum(n for per in warm[0].values() for s, n in per.items() if isinstance(s, int) and s >= 500)
    result["warmup"] = {"seconds": args.warmup_seconds, "five_xx": warm_5xx, "unexpected": len(warm[2])}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = five_xx == warm_5xx == 0 and not unexpected and not warm[2] and worst < 1e-4 and result["rss_growth"] < 0.10
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
