"""Putting the server together: `create_app` (service + routes + error handling + metrics) and `run_server`."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import disable_created_metrics

from bertkit import __version__
from bertkit.serve.accesslog import AccessLogMiddleware
from bertkit.serve.auth import AccessPolicy, install_auth, unwatch_sighup, watch_sighup
from bertkit.serve.bodylimit import install_body_limits
from bertkit.serve.errors import RequestIdMiddleware, install_error_handlers
from bertkit.serve.inside_routes import inside_router
from bertkit.serve.limits import Limits
from bertkit.serve.metrics import MetricsMiddleware
from bertkit.serve.openapi import document_errors
from bertkit.serve.origin import install_cors, install_origin_guard
from bertkit.serve.routes import STATIC_DIR, router
from bertkit.serve.service import Service, load_task_heads
from bertkit.serve.tei_rerank import retrieval_router
from bertkit.serve.tei_routes import tei_router

if TYPE_CHECKING:
    from bertkit.encoder import Encoder

log = logging.getLogger(__name__)


def create_app(encoder: Encoder, limits: Limits | None = None, index: Any = None, whitening: Any = None,
               heads: tuple[Any, Any] | None = None, access: AccessPolicy | None = None) -> FastAPI:
    """The FastAPI app. `index` is a bertkit.index.folder search index (POST /search), None when not served;
    `whitening` a bertkit.vectors.whitening.Whitening for `/embed {"whiten": true}`; `heads` the (classifier, tagger)
    pair, found from the model folder's config.json when not given; `access` the API keys, CORS origins and
    text logging (default: no keys, CORS closed, texts not logged)."""
    access = access or AccessPolicy()
    disable_created_metrics()  # the *_created series only add noise to /metrics
    heads = load_task_heads(encoder) if heads is None else heads
    service = Service(encoder, limits or Limits(), index, whitening, heads)
    app = FastAPI(title="bertkit", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.include_router(router)
    app.include_router(tei_router)  # TEI's own routes (POST /, /embed_all, ...); its /embed is router's
    app.include_router(retrieval_router)  # TEI's /embed_sparse and /rerank
    app.include_router(inside_router)  # the playground's look inside: /attention, /layers, /model, /report
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_handlers(app)
    document_errors(app)  # the OpenAPI schema shows the error bodies the server really sends
    # The last added runs first. The body is read (under its limits) only once the Host, the Origin and the
    # key have passed, all inside RequestIdMiddleware: their refusals get request ids, metrics and logs.
    # Metrics see every answer, RequestIdMiddleware's 500s included; JsonBodies copies the scope, so it runs
    # before MetricsMiddleware, which reads the route the router writes into it.
    install_body_limits(app, service.limits)
    install_auth(app, access, service.metrics.registry)
    install_origin_guard(app, access.allowed_hosts, access.cors_origins)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    app.add_middleware(AccessLogMiddleware, log_texts=access.log_texts)
    app.add_middleware(JsonBodies)
    install_cors(app, access.cors_origins)  # outermost: preflights are answered before the key check
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    service: Service = app.state.service
    await service.start()
    watching = watch_sighup(getattr(app.state, "keys", None))  # SIGHUP re-reads the keys file (if any)
    log.info("serving %s (%d dims)", service.encoder.name, service.encoder.hidden_size)
    yield
    if watching:
        unwatch_sighup()
    # uvicorn has already waited for in-flight requests (graceful shutdown) before this runs.
    await service.stop()


class JsonBodies:
    """Every POST body is JSON: read it as JSON whatever Content-Type says, so `curl -d '{...}'` (which sends
    application/x-www-form-urlencoded) works as written."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def set_threads(threads: int | None) -> None:
    """The model's CPU threads, for every runner opened after this (the batcher's model thread copies the
    runner's count). On a machine shared with other busy processes, fewer threads than cores is much faster:
    intra-op threads wait for each other at every op, and a descheduled one stalls all."""
    if threads is not None:
        from bertkit.runtime.seam import set_default_threads

        set_default_threads(threads)


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, **options: Any):
    """The uvicorn.Config bertkit serves with: `options` (uvicorn's) over bertkit's HTTP protocol, whose request
    head is bounded by MAX_HEAD_BYTES (16 KiB, answered 431 as it arrives) and whose connections close with a
    lingering close when request bytes are unread (headlimit.py, linger.py)."""
    import uvicorn

    from bertkit.serve.headlimit import MAX_HEAD_BYTES, http_protocol

    return uvicorn.Config(app, host=host, port=port, http=http_protocol(), h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                          **options)


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, graceful_timeout: float = 30.0,
               log_level: str = "info", ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
               sock: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests are finished (up to graceful_timeout seconds).
    With ssl_certfile (and ssl_keyfile) it serves https; check the pair first with `serve.tls.check_tls`.
    `sock`: a socket already bound to host:port (`serve.listen.bind_port`), so a busy port fails early.
    Request logs (`bertkit.serve.access`) follow log_level: one line per request at info and debug.
    The HTTP protocol is `server_config`'s."""
    import os

    import uvicorn

    # Requests are tokenized a few texts at a time; the tokenizer's worker threads would only spin and take
    # cores from the model thread. An explicit TOKENIZERS_PARALLELISM in the environment still wins.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    level = logging.getLevelName(log_level.upper())
    logging.getLogger("bertkit.serve.access").setLevel(level if isinstance(level, int) else logging.INFO)
    config = server_config(app, host, port, log_level=log_level, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                           timeout_graceful_shutdown=graceful_timeout, access_log=False)
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
