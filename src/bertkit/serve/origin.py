"""Who may call the server from a browser: CORS, the Host names answered, and cross-origin simple POSTs.

CORS is closed unless origins are given (`--cors-origin`): browsers then refuse pages of other origins. An
origin is what a browser sends in `Origin`, `scheme://host[:port]`, lowercase, no default port, nothing after
it; `check_origins` refuses at start a value no browser sends (it would never match). Allowed origins may send
the headers of the OpenAI JavaScript SDK (`X-Stainless-*`, `OpenAI-*`) and of huggingface.js (TEI's browser
client), so their preflights pass.

`OriginGuard` refuses, before the key check and before the body is read:
- a Host name not in `allowed_hosts` (400 `host_not_allowed`), when that list is set. `bertkit serve` on
  loopback without keys sets it to the loopback names (and `--allow-host` names): a DNS-rebinding page,
  served as `evil.example` and then pointed at 127.0.0.1, sends `Host: evil.example` and is refused.
- a POST whose `Origin` is neither the server's own (the `Host` it was sent to) nor an allowed CORS origin
  (403 `cross_origin_refused`). A page of another origin can send a `text/plain` or form POST without a
  preflight, and the server reads every POST body as JSON (app.JsonBodies): without this, a page on any site
  could make a keyless server run the model, though it cannot read the answer. Clients that are not browsers
  send no `Origin` and are not concerned.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from bertkit.errors import OptionError
from bertkit.serve.errors import fail

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_PORTS = {"http": "80", "https": "443"}
ORIGIN = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?")
# Request headers an allowed origin may send: ours, the OpenAI JS SDK's and huggingface.js's.
ALLOW_HEADERS = [
    "Authorization", "Content-Type", "X-Request-ID",
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Retry-Count", "X-Stainless-Timeout",
    "X-Stainless-Helper-Method", "X-Stainless-Poll-Helper", "X-Stainless-Custom-Poll-Interval",
    "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "Idempotency-Key",
    "X-Use-Cache", "X-Wait-For-Model", "X-Load-Model",
]


def origin_problem(origin: str) -> str | None:
    """Why a browser never sends this `Origin` value, or None when it may."""
    parts = urlsplit(origin)
    if origin == "*":
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return "not an http(s) origin; a browser sends scheme://host[:port], e.g. https://app.example"
    bare = f"{parts.scheme}://{parts.netloc}"
    if parts.query or origin.endswith("?"):
        return f"has a query; an origin is {bare.lower()} alone"
    if parts.fragment or origin.endswith("#"):
        return f"has a fragment; an origin is {bare.lower()} alone"
    if parts.path == "/":
        return f"has a trailing slash; browsers send {bare.lower()}"
    if parts.path:
        return f"has a path ({parts.path}); an origin is {bare.lower()} alone"
    if "@" in parts.netloc:
        return "has a user name; an origin is scheme://host[:port]"
    if origin != origin.lower():
        return f"browsers send it in lowercase: {origin.lower()}"
    match = ORIGIN.fullmatch(origin)
    if match is None:
        return "not a host name or address with an optional :port"
    scheme, host, port = match.groups()
    if port == DEFAULT_PORTS[scheme]:
        return f"browsers leave out the default port: {scheme}://{host}"
    return None


def check_origins(origins) -> None:
    """Refuse (OptionError, before the model loads) a `--cors-origin` value that no browser sends."""
    for origin in origins:
        problem = origin_problem(origin)
        if problem is not None:
            raise OptionError(f"--cors-origin {origin}: {problem}")


def install_cors(app, origins) -> None:
    """Open CORS to these origins only (none: closed). Preflights are answered before the key check, and
    answers to allowed origins (401s included) carry the CORS headers, so a page sees why it was refused."""
    if not origins:
        return
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST"],
                       allow_headers=ALLOW_HEADERS, expose_headers=["X-Request-ID", "Retry-After"], max_age=600)


def host_name(value: str) -> str:
    """The name of a Host header, lowercase, without its port: `LOCALHOST:8000` -> `localhost`."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class OriginGuard:
    """Plain ASGI: the Host and Origin checks of the module docstring."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None, cors_origins: tuple[str, ...]):
        self.app, self.cors_origins = app, set(cors_origins)
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = header(scope, b"host")
        # No Host at all is HTTP/1.0 from a script: browsers always send one.
        if self.allowed_hosts is not None and host is not None and host_name(host) not in self.allowed_hosts:
            message = (f"Host {host_name(host)!r} is not a name of this server: without API keys a loopback server "
                       "answers only localhost, 127.0.0.1 and [::1] (name others with --allow-host NAME)")
            return await fail(scope, 400, message, "host_not_allowed", "Host")(scope, receive, send)
        origin = header(scope, b"origin")
        if scope["method"] == "POST" and origin is not None and not self.same_or_allowed(origin, scope):
            message = (f"a page of {origin} may not call this server (its origin is not allowed); "
                       "allow it with --cors-origin")
            response = fail(scope, 403, message, "cross_origin_refused", "Origin")
            response.headers["Connection"] = "close"  # the body is never read
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def same_or_allowed(self, origin: str, scope: dict) -> bool:
        """An allowed origin, or the server's own: the Host the request was sent to, or the one a reverse
        proxy passed on in X-Forwarded-Host (a page cannot add that header to a request without a preflight)."""
        if origin in self.cors_origins or "*" in self.cors_origins:
            return True
        netloc = urlsplit(origin).netloc.lower() if origin != "null" else None
        own = (header(scope, b"host"), (header(scope, b"x-forwarded-host") or "").split(",")[0])
        return netloc is not None and netloc in {h.strip().lower() for h in own if h}


def install_origin_guard(app, allowed_hosts: tuple[str, ...] | None, cors_origins: tuple[str, ...]) -> None:
    app.add_middleware(OriginGuard, allowed_hosts=allowed_hosts, cors_origins=cors_origins)
