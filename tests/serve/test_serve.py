"""`bertkit serve` end to end: a real uvicorn server on a free loopback port, real HTTP, real model.

The server runs `bertkit serve` in a subprocess (so the CLI, SIGTERM and graceful shutdown are the real thing).
Servers for models with task heads: test_serve_heads.py; bugs, request ids and the bare router:
test_serve_errors.py.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from support import error_of, serve_process, wait_ready

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

MAX_INPUTS, MAX_CHARS, MAX_QUEUED = 16, 3000, 1000
LONG = " ".join(["word"] * 400)  # > 256 tokens: truncated for the packaged model
SENTENCES = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def whitening_file(tmp_path_factory) -> Path:
    """A whitening (issue 3) for 384-d mean-pooled vectors, cut to 16 dimensions. Fit on random vectors: the
    test checks the server applies it exactly, and not needing the model lets the server start sooner."""
    from bertkit.vectors.whitening import fit

    vectors = np.random.default_rng(0).normal(size=(500, 384))
    return fit(vectors, k=16, pooling="mean", layers=None).save(tmp_path_factory.mktemp("white") / "w.npz")


@pytest.fixture(scope="module")
def server_process(whitening_file, tmp_path_factory):
    """`bertkit serve` started in a subprocess; `server` waits for it, so the model loads here meanwhile."""
    options = ("--max-inputs", str(MAX_INPUTS), "--max-chars", str(MAX_CHARS), "--max-queued-tokens", str(MAX_QUEUED),
               "--max-wait-ms", "10", "--log-level", "warning", "--whitening", str(whitening_file))
    with serve_process(tmp_path_factory.mktemp("serve-log"), *options) as server:
        yield server


@pytest.fixture(scope="module")
def server(server_process, encoder):
    wait_ready(server_process.url, server_process.proc)
    return server_process


# ----------------------------------------------------------------------------------------------------------
# OpenAI compatibility


def test_openai_client_gets_encode_vectors(server, encoder):
    openai = pytest.importorskip("openai", reason="the test extra is not installed (openai)")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    expected = encoder.encode(SENTENCES, normalize=True)

    resp = client.embeddings.create(input=SENTENCES, model="all-MiniLM-L6-v2")  # the SDK asks for base64
    got = np.array([d.embedding for d in resp.data])
    assert [d.index for d in resp.data] == [0, 1, 2]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    n_tokens = sum(len(e.ids) for e in encoder.tokenizer.encode(SENTENCES))
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == n_tokens
    assert resp.model == "all-MiniLM-L6-v2"

    one = client.embeddings.create(input=SENTENCES[0], model="x", encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-5)

    short = client.embeddings.create(input=SENTENCES, model="x", dimensions=64)
    cut = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(np.array([d.embedding for d in short.data]), cut, atol=1e-5)

    with pytest.raises(openai.BadRequestError, match="dimensions must be between 1 and 384"):
        client.embeddings.create(input="x", model="x", dimensions=1000)
    assert [m.id for m in client.models.list()] == ["all-MiniLM-L6-v2"]


def test_openai_base64_is_little_endian_float32(server, encoder):
    r = server.post("/v1/embeddings", {"input": ["hello world"], "model": "m", "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, encoder.encode("hello world", normalize=True)[0], atol=1e-5)
    assert r.json()["truncated"] == []
    assert server.post("/v1/embeddings", {"input": ["short", LONG], "model": "m"}).json()["truncated"] == [1]


def test_readme_curl_examples_work_as_written(server):
    """Every `curl` line of the serving guide (docs/how-to/serving.md, up to "Serving beyond localhost"), run by
    bash against this server (port swapped in)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    guide = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "serving.md").read_text(encoding="utf-8")
    section = guide.split("\n## Serving beyond localhost", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("curl ")]
    assert len(lines) >= 6
    port = server.url.rsplit(":", 1)[1]
    for line in lines:
        out = subprocess.run(["bash", "-c", line.replace("localhost:8000", f"127.0.0.1:{port}")],
                             check=False, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (line, out.stderr)
        if "/metrics" in line:
            assert "bertkit_requests_total" in out.stdout
        else:
            body = json.loads(out.stdout)
            assert "error" not in body, (line, body)
    assert "A man plays guitar." in section and "/v1/embeddings" in section


# ----------------------------------------------------------------------------------------------------------
# Native routes


@pytest.mark.parametrize("pooling,layers", [("mean", None), ("cls", None), ("pooler", None), ("mask_prompt", None),
                                            ("max", [1, -1])])
def test_embed_matches_encode(server, encoder, pooling, layers):
    r = server.post("/embed", {"texts": SENTENCES, "pooling": pooling, "layers": layers})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = encoder.encode(SENTENCES, pooling=pooling, layers=layers)
    np.testing.assert_allclose(np.array(body["embeddings"]), expected, atol=1e-5)
    assert body["dimensions"] == 384 and body["truncated"] == [] and body["usage"]["tokens"] > 0


def test_embed_reports_truncation_or_refuses(server, encoder):
    body = server.post("/embed", {"texts": ["short one", LONG], "normalize": True}).json()
    assert body["truncated"] == [1]
    np.testing.assert_allclose(np.array(body["embeddings"]), encoder.encode(["short one", LONG], normalize=True),
                               atol=1e-5)
    msg = error_of(server.post("/embed", {"texts": ["short one", LONG], "truncate": False}), 413, "max_length")
    assert "text 1 has more than 256 tokens" in msg


def test_embed_whiten(server, encoder, whitening_file):
    from bertkit.vectors.whitening import Whitening

    w = Whitening.load(whitening_file)
    body = server.post("/embed", {"texts": SENTENCES, "whiten": True, "normalize": True}).json()
    assert body["whitened"] is True and body["dimensions"] == 16
    np.testing.assert_allclose(np.array(body["embeddings"]), w.apply(encoder.encode(SENTENCES), normalize=True),
                               atol=1e-5)
    assert server.get("/info").json()["whitening"]["k"] == 16
    assert "fit on pooling=mean" in error_of(server.post("/embed", {"texts": ["x"], "whiten": True, "pooling": "cls"}),
                                             400)


def test_tokens_match_encode_tokens(server, encoder):
    text = "Angela Merkel visited Paris."
    body = server.post("/tokens", {"texts": text}).json()
    (tv,) = encoder.encode_tokens([text])
    (res,) = body["results"]
    assert res["tokens"] == tv.tokens == ["[CLS]", "angela", "mer", "##kel", "visited", "paris", ".", "[SEP]"]
    assert [tuple(o) for o in res["offsets"]] == tv.offsets
    np.testing.assert_allclose(np.array(res["vectors"]), tv.vectors, atol=1e-5)
    bare = server.post("/tokens", {"texts": [text, "b"], "vectors": False}).json()["results"]
    assert "vectors" not in bare[0] and bare[1]["tokens"] == ["[CLS]", "b", "[SEP]"]
    big = server.post("/tokens", {"texts": [LONG] * 3}).json()  # 3 x 256 x 384 floats: serialized off the loop
    assert np.array(big["results"][2]["vectors"]).shape == (256, 384) and big["truncated"] == [0, 1, 2]


def test_similarity_matrix_and_pairs(server, encoder):
    body = server.post("/similarity", {"texts": SENTENCES, "poolings": ["cls", "mean"]}).json()
    for p in ("cls", "mean"):
        v = encoder.encode(SENTENCES, pooling=p, normalize=True)
        np.testing.assert_allclose(np.array(body["matrices"][p]), v @ v.T, atol=1e-5)
    pairs = server.post("/similarity", {"a": SENTENCES[:2], "b": SENTENCES[1:], "poolings": ["mean"]}).json()
    np.testing.assert_allclose(pairs["scores"]["mean"], encoder.similarity(SENTENCES[:2], SENTENCES[1:]), atol=1e-5)
    error_of(server.post("/similarity", {"texts": SENTENCES, "a": "x", "b": "y"}), 400, "bad_shape")
    error_of(server.post("/similarity", {"a": ["x", "y"], "b": "y"}), 400, "bad_shape")
    assert "unknown pooling 'avg'" in error_of(server.post("/similarity", {"texts": SENTENCES, "poolings": ["avg"]}),
                                               400)


def test_heads_absent_give_400_saying_so(server):
    assert "needs the masked-LM head" in error_of(server.post("/fill-mask", {"text": "The [MASK] sat."}), 400)
    assert "next-sentence-prediction head" in error_of(server.post("/nsp", {"a": "x", "b": "y"}), 400)
    assert "no classification head" in error_of(server.post("/classify", {"texts": ["x"]}), 400)
    assert "no token-classification (NER) head" in error_of(server.post("/ner", {"texts": ["x"]}), 400)


def test_health_info_models_page(server):
    assert server.get("/health").json()["status"] == "ok"
    info = server.get("/info").json()
    assert info["dimensions"] == 384 and info["max_length"] == 256 and info["layers"] == 6
    assert info["heads"] == {"pooler": True, "mlm": False, "nsp": False, "classification": False, "ner": False,
                             "rerank": False}
    assert "mask_prompt" in info["poolings"] and info["limits"]["max_inputs"] == MAX_INPUTS
    page = server.get("/")
    assert page.status_code == 200 and "bertkit playground" in page.text
    assert "fetch(" in server.get("/static/app.js").text
    error_of(server.get("/nope"), 404, "http_404")


# ----------------------------------------------------------------------------------------------------------
# Limits and errors: each gets its status and a body naming the rule, and the server keeps serving


@pytest.mark.parametrize(
    "path,body,status,code",
    [
        ("/embed", {"texts": ["x"] * (MAX_INPUTS + 1)}, 413, "max_inputs"),
        ("/v1/embeddings", {"input": ["x"] * (MAX_INPUTS + 1), "model": "m"}, 413, "max_inputs"),
        ("/embed", {"texts": ["x" * (MAX_CHARS + 1)]}, 413, "max_chars"),
        ("/tokens", {"texts": ["x" * (MAX_CHARS + 1)]}, 413, "max_chars"),
        ("/embed", {"texts": 5}, 422, "invalid_request_body"),
        ("/embed", {"texts": ["x"], "normalize": "yes"}, 422, "invalid_request_body"),
        ("/embed", {"texts": ["x"], "colour": "red"}, 422, "invalid_request_body"),
        ("/embed", {}, 422, "invalid_request_body"),
        ("/v1/embeddings", {"input": [1, 2, 3], "model": "m"}, 422, "invalid_request_body"),
        ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, 422, "invalid_request_body"),
        ("/embed", {"texts": ["ok", "  "]}, 400, "invalid_input"),
        ("/embed", {"texts": []}, 400, "empty_input"),
        ("/embed", {"texts": ["x"], "pooling": "avg"}, 400, "invalid_value"),
        ("/embed", {"texts": ["x"], "layers": [7]}, 400, "invalid_layers"),
        ("/embed", {"texts": ["x"], "pooling": "mask_prompt", "template": "no placeholders"}, 400, "invalid_value"),
        ("/tokens", {"texts": ["x"], "layers": [-8]}, 400, "invalid_layers"),
    ],
)
def test_limits_and_bad_requests(server, path, body, status, code):
    r = server.post(path, body)
    msg = error_of(r, status, code)
    if code and code.startswith("max_"):
        assert code in msg  # the body names the limit
    assert server.post("/embed", {"texts": ["still serving"]}).status_code == 200


