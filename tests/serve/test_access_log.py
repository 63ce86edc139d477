"""What the server logs: one line per request (route, status, sizes, latency, key name), never the texts or
the keys, unless `--log-texts` (off by default, with a warning when on); and CORS, closed unless asked for."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys

import pytest
from support import Server, error_of, free_port, thread_server, wait_ready

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

SECRET = "PLUM-ZEBRA-4417"  # in every text sent below; must not reach the log
KEY = "sk-logs-e4c19a77b2"
TEXTS = [f"My account number is {SECRET}.", f"Please wire the money, {SECRET.lower()} said."]
ACCESS_LINE = re.compile(r"(GET|POST) (\S+) (\d{3}) in=(\d+)B out=(\d+)B ([\d.]+)ms key=(\S+) id=(\w+)")


def secret_requests(post, get) -> list[tuple[str, int]]:
    """Requests carrying the secret to every route, good and bad; (route, status) of each."""
    calls = [
        ("/v1/embeddings", post("/v1/embeddings", {"input": TEXTS, "model": "m"})),
        ("/embed", post("/embed", {"texts": TEXTS, "pooling": "cls"})),
        ("/tokens", post("/tokens", {"texts": TEXTS})),
        ("/similarity", post("/similarity", {"texts": TEXTS})),
        ("/embed", post("/embed", {"texts": [TEXTS[0] + " word" * 300]})),  # truncated: a warning, counted
        ("/embed", post("/embed", {"texts": [TEXTS[0] + " word" * 300], "truncate": False})),  # 413
        ("/embed", post("/embed", {"texts": [TEXTS[0], ""]})),  # 400, empty text
        ("/embed", post("/embed", {"texts": TEXTS, "pooling": SECRET})),  # 400, unknown pooling
        ("/embed", post("/embed", {"texts": TEXTS, SECRET: 1})),  # 422, unknown field
        ("/v1/embeddings", post("/v1/embeddings", content=f'{{"input": ["{SECRET}"'.encode())),  # 422, bad JSON
        ("/fill-mask", post("/fill-mask", {"text": f"{SECRET} [MASK]"})),  # 400, no MLM head
        ("/nsp", post("/nsp", {"a": TEXTS[0], "b": TEXTS[1]})),
        ("/classify", post("/classify", {"texts": TEXTS})),
        ("/ner", post("/ner", {"texts": TEXTS})),
        ("/search", post("/search", {"query": TEXTS[0]})),  # 404, no index
        ("/info", get(f"/info?q={SECRET}")),
    ]
    return [(route, r.status_code) for route, r in calls]


def test_logs_of_a_run_with_secret_texts_hold_none_of_them(tmp_path):
    """`bertkit serve` at its most talkative (debug, BERTKIT_VERBOSE): the log has a line per request with
    route, status, sizes, latency and key name, and neither the texts nor the key."""
    port = free_port()
    log = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port), "--api-key", KEY, "--log-level", "debug"]
    env = {**os.environ, "BERTKIT_VERBOSE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    proc.log = log
    server = Server(proc, f"http://127.0.0.1:{port}")
    try:
        wait_ready(server.url, proc)
        headers = {"Authorization": f"Bearer {KEY}"}
        sent = secret_requests(lambda path, json=None, **kw: server.post(path, json, headers=headers, **kw),
                               lambda path: server.get(path, headers=headers))
        error_of(server.post("/embed", {"texts": TEXTS}), 401, "missing_api_key")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert SECRET not in text and SECRET.lower() not in text and KEY not in text
    assert "were longer than 256 tokens and were truncated" in text  # the talkative run did log things
    lines = [m.groups() for m in ACCESS_LINE.finditer(text) if m.group(2) != "/health"]  # wait_ready's probes
    got = [(route, int(status)) for _, route, status, *_ in lines]
    assert got[: len(sent)] == sent, text
    assert {s for _, s in sent} >= {200, 400, 404, 413, 422}
    for method, route, status, size_in, size_out, ms, key, rid in lines[: len(sent)]:
        assert key == "key1" and int(size_out) > 0 and float(ms) >= 0 and len(rid) == 32
        assert int(size_in) > 0 or method == "GET"
    assert got[-1] == ("/embed", 401) and lines[-1][6] == "-"  # refused: no key name


def test_log_texts_logs_bodies_with_a_warning(encoder, caplog):
    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy

    caplog.set_level(logging.INFO, logger="bertkit.serve")
    app = create_app(encoder, access=AccessPolicy(log_texts=True))
    assert any(r.levelno == logging.WARNING and "--log-texts is on" in r.getMessage() for r in caplog.records)
    with thread_server(app) as srv:
        assert srv.post("/embed", {"texts": TEXTS}).status_code == 200
    assert SECRET in caplog.text and "POST /embed 200" in caplog.text and "key=-" in caplog.text

    caplog.clear()
    with thread_server(create_app(encoder)) as srv:  # the default: no texts
        assert srv.post("/embed", {"texts": TEXTS}).status_code == 200
    assert "POST /embed 200" in caplog.text and SECRET not in caplog.text
    assert not any("--log-texts" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------------------------
# CORS


def preflight(url: str, origin: str):
    return httpx.options(url + "/v1/embeddings", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"}, timeout=30)


def test_cors_is_closed_by_default_and_opened_per_origin(encoder):
    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy, KeyStore

    with thread_server(create_app(encoder)) as srv:
        r = preflight(srv.url, "https://app.example")
        assert r.status_code >= 400 and "access-control-allow-origin" not in r.headers
        # A POST from a page of another origin is refused before it runs (issue 29 row 9: test_security.py)
        r = srv.post("/embed", {"texts": ["x"]}, headers={"Origin": "https://app.example"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers

    access = AccessPolicy(KeyStore([KEY]), cors_origins=("https://app.example",))
    with thread_server(create_app(encoder, access=access)) as srv:
        r = preflight(srv.url, "https://app.example")  # answered before the key check: no key in a preflight
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-origin" not in preflight(srv.url, "https://evil.example").headers
        ok = srv.post("/embed", {"texts": ["x"]}, headers={"Origin": "https://app.example",
                                                           "Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        refused = srv.post("/embed", {"texts": ["x"]}, headers={"Origin": "https://app.example"})
        error_of(refused, 401, "missing_api_key")
        assert refused.headers["access-control-allow-origin"] == "https://app.example"  # the page sees why
