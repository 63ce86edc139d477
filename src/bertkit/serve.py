"""`bertkit serve`: embeddings and every other BERT output over HTTP, with dynamic batching.

    from bertkit.encoder import Encoder
    from bertkit.serve import Limits, create_app, run_server
    app = create_app(Encoder.load(), Limits(max_inputs=128))
    run_server(app, host="127.0.0.1", port=8000)

Routes: POST /v1/embeddings (OpenAI-compatible), /embed, /tokens, /similarity, /fill-mask, /nsp, /classify,
/ner; GET /health, /info, /metrics (Prometheus text), /v1/models, / (the playground page).

Concurrency model: one model copy, driven by one worker thread. Requests that want sentence vectors are put
in a queue; a batcher task on the event loop merges whatever is waiting (up to a token budget, after a short
wait) into one `Encoder.encode` call in the worker thread and hands each request its rows. Tokenization (for
limits and usage counts) runs in the thread pool, so the event loop only parses, routes and serializes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

from bertkit.encoder import Encoder, as_text_list
from bertkit.errors import BertkitError, OptionError
from bertkit.pooling import DEFAULT_PROMPT, POOLING_MODES, check_pooling, check_template

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SWITCH_INTERVAL_S = 0.0005


# ----------------------------------------------------------------------------------------------------------
# Limits and errors


@dataclass
class Limits:
    max_inputs: int = 256  # texts in one request -> 413
    max_chars: int = 20_000  # characters in one text -> 413
    max_queued_tokens: int = 65_536  # tokens accepted but not yet answered, all requests together -> 429
    batch_tokens: int = 8_192  # the batcher closes a model batch once this many tokens are in it
    max_wait_ms: float = 5.0  # how long a lone request waits for company before its batch runs
    encode_batch_size: int = 32  # rows per forward pass inside a merged batch (as offline `encode`)


class ServeError(BertkitError):
    """A request the server refuses; `code` names the limit or rule, `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes numpy arrays directly and is several times faster than json for long float lists.
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


BIG_RESPONSE_FLOATS = 200_000  # above this, serializing takes milliseconds: do it off the event loop


async def vectors_response(content: Any, floats: int) -> Response:
    """json_response for answers carrying `floats` numbers; large ones are serialized in the thread pool."""
    if floats <= BIG_RESPONSE_FLOATS:
        return json_response(content)
    return await run_in_threadpool(json_response, content)


def error_response(status: int, message: str, code: str, param: str | None = None, **extra: Any) -> Response:
    """OpenAI-style error body, so SDKs show the message: {"error": {"message", "type", "code", "param"}}."""
    kind = {413: "limit_exceeded", 429: "rate_limit_exceeded", 422: "invalid_request_error"}.get(status)
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    error = {"message": message, "type": kind, "code": code, "param": param, **extra}
    headers = {"Retry-After": "1"} if status == 429 else None
    return json_response({"error": error}, status, headers)


# ----------------------------------------------------------------------------------------------------------
# Request bodies. Strict: a number is not a string, "true" is not a boolean; unknown fields are refused (422).


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbedRequest(Strict):
    texts: str | list[str]
    pooling: str = "mean"
    layers: list[int] | None = None
    normalize: bool = False
    whiten: bool = False
    truncate: bool = True
    template: str | None = None


class OpenAIEmbeddingRequest(BaseModel):
    # Extra fields (e.g. "user" and future SDK fields) are accepted and ignored, as OpenAI's API does.
    model_config = ConfigDict(extra="ignore", strict=True)
    input: str | list[str]
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class TokensRequest(Strict):
    texts: str | list[str]
    layers: list[int] | None = None
    vectors: bool = True
    truncate: bool = True


class SimilarityRequest(Strict):
    texts: list[str] | None = None  # all pairs: an n x n matrix per pooling
    a: str | list[str] | None = None  # or pairwise: a[i] with b[i]
    b: str | list[str] | None = None
    poolings: list[str] = Field(default_factory=lambda: ["mean"])
    layers: list[int] | None = None
    truncate: bool = True


class FillMaskRequest(Strict):
    text: str
    top_k: int = Field(5, ge=1, le=100)


class NSPRequest(Strict):
    a: str | list[str]
    b: str | list[str]


class TextsRequest(Strict):
    texts: str | list[str]


class ClassifyRequest(Strict):
    texts: str | list[str]
    pairs: str | list[str] | None = None  # second texts, for a sentence-pair classifier


class SearchRequest(Strict):
    query: str | list[str]  # one query -> one list of hits; a list -> a list of lists
    k: int = Field(10, ge=1, le=1000)


# ----------------------------------------------------------------------------------------------------------
# Metrics


class Metrics:
    """Prometheus metrics in a registry of their own, so several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertkit_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.errors = Counter("bertkit_errors", "Error responses (4xx/5xx) by route and code", ["route", "code"], registry=r)
        self.latency = Histogram(
            "bertkit_request_latency_seconds", "Request latency by route", ["route"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_flight = Gauge("bertkit_requests_in_flight", "Requests being handled", registry=r)
        self.batch_size = Histogram(
            "bertkit_batch_size", "Texts per merged model batch", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.batch_tokens = Histogram(
            "bertkit_batch_tokens", "Tokens per merged model batch", registry=r,
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
        )
        self.model_seconds = Counter("bertkit_model_seconds", "Time the model thread spent on merged batches", registry=r)
        self.queue_depth = Gauge("bertkit_queue_depth", "Requests waiting for the model", registry=r)
        self.queued_tokens = Gauge("bertkit_queued_tokens", "Tokens accepted and not yet answered", registry=r)
        self.tokens = Counter("bertkit_tokens", "Tokens run through the model", registry=r)
        self.tokens_per_second = Gauge("bertkit_tokens_per_second", "Model tokens per second, last 10 s", registry=r)
        self._recent: deque[tuple[float, int]] = deque()
        self.tokens_per_second.set_function(self._rate)

    def add_tokens(self, n: int) -> None:
        self.tokens.inc(n)
        self._recent.append((time.monotonic(), n))

    def _rate(self, window: float = 10.0) -> float:
        cutoff = time.monotonic() - window
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        return sum(n for _, n in self._recent) / window


# ----------------------------------------------------------------------------------------------------------
# Dynamic batching


@dataclass
class Job:
    key: tuple  # requests with equal keys can share a forward pass: (pooling, layers, normalize, template, truncate)
    texts: list[str]
    tokens: int
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Merges concurrent `encode` requests into model batches bounded by a token budget and a short wait.

    All model work (batched or not) goes through `run`, i.e. one worker thread: one model copy, no two
    forward passes fighting over the cores, and the event loop never waits on the model.
    """

    def __init__(self, encoder: Encoder, limits: Limits, metrics: Metrics):
        self.encoder, self.limits, self.metrics = encoder, limits, metrics
        # torch's thread count is per OS thread: give the model thread the count set in this one (--threads).
        import torch

        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertkit-model",
                                           initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
        self.pending: deque[Job] = deque()
        self.accepted_tokens = 0  # accepted and not yet answered
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        # The model thread drops the GIL inside every torch op and must win it back after each one; with the
        # default 5 ms switch interval a busy event loop makes it wait up to 5 ms per op (a convoy).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="bertkit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self.pending:
            if not job.future.done():
                job.future.set_exception(ServeError("the server is shutting down", 503, "shutting_down"))
        self.executor.shutdown(wait=True)

    async def run(self, fn: Callable, *args, **kwargs):
        """Any model call, on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def encode(self, key: tuple, texts: list[str], tokens: int) -> np.ndarray:
        limit = self.limits.max_queued_tokens
        if self.accepted_tokens and self.accepted_tokens + tokens > limit:
            raise ServeError(
                f"server busy: {self.accepted_tokens} tokens queued, this request adds {tokens} and "
                f"max_queued_tokens is {limit}; retry shortly", 429, "max_queued_tokens",
            )
        job = Job(key, texts, tokens, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        self._account(tokens)
        self._wakeup.set()
        try:
            return await job.future
        finally:
            self._account(-tokens)

    def _account(self, tokens: int) -> None:
        self.accepted_tokens += tokens
        self.metrics.queued_tokens.set(self.accepted_tokens)
        self.metrics.queue_depth.set(len(self.pending))

    async def _loop(self) -> None:
        budget = self.limits.batch_tokens
        while True:
            if not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if sum(j.tokens for j in self.pending) < budget:
                await asyncio.sleep(self.limits.max_wait_ms / 1000)  # let concurrent requests join
            jobs, tokens = [], 0
            while self.pending and (not jobs or tokens + self.pending[0].tokens <= budget):
                job = self.pending.popleft()
                jobs.append(job)
                tokens += job.tokens
            self.metrics.queue_depth.set(len(self.pending))
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                try:
                    await self._run_group(key, group)
                except Exception as e:  # the batcher must outlive any one batch, or all requests hang
                    log.exception("batch failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)

    async def _run_group(self, key: tuple, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # the client may have gone away
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        start = time.perf_counter()
        try:
            vectors = await self.run(self._encode, key, texts)
        except Exception as e:  # noqa: BLE001 - one bad request must not fail the others it was merged with
            if len(jobs) > 1:
                for job in jobs:
                    await self._run_group(key, [job])
                return
            if not jobs[0].future.done():
                jobs[0].future.set_exception(e)
            return
        self.metrics.model_seconds.inc(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(texts))
        tokens = sum(j.tokens for j in jobs)
        self.metrics.batch_tokens.observe(tokens)
        self.metrics.add_tokens(tokens)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)

    def _encode(self, key: tuple, texts: list[str]) -> np.ndarray:
        pooling, layers, normalize, template, truncate = key
        return self.encoder.encode(
            texts, pooling=pooling, layers=list(layers) if layers else None, normalize=normalize,
            batch_size=self.limits.encode_batch_size, template=template, truncate=truncate,
        )


# ----------------------------------------------------------------------------------------------------------
# The app


class Service:
    """What the routes share: the encoder, limits, batcher, metrics and optional extras (whitening, index)."""

    def __init__(self, encoder: Encoder, limits: Limits, index: Any = None, whitening: Any = None,
                 heads: tuple[Any, Any] = (None, None)):
        self.encoder, self.limits, self.index, self.whitening = encoder, limits, index, whitening
        self.classifier, self.tagger = heads  # issue 4's Classifier / Tagger when the folder is fine-tuned
        self.metrics = Metrics()
        self.batcher = Batcher(encoder, limits, self.metrics)
        self.model_id = short_model_id(encoder)

    # -- validation ---------------------------------------------------------------------------------------

    def texts(self, texts: str | list[str], what: str = "text") -> list[str]:
        texts = as_text_list(texts, what)  # refuses empty / whitespace-only texts by position
        if not texts:
            raise ServeError(f"no {what}s given; send at least one", 400, "empty_input")
        if len(texts) > self.limits.max_inputs:
            raise ServeError(
                f"{len(texts)} inputs in one request; max_inputs is {self.limits.max_inputs}: split the request",
                413, "max_inputs",
            )
        for i, t in enumerate(texts):
            if len(t) > self.limits.max_chars:
                raise ServeError(
                    f"{what} {i} has {len(t)} characters; max_chars is {self.limits.max_chars}: shorten it",
                    413, "max_chars",
                )
        return texts

    def check_whitening(self, pooling: str, layers: list[int] | None) -> None:
        if self.whitening is None:
            raise ServeError("this server has no whitening; start it with `bertkit serve --whitening FILE.npz` "
                             "(make one with `bertkit whiten`)", 400, "no_whitening", "whiten")
        self.whitening.check_compatible(pooling, layers)

    def check_layers(self, layers: list[int] | None) -> None:
        n = self.encoder.model.config.num_hidden_layers + 1
        for i in layers or []:
            if not -n <= i < n:
                raise ServeError(f"layer {i} does not exist; this model has hidden states 0..{n - 1} (or -1..-{n})")

    def check_pooling(self, pooling: str, layers: list[int] | None) -> None:
        check_pooling(pooling, layers)
        if pooling == "pooler":
            self.encoder.model.require("pooler", "pooling='pooler'")
        self.check_layers(layers)

    async def count_tokens(self, texts: list[str], truncate: bool) -> tuple[list[int], list[int]]:
        """Tokens per text (after truncation) and the positions of truncated texts; off the event loop."""
        tokenizer = self.encoder.tokenizer

        def count():
            try:
                encodings = tokenizer.encode(texts, truncate=truncate)
            except BertkitError as e:  # truncate=false and a text is over the model's limit
                raise ServeError(str(e), 413, "max_length") from None
            return [len(e.ids) for e in encodings], [i for i, e in enumerate(encodings) if e.overflowing]

        return await run_in_threadpool(count)

    async def embed(
        self, texts: list[str], pooling: str, layers: list[int] | None, normalize: bool, template: str | None,
        truncate: bool,
    ) -> tuple[np.ndarray, int, list[int]]:
        """Vectors through the batcher; also the token count and the truncated positions."""
        self.check_pooling(pooling, layers)
        if template is not None:
            check_template(template, self.encoder.tokenizer.mask_token)
        counts, truncated = await self.count_tokens(texts, truncate)
        tokens = sum(counts)
        if tokens > self.limits.max_queued_tokens:
            raise ServeError(
                f"request has {tokens} tokens; max_queued_tokens is {self.limits.max_queued_tokens}: split it",
                413, "max_queued_tokens",
            )
        key = (pooling, tuple(layers) if layers else None, normalize, template or DEFAULT_PROMPT, truncate)
        return await self.batcher.encode(key, texts, tokens), tokens, truncated

    def info(self) -> dict:
        enc, model = self.encoder, self.encoder.model
        return {
            "model": enc.name,
            "id": self.model_id,
            "dimensions": enc.hidden_size,
            "max_length": enc.max_length,
            "layers": model.config.num_hidden_layers,
            "heads": {
                "pooler": model.has_pooler,
                "mlm": model.has_mlm,
                "nsp": model.has_nsp,
                "classification": self.classifier is not None,
                "ner": self.tagger is not None,
            },
            "labels": {
                "classification": self.classifier.labels if self.classifier is not None else None,
                "ner": self.tagger.labels if self.tagger is not None else None,
            },
            "whitening": None if self.whitening is None else {
                "path": self.whitening.meta.get("path"), "k": self.whitening.k, "pooling": self.whitening.pooling,
                "layers": self.whitening.layers,
            },
            "poolings": [p for p in POOLING_MODES if p != "pooler" or model.has_pooler],
            "default_prompt": DEFAULT_PROMPT,
            "limits": asdict(self.limits),
            "search": self.index is not None,
        }


def short_model_id(encoder: Encoder) -> str:
    """The name reported as `model` to OpenAI clients: the folder / hub id's last part."""
    if encoder.name.startswith("all-MiniLM-L6-v2"):
        return "all-MiniLM-L6-v2"
    return Path(encoder.name).name or encoder.name


ROUTES = {
    "/v1/embeddings", "/v1/models", "/embed", "/tokens", "/similarity", "/fill-mask", "/nsp", "/classify", "/ner",
    "/health", "/info", "/metrics", "/", "/search",
}


class MetricsMiddleware:
    """Counts requests, errors and latency per route (plain ASGI: cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else ("/static" if scope["path"].startswith("/static/") else "other")
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if scope["method"] == "POST":
            # Every POST body is JSON: read it as JSON whatever Content-Type says, so `curl -d '{...}'`
            # (which sends application/x-www-form-urlencoded) works as written.
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        counted = route not in ("/metrics", "/health")  # probes do not count as load
        if counted:
            self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if counted:
                self.metrics.in_flight.dec()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, str(status["code"])).inc()


def create_app(encoder: Encoder, limits: Limits | None = None, index: Any = None, whitening: Any = None,
               heads: tuple[Any, Any] | None = None) -> FastAPI:
    """The FastAPI app. `index` is the issue-7 search index (POST /search), None when not served;
    `whitening` a bertkit.whitening.Whitening for `/embed {"whiten": true}`; `heads` the (classifier, tagger)
    pair, found from the model folder's config.json when not given."""
    disable_created_metrics()  # the *_created series only add noise to /metrics
    heads = load_task_heads(encoder) if heads is None else heads
    service = Service(encoder, limits or Limits(), index, whitening, heads)
    metrics = service.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.batcher.start()
        log.info("serving %s (%d dims)", encoder.name, encoder.hidden_size)
        yield
        # uvicorn has already waited for in-flight requests (graceful shutdown) before this runs.
        await service.batcher.stop()

    app = FastAPI(title="bertkit", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service

    def fail(route: str, status: int, message: str, code: str, param: str | None = None, **extra) -> Response:
        metrics.errors.labels(route, code).inc()
        return error_response(status, message, code, param, **extra)

    def route_of(request: Request) -> str:
        return request.url.path if request.url.path in ROUTES else "other"

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, e: ServeError):
        return fail(route_of(request), e.status, str(e), e.code, e.param)

    @app.exception_handler(BertkitError)
    async def on_user_error(request: Request, e: BertkitError):
        code = "invalid_value" if isinstance(e, OptionError) else type(e).__name__  # the documented code
        return fail(route_of(request), 400, str(e), code)

    @app.exception_handler(ValueError)
    async def on_value_error(request: Request, e: ValueError):
        return fail(route_of(request), 400, str(e), "invalid_value")

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, e: RequestValidationError):
        errors = e.errors()
        details = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in errors]
        if any(err.get("type") == "json_invalid" for err in errors):
            detail = errors[0].get("ctx", {}).get("error", "")
            message = f"request body is not valid JSON ({detail}); send a JSON object" if detail else \
                "request body is not valid JSON; send a JSON object"
            return fail(route_of(request), 422, message, "invalid_json", "body", details=details)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        # A union (str | list[str]) reports one error per branch; name the field, not the branch.
        loc = [x for x in first["loc"] if x != "body" and x not in ("str", "list[str]", "int", "list[int]")]
        where = ".".join(str(x) for x in loc) or "body"
        return fail(route_of(request), 422, f"{where}: {first['msg']}", "invalid_request_body", where, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException):
        if e.status_code == 400 and "parsing the body" in str(e.detail):  # e.g. a body that is not UTF-8
            return fail(route_of(request), 422, "request body is not valid JSON (not UTF-8?); send a JSON object",
                        "invalid_json", "body")
        return fail(route_of(request), e.status_code, str(e.detail), f"http_{e.status_code}")

    @app.exception_handler(Exception)
    async def on_crash(request: Request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        return fail(route_of(request), 500, f"internal error ({type(e).__name__}); see the server log", "internal_error")

    # -- embeddings --------------------------------------------------------------------------------------

    @app.post("/v1/embeddings")
    async def openai_embeddings(req: OpenAIEmbeddingRequest):
        texts = service.texts(req.input, "input")
        dims = req.dimensions
        if dims is not None and not 1 <= dims <= encoder.hidden_size:
            raise ServeError(f"dimensions must be between 1 and {encoder.hidden_size}, got {dims}", 400,
                             "invalid_dimensions", "dimensions")
        vectors, tokens, truncated = await service.embed(texts, "mean", None, True, None, True)
        if dims is not None and dims < vectors.shape[1]:
            # Matryoshka-style truncation as OpenAI does it: keep the first dims, then re-normalise.
            vectors = vectors[:, :dims]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if req.encoding_format == "base64":
            vectors = np.ascontiguousarray(vectors, dtype="<f4")
            data = [
                {"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode("ascii")}
                for i, v in enumerate(vectors)
            ]
        else:
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        # `truncated` (positions of inputs cut to the model's limit) is ours; OpenAI clients ignore extra fields.
        out = {"object": "list", "data": data, "model": service.model_id, "usage": usage, "truncated": truncated}
        return await vectors_response(out, vectors.size)

    @app.get("/v1/models")
    async def openai_models():
        model = {"id": service.model_id, "object": "model", "created": 0, "owned_by": "bertkit"}
        return json_response({"object": "list", "data": [model]})

    @app.post("/embed")
    async def embed(req: EmbedRequest):
        texts = service.texts(req.texts)
        if req.whiten:
            service.check_whitening(req.pooling, req.layers)
        vectors, tokens, truncated = await service.embed(  # whitening takes raw vectors and normalises after
            texts, req.pooling, req.layers, req.normalize and not req.whiten, req.template, req.truncate
        )
        if req.whiten:
            vectors = service.whitening.apply(vectors, normalize=req.normalize)
        return await vectors_response({
            "embeddings": vectors,
            "dimensions": int(vectors.shape[1]),
            "pooling": req.pooling,
            "normalized": req.normalize,
            "whitened": req.whiten,
            "truncated": truncated,
            "usage": {"tokens": tokens},
        }, vectors.size)

    @app.post("/similarity")
    async def similarity(req: SimilarityRequest):
        if (req.texts is None) == (req.a is None and req.b is None):
            raise ServeError("send either texts (all pairs) or a and b (pairwise), not both or neither", 400, "bad_shape")
        if req.texts is not None:
            texts = service.texts(req.texts)
        else:
            if req.a is None or req.b is None:
                raise ServeError("pairwise similarity needs both a and b", 400, "bad_shape")
            a, b = as_text_list(req.a), as_text_list(req.b, "second text")
            if len(a) != len(b):
                raise ServeError(f"got {len(a)} texts in a but {len(b)} in b; pairs must match", 400, "bad_shape")
            texts = service.texts(a + b)
        if not req.poolings:
            raise ServeError("poolings is empty; name at least one, e.g. [\"mean\"]", 400, "bad_pooling")
        for p in req.poolings:
            service.check_pooling(p, req.layers)
        results = await asyncio.gather(
            *(service.embed(texts, p, req.layers, True, None, req.truncate) for p in req.poolings)
        )
        out: dict[str, Any] = {"truncated": results[0][2], "usage": {"tokens": sum(r[1] for r in results)}}
        if req.texts is not None:
            out["matrices"] = {p: (v @ v.T).clip(-1, 1) for p, (v, _, _) in zip(req.poolings, results)}
        else:
            n = len(texts) // 2
            out["scores"] = {p: (v[:n] * v[n:]).sum(1).clip(-1, 1) for p, (v, _, _) in zip(req.poolings, results)}
        return json_response(out)

    # -- search over a corpus index (issue 7) ------------------------------------------------------------

    @app.post("/search")
    async def search(req: SearchRequest):
        index = service.index
        if index is None:
            raise ServeError("this server has no index; start it with `bertkit serve --index INDEX`", 404, "no_index")
        queries = service.texts(req.query, "query")
        e = index.info["embedding"]  # queries are encoded exactly as the corpus was
        vectors, tokens, truncated = await service.embed(queries, e["pooling"], None, e["normalize"], None, True)
        scores, positions = await run_in_threadpool(index.search_vectors, vectors, req.k)

        def hits() -> list[list[dict]]:  # texts not stored in the index are read back from the corpus input
            return [[h.as_dict() for h in index.fill_texts(index.hits(s, p))] for s, p in zip(scores, positions)]

        results = await run_in_threadpool(hits)
        return json_response({
            "results": results[0] if isinstance(req.query, str) else results,
            "index": {"kind": index.kind, "metric": index.info["metric"], "size": len(index)},
            "truncated": truncated,
            "usage": {"tokens": tokens},
        })

    # -- other outputs (not batched across requests; still on the model thread) -------------------------

    @app.post("/tokens")
    async def tokens(req: TokensRequest):
        texts = service.texts(req.texts)
        service.check_layers(req.layers)
        counts, truncated = await service.count_tokens(texts, req.truncate)
        results = await service.batcher.run(encoder.encode_tokens, texts, layers=req.layers, truncate=req.truncate)
        metrics.add_tokens(sum(counts))
        items = []
        for tv in results:
            item: dict[str, Any] = {"tokens": tv.tokens, "offsets": [list(o) for o in tv.offsets]}
            if req.vectors:
                item["vectors"] = tv.vectors
            items.append(item)
        floats = sum(tv.vectors.size for tv in results) if req.vectors else 0
        return await vectors_response({"results": items, "truncated": truncated, "usage": {"tokens": sum(counts)}}, floats)

    @app.post("/fill-mask")
    async def fill_mask(req: FillMaskRequest):
        encoder.model.require("mlm", "fill-mask")
        (text,) = service.texts([req.text])
        preds = await service.batcher.run(encoder.fill_mask, text, top_k=req.top_k)
        return json_response({
            "masks": [[{"token": t, "score": p} for t, p in per_mask] for per_mask in preds],
        })

    @app.post("/nsp")
    async def nsp(req: NSPRequest):
        encoder.model.require("nsp", "next-sentence prediction")
        a, b = service.texts(req.a), service.texts(req.b, "second text")
        if len(a) != len(b):
            raise ServeError(f"got {len(a)} texts in a but {len(b)} in b; pairs must match", 400, "bad_shape")
        probs = await service.batcher.run(encoder.next_sentence, a, b)
        return json_response({"probabilities": np.asarray(probs, dtype=np.float64)})

    @app.post("/classify")
    async def classify(req: ClassifyRequest):
        texts = service.texts(req.texts)
        pairs = service.texts(req.pairs, "second text") if req.pairs is not None else None
        if pairs is not None and len(pairs) != len(texts):
            raise ServeError(f"got {len(texts)} texts but {len(pairs)} pairs; they must match", 400, "bad_shape")
        clf = service.classifier
        if clf is None:
            raise ServeError("model has no classification head; serve a folder made by `bertkit train classify`",
                             400, "no_classification_head")
        preds = await service.batcher.run(clf.predict, texts, pairs)
        if clf.regression:
            return json_response({"predictions": [{"score": p} for _, p in preds]})
        return json_response({"predictions": [{"label": lab, "probability": p} for lab, p in preds]})

    @app.post("/ner")
    async def ner(req: TextsRequest):
        texts = service.texts(req.texts)
        if service.tagger is None:
            raise ServeError("model has no token-classification (NER) head; serve a folder made by `bertkit train ner`",
                             400, "no_ner_head")
        return json_response({"entities": await service.batcher.run(service.tagger.entities, texts)})

    # -- operations ----------------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return json_response({"status": "ok", "model": service.model_id})

    @app.get("/info")
    async def info():
        return json_response(service.info())

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def playground():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def load_task_heads(encoder: Encoder) -> tuple[Any, Any]:
    """(classifier, tagger): issue 4's predictors when the served folder is a fine-tuned classifier or token
    classifier (config.json `architectures`), else None. They hold their own copy of the weights."""
    from bertkit.predict import Classifier, Tagger, load_predictor

    predictor = load_predictor(encoder.path, device=str(encoder.device))
    return (predictor if isinstance(predictor, Classifier) else None,
            predictor if isinstance(predictor, Tagger) else None)


def _version() -> str:
    from bertkit import __version__

    return __version__


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for the model. On a machine shared with other busy processes, fewer threads than
    cores is much faster: intra-op threads wait for each other at every op, and a descheduled one stalls all."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, graceful_timeout: float = 30.0,
               log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests are finished (up to graceful_timeout seconds)."""
    import os

    import uvicorn

    # Requests are tokenized a few texts at a time; the tokenizer's worker threads would only spin and take
    # cores from the model thread. An explicit TOKENIZERS_PARALLELISM in the environment still wins.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=graceful_timeout, access_log=False)
    uvicorn.Server(config).run()
