"""Prometheus metrics (GET /metrics) and the middleware that counts requests, errors and latency per route."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Match


class Metrics:
    """Prometheus metrics in a registry of their own, so several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertkit_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.errors = Counter("bertkit_errors", "Error responses (4xx/5xx) by route and code", ["route", "code"],
                              registry=r)
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
        self.model_seconds = Counter("bertkit_model_seconds", "Time the model threads spent on merged batches, "
                                     "summed (two threads with the model in a child process: up to 2 s a second)",
                                     registry=r)
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


UNCOUNTED = ("/metrics", "/health")  # probes do not count as load


def declared_route(scope: dict) -> str | None:
    """The path of the app route (or mount) whose pattern matches this request, among those with a path;
    the routes of included routers too, so a request refused before routing (a 401) is labelled by its route."""
    for route in flat_routes(getattr(scope.get("app"), "routes", ())):
        if hasattr(route, "path") and route.matches(scope)[0] is not Match.NONE:  # PARTIAL: a 405
            return route.path
    return None


def flat_routes(routes):
    """Routes, with those of an included router (FastAPI lists them as one group) in its place."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from flat_routes(inner.routes) if inner is not None else (route,)


def chosen_route(scope: dict) -> str | None:
    """The path of the route the router recorded in the scope as serving this request (FastAPI routes)."""
    route = scope.get("route")
    return getattr(route, "path", None)


class MetricsMiddleware:
    """Counts requests, errors and latency per route (plain ASGI: cheaper than BaseHTTPMiddleware).

    Route labels come from the app's own routes, so a route added anywhere is labelled with no list to keep in
    step: the route the router recorded in the scope (FastAPI's routes, included from an APIRouter, which
    `app.routes` shows only as a group), else the route or mount (/static, /docs) whose pattern matches,
    else "other". So no middleware inside this one may copy the scope. Errors are counted by the
    `error_code` that the error answer left in the request's state."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        status = 500  # what the client sees when nothing was sent

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        declared = declared_route(scope)  # before routing: a mount rewrites the scope's root_path
        counted = scope["path"] not in UNCOUNTED
        if counted:
            self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if counted:
                self.metrics.in_flight.dec()
            route = chosen_route(scope) or declared or "other"
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route, state.get("error_code", f"http_{status}")).inc()