def test_single_request_over_queue_budget_is_413(server):
    texts = ["w " * 300] * 4  # 4 texts truncated to 256 tokens = 1024 > max_queued_tokens (1000)
    msg = error_of(server.post("/embed", {"texts": texts}), 413, "max_queued_tokens")
    assert "request has 1024 tokens" in msg
    assert server.post("/embed", {"texts": texts[:3]}).status_code == 200  # 768 tokens fit


def test_malformed_json(server):
    for raw in (b"{bad", b"", b"[1, 2", "{\"texts\": \"caf\xe9\"".encode("latin-1")):
        r = httpx.post(server.url + "/embed", content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"]["code"] in ("invalid_json", "invalid_request_body")


def test_queue_full_gives_429_and_recovers(server):
    texts = ["w " * 300] * 3  # 3 x 256 = 768 tokens: one fits the 1000-token queue, two do not
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: server.post("/embed", {"texts": texts}), range(4)))
    statuses = sorted(r.status_code for r in results)
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and "max_queued_tokens" in refused.json()["error"]["message"]
    assert server.post("/embed", {"texts": texts}).status_code == 200  # queue drained: accepted again


def test_dynamic_batching_merges_concurrent_requests(server, encoder):
    count0, sum0 = server.metric("bertkit_batch_size_count"), server.metric("bertkit_batch_size_sum")
    texts = [f"sentence number {i} about things" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda t: server.post("/embed", {"texts": [t], "normalize": True}), texts))
    got = np.array([r.json()["embeddings"][0] for r in results])
    np.testing.assert_allclose(got, encoder.encode(texts, normalize=True), atol=1e-5)
    batches = server.metric("bertkit_batch_size_count") - count0
    assert server.metric("bertkit_batch_size_sum") - sum0 == 24
    assert batches < 24, "concurrent requests were never merged into one model batch"


