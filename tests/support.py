"""Helpers shared by test files (imported as `support`: pytest puts tests/ on sys.path for its conftest)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BERTKIT = [sys.executable, "-m", "bertkit.cli"]


@dataclass
class Result:
    """What a `bertkit` run left: its exit status and its raw output."""

    returncode: int
    stdout: bytes
    stderr: bytes


def run_process(*args, input: bytes | None = None, cwd=None, env: dict[str, str] | None = None) -> Result:
    """A real `bertkit` process, as a user runs it."""
    r = subprocess.run(
        [*BERTKIT, *map(str, args)], input=input, capture_output=True, timeout=300, cwd=cwd, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})},
    )
    return Result(r.returncode, r.stdout, r.stderr)


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit status 2 and exactly one line on stderr, "bertkit: error: ...", holding every fragment."""
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bertkit: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


# ----------------------------------------------------------------------------------------------------------
# Small models


# Two shapes of randomly initialised BertForPreTraining, with the packaged tokenizer's vocabulary.
RANDOM_SHAPES = {
    "small": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "odd": dict(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=6, intermediate_size=80,
        max_position_embeddings=128, hidden_act="gelu_new",
    ),
}


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def parent_pid(pid: int) -> int:
    """The parent of process `pid`, from /proc (OSError once it has gone)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


# ----------------------------------------------------------------------------------------------------------
# Servers on loopback (httpx is imported when used: it comes with the serve extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    """Until GET /health answers 200; fails early, with its log, when the server process `proc` has died."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become ready in {timeout} s")


class Server:
    """A running server at `url` (and its process, when it has one of its own)."""

    def __init__(self, proc: subprocess.Popen | None, url: str):
        self.proc, self.url = proc, url

    def post(self, path: str, json=None, **kw):
        import httpx

        return httpx.post(self.url + path, json=json, timeout=60, **kw)

    def get(self, path: str, **kw):
        import httpx

        return httpx.get(self.url + path, timeout=30, **kw)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (all label sets) in /metrics."""
        import re

        text = self.get("/metrics").text
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


@contextlib.contextmanager
def serve_process(log_dir: Path, *options: str):
    """`bertkit serve` on a free port in a subprocess, stderr to a file (not a pipe nobody drains); stopped with
    SIGTERM at the end. Not waited for: call wait_ready when the server is needed, so the model loads meanwhile."""
    import signal

    port = free_port()
    log = log_dir / "stderr.txt"
    proc = subprocess.Popen([*BERTKIT, "serve", "--port", str(port), *options], stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"))
    proc.log = log
    try:
        yield Server(proc, f"http://127.0.0.1:{port}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


@contextlib.contextmanager
def thread_server(app):
    """A real uvicorn server for `app` in a thread of this process, on a free loopback port, with the HTTP
    protocol `bertkit serve` uses."""
    import uvicorn

    from bertkit.serve.app import server_config

    port = free_port()
    srv = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield Server(None, url)
    finally:
        srv.should_exit = True
        thread.join(30)


def error_of(r, status: int, code: str | None = None) -> str:
    """The message of an error answer, after checking its status (and code)."""
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    if code is not None:
        assert err["code"] == code, err
    return err["message"]
