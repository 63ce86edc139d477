"""Per-key quotas: requests and tokens per window (a minute unless told otherwise), as token buckets.

A bucket holds up to `limit` units and refills continuously at `limit / window` units per second, so a key may
spend its whole quota at once and then gets it back at the stated rate; a full window of rest refills it. The
request bucket is charged by the auth middleware before a request runs (one unit); the token bucket by the
service once it has counted a request's tokens, before the model runs (`charge_tokens`), through the caller
that the middleware put in a context variable. Routes that count no tokens (fill-mask, nsp, classify, ner)
spend requests only.
"""

from __future__ import annotations

import math
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from bertkit.serve.errors import ServeError

DEFAULT_WINDOW_S = 60.0


@dataclass(frozen=True)
class Quota:
    """Requests and tokens per window (None: unlimited). `window` is 60 s (per minute) but for tests."""

    requests: int | None = None
    tokens: int | None = None
    window: float = DEFAULT_WINDOW_S

    def __bool__(self) -> bool:
        return self.requests is not None or self.tokens is not None


class TokenBucket:
    """`limit` units per `window` seconds, refilled continuously. Thread-safe (the lock is uncontended)."""

    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.level = float(limit)
        self.stamp = clock()
        self.lock = threading.Lock()

    def configure(self, limit: int, window: float) -> None:
        """A new limit (a reloaded key file): what was spent stays spent, the level is capped at the new limit."""
        with self.lock:
            self._refill()
            self.limit, self.window = limit, window
            self.level = min(self.level, float(limit))

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(float(self.limit), self.level + (now - self.stamp) * self.limit / self.window)
        self.stamp = now

    def take(self, n: int = 1) -> float:
        """Spend n units: 0.0 when they were there, else the seconds until they will be (nothing is spent)."""
        with self.lock:
            self._refill()
            if self.level >= n:
                self.level -= n
                return 0.0
            return (n - self.level) * self.window / self.limit


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(seconds))


class KeyMetrics:
    """Per-key counters in the app's registry, labelled by key name (never the key)."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("bertkit_key_requests", "Requests by API key name and status", ["key", "status"],
                                registry=registry)
        self.tokens = Counter("bertkit_key_tokens", "Tokens charged to an API key's quota, by key name", ["key"],
                              registry=registry)
        self.refused = Counter("bertkit_key_quota_refusals", "Requests refused by a key's quota (429), by key "
                               "name and quota", ["key", "quota"], registry=registry)
        self.auth_failures = Counter("bertkit_auth_failures", "Requests refused for a missing or wrong API key",
                                     ["reason"], registry=registry)


class Caller:
    """One authenticated key's quota state: its request and token buckets (None: unlimited)."""

    def __init__(self, name: str, quota: Quota, metrics: KeyMetrics | None = None):
        self.name, self.metrics = name, metrics
        self.quota = quota
        self.requests = TokenBucket(quota.requests, quota.window) if quota.requests is not None else None
        self.tokens = TokenBucket(quota.tokens, quota.window) if quota.tokens is not None else None

    def reconfigure(self, name: str, quota: Quota) -> None:
        """The key's entry after a reload: keep what was spent, apply the new limits."""
        self.name = name
        self.requests = _rebucket(self.requests, quota.requests, quota.window)
        self.tokens = _rebucket(self.tokens, quota.tokens, quota.window)
        self.quota = quota

    def take_request(self) -> None:
        """Spend one request, or raise a 429 naming the quota."""
        if self.requests is None:
            return
        wait = self.requests.take(1)
        if wait:
            self._refuse("requests", f"API key '{self.name}' has used its {self.quota.requests} requests per "
                         f"{_per(self.quota.window)}", wait)

    def take_tokens(self, n: int) -> None:
        """Spend n tokens: 413 when one request needs more than the whole quota, 429 when it is spent."""
        if self.tokens is not None:
            if n > self.tokens.limit:
                raise ServeError(f"request has {n} tokens; API key '{self.name}' may use {self.tokens.limit} tokens "
                                 f"per {_per(self.quota.window)}: split the request", 413, "tokens_per_minute")
            wait = self.tokens.take(n)
            if wait:
                self._refuse("tokens", f"API key '{self.name}' has used its {self.quota.tokens} tokens per "
                             f"{_per(self.quota.window)} (this request needs {n})", wait)
        if self.metrics is not None:
            self.metrics.tokens.labels(self.name).inc(n)

    def _refuse(self, quota: str, message: str, wait: float) -> None:
        if self.metrics is not None:
            self.metrics.refused.labels(self.name, quota).inc()
        seconds = retry_after(wait)
        raise ServeError(f"{message}; retry in {seconds} s", 429, f"{quota}_per_minute", retry_after=seconds)


def _rebucket(bucket: TokenBucket | None, limit: int | None, window: float) -> TokenBucket | None:
    if limit is None:
        return None
    if bucket is None:
        return TokenBucket(limit, window)
    bucket.configure(limit, window)
    return bucket


def _per(window: float) -> str:
    return "minute" if window == DEFAULT_WINDOW_S else f"{window:g} s"


# The caller of the request being handled (set by the auth middleware; None when keys are off).
CURRENT_CALLER: ContextVar[Caller | None] = ContextVar("bertkit_caller", default=None)


def charge_tokens(n: int) -> None:
    """Charge n tokens to the current request's key (no-op when the server has no keys)."""
    caller = CURRENT_CALLER.get()
    if caller is not None:
        caller.take_tokens(n)
