"""`bertkit serve --engine ray`: the same app as a Ray Serve application on a real 2-node cluster
(ray.cluster_utils.Cluster), one replica per worker node, behind Ray Serve's HTTP proxy. The README's requests
and the OpenAI client get the encoder's values; one replica's process is killed and the service keeps
answering while Ray Serve replaces it. And the command's user errors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from support import assert_user_error, free_port, run_process, serve_process, wait_ready

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="--engine ray needs the 'scale' extra")
pytest.importorskip("ray.serve", reason="--engine ray needs Ray Serve (the 'scale' extra)")

SENTENCES = ["A man plays guitar.", "Someone plays music.", "Stocks fell."]


@pytest.fixture(scope="module")
def cluster():
    """A head node (the Serve controller and the HTTP proxy; no CPUs) and two worker nodes of one CPU each: the
    two replicas (one CPU each) land one per worker node."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 96 * 1024**2,
                                                      "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=96 * 1024**2)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    with serve_process(tmp_path_factory.mktemp("serve-ray"), "--engine", "ray", "--address", cluster.address,
                       "--replicas", "2", "--threads", "1") as srv:
        wait_ready(srv.url, srv.proc, timeout=240)
        yield srv


def replica_pids() -> set[int]:
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"ServeReplica:bertkit:BertkitReplica" in (p / "cmdline").read_bytes():
                    pids.add(int(p.name))
            except OSError:
                pass
    return pids


# The README's requests (its "Serving embeddings over HTTP" and TEI sections), as `curl -s URL -d BODY` sends them.
README_REQUESTS = [
    ("/v1/embeddings", '{"input": ["A man plays guitar.", "Someone plays music."], "model": "all-MiniLM-L6-v2"}'),
    ("/embed", '{"texts": ["A man plays guitar."], "pooling": "cls", "normalize": true}'),
    ("/tokens", '{"texts": "Angela Merkel visited Paris.", "vectors": false}'),
    ("/similarity", ('{"texts": ["A man plays guitar.", "Someone plays music.", "Stocks fell."], '
                     '"poolings": ["cls", "mean"]}')),
    ("/similarity", '{"a": ["A man plays guitar."], "b": ["Someone plays music."]}'),
    ("/embed", '{"inputs": ["A man plays guitar."], "normalize": true, "truncate": true}'),
    ("/", '{"inputs": {"source_sentence": "A man plays guitar.", "sentences": ["Someone plays music."]}}'),
    ("/embed_all", '{"inputs": "Angela Merkel visited Paris."}'),
    ("/tokenize", '{"inputs": "Angela Merkel visited Paris.", "add_special_tokens": true}'),
    ("/decode", '{"ids": [101, 2858, 102]}'),
    ("/embed", '{"texts": ["x", "x", "x", "x"], "pooling": "nope"}'),  # an error body
]


def curl_d(url: str, path: str, body: str):
    import httpx

    return httpx.post(url + path, content=body.encode(), timeout=60,
                      headers={"content-type": "application/x-www-form-urlencoded"})


def assert_same_json(a, b, where: str) -> None:
    """Equal JSON, numbers to 1e-5."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), (where, a, b)
        for k in a:
            assert_same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-5, (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_readme_requests_and_openai_client_get_what_bertkit_serve_answers(server, encoder):
    """Every README request answers on Ray Serve exactly what the same app answers behind uvicorn; the limits
    hold; the OpenAI client gets the encoder's vectors."""
    from support import thread_server

    from bertkit.serve import create_app

    with thread_server(create_app(encoder)) as local:
        for path, body in README_REQUESTS:
            got, want = curl_d(server.url, path, body), curl_d(local.url, path, body)
            assert got.status_code == want.status_code, (path, body, got.text)
            assert_same_json(got.json(), want.json(), f"{path} {body}")
        for path in ("/info", "/v1/models", "/health"):
            assert_same_json(server.get(path).json(), local.get(path).json(), path)
    assert "bertkit_requests_total" in server.get("/metrics").text
    r = server.post("/embed", json={"texts": ["x"] * 257})  # over --max-inputs: the server's 413 body
    assert r.status_code == 413 and r.json()["error"]["code"] == "max_inputs", r.text

    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    resp = client.embeddings.create(input=SENTENCES, model="all-MiniLM-L6-v2")  # the SDK asks for base64
    np.testing.assert_allclose(np.array([d.embedding for d in resp.data]), encoder.encode(SENTENCES, normalize=True),
                               atol=1e-5)


def test_a_killed_replica_is_replaced_while_the_service_keeps_answering(server, encoder):
    before = replica_pids()
    assert len(before) == 2, before
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    expected = encoder.encode(SENTENCES, normalize=True)
    answered, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        r = server.post("/v1/embeddings", json={"input": SENTENCES, "model": "m", "encoding_format": "float"})
        assert r.status_code == 200, (answered, r.status_code, r.text)
        np.testing.assert_allclose([d["embedding"] for d in r.json()["data"]], expected, atol=1e-5)
        answered += 1
        now = replica_pids()
        if answered >= 20 and len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    now = replica_pids()
    assert victim not in now and len(now) == 2, (before, now)  # Ray Serve replaced the dead replica
    assert answered >= 20


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    assert_user_error(run_process("serve", "--engine", "ray", "--replicas", "0"), "--replicas 0: give at least 1")
    port = free_port()
    assert_user_error(run_process("serve", "--engine", "ray", "--address", f"127.0.0.1:{port}"),
                      f"--address 127.0.0.1:{port}: no Ray cluster answers there")
    assert_user_error(run_process("serve", "--replicas", "2"), "--address and --replicas are for --engine ray")
    assert_user_error(run_process("serve", "--engine", "spark"), "--engine 'spark' is unknown")
    # What every replica would load is checked first: one line, not a deployment failing on each replica.
    assert_user_error(run_process("serve", "--engine", "ray", "--model", str(tmp_path / "none")),
                      f"model path {tmp_path / 'none'} does not exist")
    assert_user_error(run_process("serve", "--engine", "ray", "--index", str(tmp_path / "none")),
                      f"--index {tmp_path / 'none'}: no such folder")
