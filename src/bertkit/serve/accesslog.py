"""Request logs that keep texts private.

One line per request on the `bertkit.serve.access` logger (INFO; /health probes at DEBUG):

    POST /v1/embeddings 200 in=164B out=2210B 12.4ms key=alice id=5f0c...

method, route (the route's pattern, never the query string), status, request and response body sizes, latency,
the API key's name (`-` without keys) and the request id. Never the texts, the headers or the key: request
bodies are logged only with `log_texts=True` (`bertkit serve --log-texts`, for debugging; a warning says so at
start), at most LOG_TEXT_CHARS characters of each.
"""

from __future__ import annotations

import logging
import time

from bertkit.serve.metrics import chosen_route, declared_route

log = logging.getLogger("bertkit.serve.access")

LOG_TEXT_CHARS = 2000
QUIET = ("/health",)  # probes: logged at debug only


class AccessLogMiddleware:
    """Logs each HTTP request after its answer. Plain ASGI; it never copies the scope."""

    def __init__(self, app, log_texts: bool = False):
        self.app, self.log_texts = app, log_texts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        declared = declared_route(scope)  # before routing: a mount rewrites the scope's root_path
        size_in = size_out = 0
        status = 500
        body: list[bytes] = []

        async def counting_receive():
            nonlocal size_in
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                size_in += len(chunk)
                if self.log_texts and sum(map(len, body)) < LOG_TEXT_CHARS * 4:
                    body.append(chunk)
            return message

        async def counting_send(message):
            nonlocal size_out, status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size_out += len(message.get("body", b""))
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            state = scope.get("state", {})
            route = chosen_route(scope) or declared or "other"
            ms = (time.perf_counter() - start) * 1000
            level = logging.DEBUG if route in QUIET else logging.INFO
            log.log(level, "%s %s %d in=%dB out=%dB %.1fms key=%s id=%s", scope["method"], route, status, size_in,
                    size_out, ms, state.get("key_name", "-"), state.get("request_id", "-"))
            if self.log_texts and body:
                text = b"".join(body).decode("utf-8", "replace")[:LOG_TEXT_CHARS]
                log.info("body of %s: %s", state.get("request_id", "-"), text)

