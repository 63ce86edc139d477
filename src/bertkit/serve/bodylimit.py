"""Reading request bodies safely: a size limit (413), a time limit (408), and JSON parsed off the event loop.

`BodyLimitMiddleware` reads a POST body whole before the app sees it: a `Content-Length` over
`Limits.max_body_bytes` is refused before a byte is read, a body that grows past it while streaming is refused
as soon as it does, and a body that does not arrive within `Limits.body_timeout_s` (a client that announces
100 bytes and sends 8) is answered 408 and its connection closed. The app then gets the body from memory.

`JsonRoute` is the route class of every route that reads a JSON body: a large body is parsed in the thread
pool, so one 16 MB request cannot stall `/health` and every other request on the event loop, and JSON that
Python's parser cannot take (nested thousands deep, a number of thousands of digits, bytes that are not
UTF-8) is refused as a 422 naming what is wrong, instead of a generic parse error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bertkit.serve.errors import fail
from bertkit.serve.limits import Limits
from bertkit.serve.metrics import flat_routes

log = logging.getLogger(__name__)

OFF_LOOP_BYTES = 64 * 1024  # bodies at least this big are parsed in the thread pool
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyTooLarge(Exception):
    pass


def declared_length(scope: dict) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body(receive: Callable, limit: int) -> bytes | None:
    """The whole body, or None when the client went away; BodyTooLarge once it passes `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyLimitMiddleware:
    """Plain ASGI: the body is read here, under the size and time limits, then replayed to the app.
    `error_bodies`: path -> error writer, for the routes of another API (TEI's), refused in that API's shape."""

    def __init__(self, app, limits: Limits, error_bodies: dict[str, Callable] | None = None):
        self.app, self.limits, self.error_bodies = app, limits, error_bodies or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        limit = self.limits.max_body_bytes
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            return await self.refuse(scope, receive, send, 413, self.too_large(f"{declared:,} bytes"))
        try:
            body = await asyncio.wait_for(read_body(receive, limit), self.limits.body_timeout_s)
        except BodyTooLarge:
            return await self.refuse(scope, receive, send, 413, self.too_large(f"more than {limit:,} bytes"))
        except asyncio.TimeoutError:
            message = (f"the request body did not arrive within body_timeout_s ({self.limits.body_timeout_s:g} s); "
                       "send the whole body at once (and a Content-Length that matches it)")
            return await self.refuse(scope, receive, send, 408, message, "body_timeout_s")
        if body is None:  # the client disconnected: nobody to answer
            return None
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the disconnect, as the server's own receive does

        await self.app(scope, replay, send)

    def too_large(self, size: str) -> str:
        return (f"the request body has {size}; max_body_bytes is {self.limits.max_body_bytes:,}: send fewer or "
                "shorter texts per request")

    async def refuse(self, scope, receive, send, status: int, message: str, code: str = "max_body_bytes") -> None:
        writer = self.error_bodies.get(scope["path"])
        if writer is not None:  # what `errors.fail` answers with (tei.speak_tei sets the same)
            scope.setdefault("state", {})["error_body"] = writer
        response = fail(scope, status, message, code, "body")
        response.headers["Connection"] = "close"  # the rest of the body is never read: do not reuse the connection
        await response(scope, receive, send)


# ----------------------------------------------------------------------------------------------------------
# JSON off the event loop, with clear refusals


def parse_json(body: bytes) -> Any:
    """json.loads, with the failures Python's parser reports as other errors turned into JSONDecodeError (which
    FastAPI answers 422 `invalid_json`) saying what is wrong."""
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        reason = "arrays or objects nested too deeply to read, about 1,000 levels or more"
    except UnicodeDecodeError as e:
        reason = f"not UTF-8: byte {e.start} (0x{body[e.start]:02x}) cannot be decoded, and JSON is UTF-8"
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        reason = "a number has more digits than can be read (over 4,300); no field here takes such a number"
    raise json.JSONDecodeError(reason, "", 0) from None


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = parse_json(body) if len(body) < OFF_LOOP_BYTES else await run_in_threadpool(parse_json, body)
        return self._json


class JsonRoute(APIRoute):
    """The route class for routes with a JSON body: see the module docstring. TEI's `TeiRoute` builds on it
    and sets `error_body`, the error writer of its API, which the body limits use too."""

    error_body: Callable | None = None

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def json_handler(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return json_handler


def install_body_limits(app: FastAPI, limits: Limits) -> None:
    """Add BodyLimitMiddleware at this point of the middleware stack (call it once every router is included);
    routes with a JSON body that are not JsonRoutes are logged, as they parse large bodies on the event loop."""
    routes = [r for r in flat_routes(app.routes) if isinstance(r, APIRoute)]
    error_bodies = {r.path: r.error_body for r in routes if isinstance(r, JsonRoute) and r.error_body is not None}
    for r in routes:
        if r.body_field is not None and not isinstance(r, JsonRoute):
            log.warning("route %s parses its JSON body on the event loop: give its APIRouter route_class=JsonRoute",
                        r.path)
    app.add_middleware(BodyLimitMiddleware, limits=limits, error_bodies=error_bodies)
