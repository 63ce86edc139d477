"""Whose fault an error is: user errors answer 4xx, bugs answer 500 with a request id and a logged traceback.
Also: request ids on every answer, metrics labels from the app's own routes, and the router without the app.

Each test runs the packaged model on a real uvicorn server in a thread, on a loopback port; a bug is made by
replacing one method of the real service or encoder.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import pytest
from support import error_of, thread_server

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

HEX_ID = re.compile(r"[0-9a-f]{32}")


def internal_error(r) -> str:
    """The request id of a 500 answer, after checking it is in the header, the body and the message."""
    assert r.status_code == 500, r.text
    rid = r.headers["x-request-id"]
    error = r.json()["error"]
    assert error["code"] == "internal_error" and error["type"] == "server_error", error
    assert error["request_id"] == rid and rid in error["message"], error
    return rid


def logged_traceback(caplog, rid: str, exc_type: type) -> logging.LogRecord:
    """The ERROR record naming request id `rid`, which must carry the exception's traceback."""
    records = [r for r in caplog.records if r.levelno >= logging.ERROR and rid in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    (record,) = records
    assert record.exc_info is not None and record.exc_info[0] is exc_type
    return record


@pytest.fixture
def app(encoder):
    from bertkit.serve import create_app

    return create_app(encoder)


def test_bug_in_a_route_is_500_with_request_id_and_logged_traceback(app, monkeypatch, caplog):
    """A plain ValueError is a bug, not the user's mistake (the old server answered it 400)."""

    def broken_info():
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(app.state.service, "info", broken_info)
    caplog.set_level(logging.ERROR)
    with thread_server(app) as srv:
        r = srv.get("/info")
        rid = internal_error(r)
        assert "ValueError" in r.json()["error"]["message"] and "a bug" not in r.json()["error"]["message"]
        record = logged_traceback(caplog, rid, ValueError)
        assert "broken_info" in caplog.text and "Traceback" in caplog.text, record
        assert srv.get("/health").status_code == 200  # still serving
        assert srv.metric('bertkit_errors_total{code="internal_error",route="/info"}') == 1
        assert srv.metric('bertkit_requests_total{route="/info",status="500"}') == 1


def test_bug_in_the_model_thread_fails_each_merged_request_with_its_own_id(app, encoder, monkeypatch, caplog):
    """A merged batch that fails is retried request by request; each failure is a 500 logged under its id."""

    def broken_encode(*args, **kwargs):
        return 1 / 0

    caplog.set_level(logging.ERROR)
    with thread_server(app) as srv:
        monkeypatch.setattr(encoder, "encode_poolings", broken_encode)  # what the batcher runs
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: srv.post("/embed", {"texts": [f"text {i}"]}), range(4)))
        ids = [internal_error(r) for r in answers]
        assert len(set(ids)) == 4
        for rid in ids:
            logged_traceback(caplog, rid, ZeroDivisionError)
        monkeypatch.undo()
        r = srv.post("/embed", {"texts": ["fine again"]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["embeddings"], encoder.encode(["fine again"]), atol=1e-5)


def test_user_errors_are_4xx_and_every_answer_has_a_request_id(app, caplog):
    caplog.set_level(logging.WARNING)
    with thread_server(app) as srv:
        r = srv.post("/embed", {"texts": ["x"], "pooling": "avg"}, headers={"X-Request-ID": "client-42.a:b"})
        assert "unknown pooling 'avg'" in error_of(r, 400, "invalid_value")  # OptionError keeps its code
        assert r.headers["x-request-id"] == "client-42.a:b"  # a sane client id is echoed
        assert "request_id" not in r.json()["error"]  # the documented 4xx body is unchanged
        error_of(srv.post("/embed", {"texts": ["ok", " "]}), 400, "invalid_input")
        error_of(srv.post("/fill-mask", {"text": "a [MASK]"}), 400, "missing_head")
        error_of(srv.post("/embed", {"texts": 5}), 422, "invalid_request_body")
        error_of(srv.get("/nope"), 404, "http_404")
        for bad in ("has spaces", "x" * 129, "new\u00e9line"):
            r = srv.get("/health", headers={"X-Request-ID": bad.encode("utf-8")})
            assert r.status_code == 200 and HEX_ID.fullmatch(r.headers["x-request-id"]), r.headers
        ok = [srv.get("/health").headers["x-request-id"] for _ in range(2)]
        assert all(HEX_ID.fullmatch(i) for i in ok) and ok[0] != ok[1]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # no traceback for users


def test_metrics_label_routes_from_the_app_itself(app):
    """A route added to the app is labelled by its path with no list to update; unknown paths are "other"."""

    @app.get("/extra")
    async def extra():
        return {"ok": True}

    with thread_server(app) as srv:
        assert srv.get("/extra").json() == {"ok": True}
        assert srv.get("/static/app.js").status_code == 200
        assert srv.get("/nope-1").status_code == srv.get("/nope-2").status_code == 404
        assert srv.get("/embed").status_code == 405  # the path is a route; the method is not
        assert srv.metric('bertkit_requests_total{route="/extra",status="200"}') == 1
        assert srv.metric('bertkit_requests_total{route="/static",status="200"}') == 1
        assert srv.metric('bertkit_requests_total{route="other",status="404"}') == 2
        assert srv.metric('bertkit_errors_total{code="http_405",route="/embed"}') == 1


def test_router_serves_on_a_bare_app_with_the_service_provided(encoder):
    """The handlers need no create_app: mount the router, provide a Service, call a route."""
    from fastapi import FastAPI

    from bertkit.serve.limits import Limits
    from bertkit.serve.routes import get_service, router
    from bertkit.serve.service import Service

    service = Service(encoder, Limits(max_inputs=4))

    @asynccontextmanager
    async def lifespan(_app):
        await service.start()
        yield
        await service.stop()

    bare = FastAPI(lifespan=lifespan)
    bare.include_router(router)
    bare.dependency_overrides[get_service] = lambda: service
    texts = ["A man is playing a guitar.", "Someone is playing an instrument."]
    with thread_server(bare) as srv:
        r = srv.post("/embed", {"texts": texts, "pooling": "cls", "normalize": True})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["embeddings"], encoder.encode(texts, pooling="cls", normalize=True),
                                   atol=1e-5)
        assert srv.get("/info").json()["limits"]["max_inputs"] == 4
