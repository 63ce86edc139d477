"""Issue 16 (hardening), the server's rows: each test sends exactly the input that broke the server.

A real uvicorn server in a thread runs the packaged model (and a three-text index, for /search). Rows:
1 lone surrogates, 2 repeated poolings, 3 repeated layers, 4 empty layers, 8 a 50 MB body, 9 a body that never
arrives, 12 texts with nothing to embed, 13 JSON Python cannot read and the error codes, 14 a small request
behind a huge one (in the batcher, with a stand-in model: the timing itself is bench/serve_load.py's).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import numpy as np
import pytest
from support import error_of, thread_server

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, encoder):
    from bertkit.corpus import CorpusJob, embed_corpus
    from bertkit.index.folder import build_index

    root = tmp_path_factory.mktemp("hardening-index")
    (root / "docs.txt").write_text("A man plays guitar.\nStocks fell.\nThe cat sat on the mat.\n", encoding="utf-8")
    embed_corpus(CorpusJob(root / "docs.txt", root / "emb"), encoder=encoder)
    return build_index(root / "emb", root / "idx")


@pytest.fixture(scope="module")
def server(encoder, index_dir):
    from bertkit.index.folder import Index
    from bertkit.serve import Limits, create_app

    app = create_app(encoder, Limits(body_timeout_s=BODY_TIMEOUT), index=Index.load(index_dir))
    with thread_server(app) as srv:
        yield srv


def post_raw(srv, path: str, body: bytes):
    """POST bytes as they are (a JSON escape such as \\ud800 stays an escape)."""
    return srv.post(path, content=body)


def raw_exchange(srv, request: bytes, wait: float = 30) -> tuple[bytes, float]:
    """Send raw bytes on a fresh connection; (everything the server sent until it closed, seconds taken)."""
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        start = time.monotonic()
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - start


# -- row 1: a lone surrogate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path, body, param", [
    ("/v1/embeddings", '{"input": ["\\ud800"]}', "input"),
    ("/embed", '{"texts": ["\\ud800"]}', "texts"),
    ("/tokens", '{"texts": ["\\ud800"]}', "texts"),
    ("/similarity", '{"texts": ["\\ud800", "ok"]}', "texts"),
    ("/search", '{"query": ["\\ud800"]}', "query"),
])
def test_row1_lone_surrogate_is_400_naming_the_text(server, path, body, param):
    r = post_raw(server, path, body.encode())
    assert "lone surrogate U+D800 at character 0" in error_of(r, 400, "invalid_input")
    assert r.json()["error"]["param"] == param


def test_row1_lone_surrogate_in_a_tei_body_gets_teis_error(server):
    r = post_raw(server, "/embed", b'{"inputs": ["\\ud800"]}')
    assert r.status_code == 413 and r.json()["error_type"] == "Validation" and "surrogate" in r.json()["error"]


# -- rows 2, 3, 4: poolings and layers -----------------------------------------------------------------------


def test_row2_repeated_poolings_are_computed_once(server, encoder):
    texts = [f"short text {i}" for i in range(256)]
    tokens = sum(len(e.ids) for e in encoder.tokenizer.encode(texts))
    for n in (2000, 500):
        r = server.post("/similarity", {"texts": texts, "poolings": ["mean"] * n})
        assert r.status_code == 200, r.text
        assert list(r.json()["matrices"]) == ["mean"] and r.json()["usage"]["tokens"] == tokens  # once, not n times
    assert server.get("/health").status_code == 200


def test_row2_too_many_distinct_poolings_is_413():
    from bertkit.serve.costs import unique_poolings
    from bertkit.serve.errors import ServeError
    from bertkit.serve.limits import Limits

    assert unique_poolings(["mean", "cls", "mean"], Limits()) == ["mean", "cls"]
    with pytest.raises(ServeError) as e:
        unique_poolings(["mean", "cls", "max"], Limits(max_poolings=2))
    assert (e.value.status, e.value.code, e.value.param) == (413, "max_poolings", "poolings")


def test_row2_a_refused_part_cancels_the_requests_other_parts():
    from bertkit.serve.costs import gather_or_cancel

    finished = []

    async def slow(i):
        await asyncio.sleep(0.5)
        finished.append(i)

    async def refused():
        raise RuntimeError("429")

    async def main():
        with pytest.raises(RuntimeError):
            await gather_or_cancel(slow(1), refused(), slow(2))
        await asyncio.sleep(0.7)

    asyncio.run(main())
    assert finished == []


def test_row3_layers_repeated_5000_times_is_refused_at_once(server):
    start = time.monotonic()
    r = server.post("/embed", {"texts": [f"text {i}" for i in range(32)], "layers": [0] * 5000})
    assert "hidden state 0 twice" in error_of(r, 400, "duplicate_layers") and r.json()["error"]["param"] == "layers"
    assert time.monotonic() - start < 10  # refused before the model, not after 52 s on it
    r = server.post("/embed", {"texts": ["hi"], "layers": [6, -1]})  # the same hidden state under two names
    assert "twice (as 6 and -1)" in error_of(r, 400, "duplicate_layers")


def test_row3_more_layers_than_max_layers_is_413():
    from bertkit.serve.costs import check_layers
    from bertkit.serve.errors import ServeError
    from bertkit.serve.limits import Limits

    with pytest.raises(ServeError) as e:
        check_layers([0, 1, 2], 7, Limits(max_layers=2))
    assert (e.value.status, e.value.code) == (413, "max_layers")


def test_row4_empty_layers_on_tokens_is_400_as_on_embed(server):
    for path, body in (("/tokens", {"texts": "hi", "layers": []}), ("/embed", {"texts": ["hi"], "layers": []})):
        r = server.post(path, body)
        assert r.status_code == 400 and "layer" in r.json()["error"]["message"], r.text
        assert r.json()["error"]["param"] == "layers"


# -- rows 8, 9: the body -------------------------------------------------------------------------------------


def test_row8_a_50_mb_body_is_413_before_it_is_read(server):
    head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n")
    answer, _ = raw_exchange(server, head + b'{"input": ["hi"], "junk": "' + b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413") and b'"code":"max_body_bytes"' in answer, answer[:300]
    assert b"52,428,800 bytes" in answer and b"max_body_bytes is 16,777,216" in answer
    assert server.get("/health").status_code == 200


def test_row8_a_streamed_body_over_the_limit_is_413(encoder):
    import httpx

    from bertkit.serve import Limits, create_app

    with thread_server(create_app(encoder, Limits(max_body_bytes=100_000))) as srv:
        def chunks():
            yield b'{"input": ["hi"], "junk": "'
            for _ in range(50):
                yield b"x" * 10_000
            yield b'"}'

        try:
            r = httpx.post(srv.url + "/v1/embeddings", content=chunks(), timeout=30)
        except httpx.TransportError:  # the server may close before the client has sent everything
            return
        error_of(r, 413, "max_body_bytes")


def test_row8_large_bodies_are_parsed_off_the_event_loop(server, monkeypatch):
    from bertkit.serve import bodylimit

    threads = []
    parse = bodylimit.parse_json

    def recording(body):
        threads.append(threading.current_thread().name)
        return parse(body)

    monkeypatch.setattr(bodylimit, "parse_json", recording)
    r = server.post("/v1/embeddings", {"input": ["hi"], "user": "x" * (bodylimit.OFF_LOOP_BYTES + 10)})
    assert r.status_code == 200 and len(threads) == 1 and "uvicorn" not in threads[0], threads
    assert threads[0] != threading.main_thread().name


def test_row9_a_body_that_never_arrives_is_408_and_the_connection_closed(server):
    answer, seconds = raw_exchange(server, b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n12345678")
    assert answer.startswith(b"HTTP/1.1 408") and b'"code":"body_timeout_s"' in answer, answer[:300]
    assert b"connection: close" in answer.lower()
    assert BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 10


def test_row9_tei_routes_answer_the_limits_in_teis_shape(server):
    answer, _ = raw_exchange(server, b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 413") and b'"error_type":"Validation"' in answer, answer[:300]


# -- row 12: nothing to embed --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\u200b\u200b\u200d", "\x00", "\x00\x00\x00", "\x01\x02\x7f", "\ufeff", "\u0301"])
def test_row12_texts_with_nothing_to_embed_are_refused_like_whitespace(server, text):
    for path, body in (("/embed", {"texts": ["ok", text]}), ("/v1/embeddings", {"input": ["ok", text]}),
                       ("/tokens", {"texts": ["ok", text]})):
        r = server.post(path, body)
        message = error_of(r, 400, "invalid_input")
        assert message.startswith(("text 1 ", "input 1 ")), message


def test_row12_the_library_refuses_them_too(encoder):
    from bertkit.errors import InputError

    for text in ("\u200b", "\x00", "\x07", "\u0301"):
        with pytest.raises(InputError, match="text 0"):
            encoder.encode([text])
    assert np.isfinite(encoder.encode(["caf\u00e9 \u200b au lait\x00"])).all()  # such characters inside a text are fine


# -- row 13: JSON Python cannot read; error codes ------------------------------------------------------------


def test_row13_json_nested_10000_deep_is_422_saying_so(server):
    r = post_raw(server, "/embed", b"[" * 10_000 + b"]" * 10_000)
    message = error_of(r, 422, "invalid_json")
    assert "nested too deeply" in message and "UTF-8" not in message
    assert server.get("/health").status_code == 200


def test_row13_a_5000_digit_number_is_422_saying_so(server):
    r = post_raw(server, "/v1/embeddings", b'{"input": ["hi"], "dimensions": ' + b"9" * 5000 + b"}")
    message = error_of(r, 422, "invalid_json")
    assert "more digits" in message and "UTF-8" not in message


def test_row13_bytes_that_are_not_utf8_are_named(server):
    assert "not UTF-8: byte 12 (0xff)" in error_of(post_raw(server, "/embed", b'{"texts": ["\xff"]}'), 422,
                                                   "invalid_json")


def test_row13_error_codes_are_snake_case_and_param_is_set(server):
    r = server.post("/embed", {"texts": ["ok", " "]})
    assert r.json()["error"]["code"] == "invalid_input" and r.json()["error"]["param"] == "texts"
    r = server.post("/fill-mask", {"text": "a [MASK]"})
    assert r.json()["error"]["code"] == "missing_head" and r.json()["error"]["param"] is not None
    r = server.post("/embed", {"texts": ["ok"], "pooling": "nope"})
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("invalid_value", "pooling")


# -- row 14: a small request behind a huge one ---------------------------------------------------------------


KEY = ("vectors", "mean")  # jobs with equal keys may share a forward pass


class StandIn:
    """A model whose run takes time in proportion to its tokens and records each call (on a runner stand-in
    whose thread count the batcher copies to its model thread)."""

    hidden_size = 4

    def __init__(self):
        self.calls: list[int] = []
        self.runner = self

    def threads(self) -> int:
        return 1

    def set_threads(self, n: int) -> None:
        pass

    def run(self, prepared, rows):
        self.calls.append(len(prepared))
        time.sleep(0.0001 * sum(prepared.tokens))
        return np.ones((len(prepared), self.hidden_size), np.float32)


def prepared_of(counts: list[int]):
    from bertkit.batching import Prepared

    return Prepared(["w"] * len(counts), [None] * len(counts), [], counts)


def test_row14_a_one_text_request_does_not_wait_behind_a_35k_token_request():
    from bertkit.serve.batcher import Batcher
    from bertkit.serve.limits import Limits
    from bertkit.serve.metrics import Metrics

    encoder = StandIn()
    limits = Limits(max_queued_tokens=65_536, split_tokens=1_024)
    batcher = Batcher(encoder, limits, Metrics())
    counts = [256] * 136 + [184]  # 35,000 tokens in 137 texts
    assert sum(counts) == 35_000
    done: list[str] = []

    async def big():
        out = await batcher.submit(KEY, prepared_of(counts), encoder.run)
        done.append("big")
        return out

    async def small():
        await asyncio.sleep(0.05)  # the huge request is queued and running
        out = await batcher.submit(KEY, prepared_of([3]), encoder.run)
        done.append(f"small after {len(encoder.calls)} model calls")
        return out

    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(big(), small())
        finally:
            await batcher.stop()

    big_out, small_out = asyncio.run(main())
    assert big_out.shape == (137, 4) and small_out.shape == (1, 4)
    assert done[1] == "big" and done[0] != "big", done  # the small request finished first
    assert int(done[0].split()[2]) <= 3, (done, encoder.calls)  # after at most a couple of pieces, not all 35
    assert max(encoder.calls) <= 4 and len(encoder.calls) >= 35, encoder.calls  # pieces of 1,024 tokens


# -- what /info reports, and the route classes ---------------------------------------------------------------


def test_info_reports_every_cost_limit(server):
    info = server.get("/info").json()
    for name in ("max_poolings", "max_layers", "max_body_bytes", "body_timeout_s", "split_tokens", "max_inputs",
                 "max_chars", "max_queued_tokens", "batch_tokens"):
        assert name in info["limits"], name
    assert info["costs"]["duplicate_layers"] == "refused"


def test_every_route_with_a_json_body_parses_it_off_the_loop(encoder):
    from fastapi.routing import APIRoute

    from bertkit.serve import create_app
    from bertkit.serve.bodylimit import JsonRoute
    from bertkit.serve.metrics import flat_routes

    routes = [r for r in flat_routes(create_app(encoder).routes) if isinstance(r, APIRoute) and r.body_field]
    assert len(routes) >= 15 and all(isinstance(r, JsonRoute) for r in routes), [r.path for r in routes]


def test_openapi_documents_the_error_bodies(server):
    spec = server.get("/openapi.json").json()
    assert {"Error", "TeiError"} <= set(spec["components"]["schemas"])
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert "4XX" in op["responses"] and "422" not in op["responses"], (path, method)
    assert json.dumps(spec["paths"]["/tokenize"]["post"]["responses"]["4XX"]).count("TeiError") == 1