def test_metrics_count_requests_errors_and_tokens(server):
    server.post("/embed", {"texts": 5})
    server.post("/embed", {"texts": ["counted"]})
    text = server.get("/metrics").text
    for name in ("bertkit_requests_total", "bertkit_errors_total", "bertkit_request_latency_seconds_bucket",
                 "bertkit_batch_size_bucket", "bertkit_queue_depth", "bertkit_queued_tokens", "bertkit_tokens_total",
                 "bertkit_tokens_per_second", "bertkit_requests_in_flight"):
        assert name in text, name
    assert server.metric('bertkit_errors_total{code="invalid_request_body",route="/embed"}') >= 1
    assert server.metric("bertkit_tokens_total") > 0 and server.metric("bertkit_tokens_per_second") > 0
    assert server.metric("bertkit_queued_tokens") == 0


# ----------------------------------------------------------------------------------------------------------
# Shutdown (last: it stops the module's server)


def test_graceful_shutdown_finishes_in_flight_request(server, encoder):
    texts = [f"{'long text ' * 120} {i}" for i in range(3)]  # 3 x 256 tokens: fits the queue budget
    result: dict = {}

    def slow_request():
        result["r"] = server.post("/embed", {"texts": texts, "pooling": "first_last_avg"})

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 30
    while server.metric("bertkit_requests_in_flight") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    r = result["r"]
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), encoder.encode(texts, pooling="first_last_avg"),
                               atol=1e-4)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete, so -SIGTERM is a clean exit too.
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/health", timeout=2)
