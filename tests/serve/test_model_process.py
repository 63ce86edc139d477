"""`bertkit serve --model-process`: the vectors' forward pass in a child process. The same answers as the
in-process server and offline `encode`, heads still served, and the child gone when the server stops."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from support import serve_process, wait_ready

from bertkit.runtime.seam import cpu_budget

TEXTS = ["A man is playing a guitar.", "Hi.", "Paris is the capital of France.", "A dog runs in the park."]


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the model process")
@pytest.mark.skipif(cpu_budget() < 2, reason="needs 2 CPUs: with --threads 1 on one CPU the model stays in process")
def test_serve_model_process_answers_as_offline(tmp_path, encoder):
    # Neither --model-process nor --in-process: --threads 1 leaves a core to the HTTP side, so the model runs in a
    # child (runtime.process.child_pays)
    with serve_process(tmp_path, "--threads", "1") as server:
        wait_ready(server.url, server.proc)
        kids = children(server.proc.pid)
        assert len(kids) == 1, kids  # the model process
        assert server.get("/info").json()["model_process"] is True
        r = server.post("/v1/embeddings", {"input": TEXTS, "model": "m", "encoding_format": "base64"})
        assert r.status_code == 200, r.text
        got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r.json()["data"]])
        np.testing.assert_allclose(got, encoder.encode(TEXTS, normalize=True), atol=1e-6)
        r = server.post("/embed", {"texts": TEXTS, "pooling": "cls", "layers": [2, -1]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["embeddings"], np.float32),
                                   encoder.encode(TEXTS, pooling="cls", layers=[2, -1]), atol=1e-5)
        r = server.post("/attention", {"text": TEXTS[0]})  # attention probabilities: the parent's own model
        assert r.status_code == 200, r.text
        # a model process runs each merged batch as one forward (serve/batcher.forward_rows)
        assert server.get("/info").json()["limits"]["encode_batch_size"] == 256
    assert server.proc.returncode is not None
    deadline = time.monotonic() + 30
    while alive(kids[0]) and time.monotonic() < deadline:  # the child exits with the server
        time.sleep(0.1)
    assert not alive(kids[0])


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the model process")
def test_serve_in_process_when_asked(tmp_path):
    with serve_process(tmp_path, "--threads", "1", "--in-process") as server:
        wait_ready(server.url, server.proc)
        assert children(server.proc.pid) == []
        info = server.get("/info").json()
        assert info["model_process"] is False and info["limits"]["encode_batch_size"] == 32


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
