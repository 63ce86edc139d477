"""Error answers: who is at fault decides the status, and every answer carries a request id.

- `ServeError` (a limit or rule of this server) carries its own status and code;
- any other `BertkitError` is the user's mistake: 400 with the code clients already know;
- a body FastAPI cannot parse or validate: 422;
- anything else is a bug: 500, the request id in the body, the traceback in the log under that id.

Error bodies are OpenAI-shaped, so SDKs show the message: {"error": {"message", "type", "code", "param"}}.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from bertkit.errors import BertkitError, InputError, OptionError, ServeError
from bertkit.serve.schemas import json_response

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# A client's own id is echoed only when it is short and plain, so it cannot forge log lines or headers.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def error_response(status: int, message: str, code: str, param: str | None = None, **extra: Any) -> Response:
    """The error body {"error": {"message", "type", "code", "param", ...extra}} with its status."""
    kind = {413: "limit_exceeded", 429: "rate_limit_exceeded", 422: "invalid_request_error"}.get(status)
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    error = {"message": message, "type": kind, "code": code, "param": param, **extra}
    headers = {"Retry-After": "1"} if status == 429 else None
    return json_response({"error": error}, status, headers)


def fail(scope: dict, status: int, message: str, code: str, param: str | None = None, **extra: Any) -> Response:
    # The code is left in the request's state for the metrics middleware, which counts errors by route and code.
    state = scope.setdefault("state", {})
    state["error_code"] = code
    # A request that speaks another API leaves that API's error writer in its state (TEI's: tei.speak_tei).
    return state.get("error_body", error_response)(status, message, code, param, **extra)


# ----------------------------------------------------------------------------------------------------------
# Exception handlers (user errors and unparseable requests; bugs are RequestIdMiddleware's)


async def on_serve_error(request: Request, e: ServeError) -> Response:
    response = fail(request.scope, e.status, str(e), e.code, e.param or "body")
    if e.retry_after is not None:
        response.headers["Retry-After"] = str(e.retry_after)
    return response


async def on_user_error(request: Request, e: BertkitError) -> Response:
    return fail(request.scope, 400, str(e), user_error_code(e), getattr(e, "param", None) or "body")


def user_error_code(e: BertkitError) -> str:
    """A stable snake_case code for a library user error: OptionError -> invalid_value, InputError ->
    invalid_input, MissingHeadError -> missing_head, any other FooBarError -> foo_bar."""
    if isinstance(e, OptionError):
        return "invalid_value"
    if isinstance(e, InputError):
        return "invalid_input"
    name = type(e).__name__.removesuffix("Error") or "user"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def on_validation_error(request: Request, e: RequestValidationError) -> Response:
    errors = e.errors()
    details = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in errors]
    if any(err.get("type") == "json_invalid" for err in errors):
        detail = errors[0].get("ctx", {}).get("error", "")
        message = f"request body is not valid JSON ({detail}); send a JSON object" if detail else \
            "request body is not valid JSON; send a JSON object"
        return fail(request.scope, 422, message, "invalid_json", "body", details=details)
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    # A union (str | list[str]) reports one error per branch; name the field, not the branch.
    loc = [x for x in first["loc"] if x != "body" and x not in ("str", "list[str]", "int", "list[int]")]
    where = ".".join(str(x) for x in loc) or "body"
    return fail(request.scope, 422, f"{where}: {first['msg']}", "invalid_request_body", where, details=details)


async def on_http_error(request: Request, e: StarletteHTTPException) -> Response:
    if e.status_code == 400 and "parsing the body" in str(e.detail):  # e.g. a body that is not UTF-8
        return fail(request.scope, 422, "request body is not valid JSON (not UTF-8?); send a JSON object",
                    "invalid_json", "body")
    param = {404: "path", 405: "method"}.get(e.status_code, "body")
    return fail(request.scope, e.status_code, str(e.detail), f"http_{e.status_code}", param)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above. Deliberately none for ValueError or Exception: those are bugs."""
    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(BertkitError, on_user_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


# ----------------------------------------------------------------------------------------------------------
# Request ids and bugs


def request_id(scope: dict) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives every HTTP answer an X-Request-ID, and turns an exception no handler took (a bug) into a 500
    naming that id, with the traceback logged under it. Plain ASGI: cheaper than BaseHTTPMiddleware.

    Catching here rather than in an `Exception` handler keeps the id at hand, and stops Starlette re-raising
    the error to uvicorn, which would log the same traceback a second time without the id."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message, headers=[*message.get("headers", []), header])
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            log.exception("internal error, request id %s: %s %s", rid, scope["method"], scope["path"])
            if started:  # too late for an error answer; let the server close the connection
                raise
            response = fail(scope, 500, f"internal error ({type(e).__name__}); see the server log for request id "
                            f"{rid}", "internal_error", request_id=rid)
            await response(scope, receive, send_with_id)
