"""Unauthenticated floods (issue 29 rows 6 and 7): the server's RSS and /health latency while clients with no
key send huge request heads or announce huge bodies.

    .venv/bin/python bench/serve_flood.py                         # 8 x 100 MB heads, then 40 x 16 MB bodies
    .venv/bin/python bench/serve_flood.py --heads 16 --head-mb 100 --bodies 40 --json flood.json

It starts `bertkit serve --api-key KEY` in a subprocess and measures its RSS (from /proc) and a /health
request before and during:
- heads: --heads connections at once, each sending a --head-mb MB `Authorization: Bearer aaaa...` header;
  each is refused with 431 after MAX_HEAD_BYTES (16 KiB) plus at most one socket read;
- bodies: --bodies connections at once announcing a 16 MB body (Content-Length) and sending it slowly;
  each is refused with 401 before the body is read.
The bound (goal): RSS grows by less than --max-growth-mb (default 64 MB) over the idle server, /health stays
under 0.5 s, and every flood connection got its 431 / 401. Exit status 1 when not.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from serve_load import free_port

KEY = "sk-flood-bench-1"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(port: int, start: bytes, size: int, chunk: int = 256 * 1024, pause: float = 0.0) -> bytes:
    """Send `start`, then up to `size` bytes; the first bytes the server answered ('' if it only closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(start)
        sent = 0
        try:
            while sent < size:
                s.sendall(b"a" * chunk)
                sent += chunk
                time.sleep(pause)
        except OSError:
            pass  # refused and closed: what the bound is for
        try:
            return s.recv(64)
        except OSError:
            return b""


def run_flood(port: int, pid: int, n: int, start: bytes, size: int, pause: float) -> dict:
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(flood(port, start, size, pause=pause)))
               for _ in range(n)]
    peak, health = rss_mb(pid), []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        t0 = time.perf_counter()
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        except httpx.TimeoutException:
            pass  # counted as the 30 s it waited: the server did not answer
        health.append(time.perf_counter() - t0)
        time.sleep(0.05)
    for t in threads:
        t.join()
    statuses = sorted({a[9:12].decode(errors="replace") or "closed" for a in answers})
    return {"connections": n, "statuses": statuses, "peak_rss_mb": round(peak, 1),
            "health_max_s": round(max(health, default=0.0), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-mb", type=float, default=100)
    ap.add_argument("--bodies", type=int, default=40)
    ap.add_argument("--max-growth-mb", type=float, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port), "--api-key", KEY,
                             "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                print("the server did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        httpx.post(f"http://127.0.0.1:{port}/embed", json={"texts": ["warm up"]}, timeout=60,
                   headers={"Authorization": f"Bearer {KEY}"})
        idle = rss_mb(proc.pid)
        head = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        body = (b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 16777216\r\n\r\n")
        result = {
            "idle_rss_mb": round(idle, 1),
            "heads": run_flood(port, proc.pid, args.heads, head, int(args.head_mb * 2**20), 0.0),
            "bodies": run_flood(port, proc.pid, args.bodies, body, 16 * 2**20, 0.01),
        }
    finally:
        proc.terminate()
        proc.wait(30)
    ok = (result["heads"]["statuses"] == ["431"] and result["bodies"]["statuses"] == ["401"]
          and all(result[k]["peak_rss_mb"] - idle < args.max_growth_mb for k in ("heads", "bodies"))
          and all(result[k]["health_max_s"] < 0.5 for k in ("heads", "bodies")))
    result["goal_met"] = ok
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
