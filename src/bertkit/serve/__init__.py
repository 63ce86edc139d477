"""`bertkit serve`: embeddings and every other BERT output over HTTP, with dynamic batching.

    from bertkit.encoder import Encoder
    from bertkit.serve import Limits, create_app, run_server
    app = create_app(Encoder.load(), Limits(max_inputs=128))
    run_server(app, host="127.0.0.1", port=8000)

Routes: POST /v1/embeddings (OpenAI-compatible), /embed, /tokens, /similarity, /fill-mask, /nsp, /classify,
/ner, /search; GET /health, /info, /metrics (Prometheus text), /v1/models, / (the playground page). TEI's API
(text-embeddings-inference): POST /, /embed_all, /tokenize, /decode, and TEI's body on /embed (tei.py).

Concurrency model: one model copy, driven by one worker thread. Requests that want sentence vectors are put
in a queue; a batcher task on the event loop merges whatever is waiting (up to a token budget, after a short
wait while the model is busy) into one `Encoder.encode` call in the worker thread and hands each request its
rows. Tokenization (for limits and usage counts) runs in the thread pool, so the event loop only parses,
routes and serializes.

The package, in the order a request meets it:
    schemas.py   request bodies (pydantic) and JSON responses
    routes.py    the handlers: one function per route, on an APIRouter
    tei.py       TEI's request bodies, error body and adapters; tei_routes.py: TEI's own routes
    service.py   what each route does with the encoder (validation, limits, heads, whitening, index)
    batcher.py   the queue that merges requests into model batches on the model thread
    errors.py    ServeError, the error body, exception handlers, request ids and 500s
    metrics.py   Prometheus metrics and the per-route counting middleware
    limits.py    Limits, the server's knobs
    origin.py    CORS, the Host names answered, cross-origin simple POSTs refused
    auth.py      API keys (AccessPolicy, KeyStore, the key check, operator routes, SIGHUP)
    quota.py     per-key quotas: token buckets for requests and tokens per minute, per-key metrics
    accesslog.py one log line per request (never the texts)
    headlimit.py the request head's bound (431), in uvicorn's HTTP protocol
    linger.py    that protocol's lingering close, so an answer sent before the request was read is not lost
    tls.py       checking a certificate and key before the server starts
    app.py       create_app, run_server, server_config, set_threads
    ray_engine.py  `bertkit serve --engine ray`: the same app as a Ray Serve deployment (imported lazily)
"""

from __future__ import annotations

from bertkit.serve.app import create_app, run_server, server_config, set_threads
from bertkit.serve.limits import Limits

__all__ = ["Limits", "create_app", "run_server", "server_config", "set_threads"]
