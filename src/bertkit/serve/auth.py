"""API keys: who may call the server (`bertkit serve --api-key KEY`, `--api-keys FILE`).

With keys on, every route but GET /health and the playground page (/ and /static/) needs
`Authorization: Bearer KEY` (what the OpenAI SDK and the TEI clients send); a missing or wrong key gets 401
with the usual error body and `WWW-Authenticate: Bearer`. Keys are kept as SHA-256 digests and a presented key
is compared with every one of them by `hmac.compare_digest`, so the time taken tells nothing about which key
came close. Keys are never logged or shown: logs and /metrics name a key by its name.

The keys file has one key per line, `KEY [NAME] [rpm=N] [tpm=N] [role=operator]`: the key (printable ASCII,
no spaces), a name for logs and metrics (letters, digits, `._-`; default `lineN`), its quota in requests and
tokens per minute, and its role. Blank lines and `#` comments are ignored; a UTF-8 BOM (Notepad's) is skipped.
The file is read again on SIGHUP: a good file replaces the key table in one step (requests already admitted run
on; spent quota stays spent), a bad one is logged and the previous table kept. Without a keys file SIGHUP is
logged and changes nothing (its default action would kill the server).

Operator routes (/metrics: every key's name and usage) need an operator key: `role=operator` in the file, or a
key given on the command line (`--api-key`, chosen by whoever starts the server); other keys get 403.

The key is checked from the headers alone, before the body is read (app.py puts this middleware outside the
body limits): a client without a key cannot make the server hold a 16 MB body for body_timeout_s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from bertkit.errors import OptionError
from bertkit.serve.errors import ServeError, fail
from bertkit.serve.quota import CURRENT_CALLER, DEFAULT_WINDOW_S, Caller, KeyMetrics, Quota

log = logging.getLogger(__name__)

KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: it travels in an HTTP header
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
FIELDS = {"rpm": "requests", "tpm": "tokens"}
ROLES = ("operator", "user")
LINE_FORMAT = "each line is KEY [NAME] [rpm=N] [tpm=N] [role=operator]"
# Open without a key: GET /health, the page (GET / and /static/, which asks for the key itself). POST / (TEI's
# route) is not the page: it needs a key like every other route.
OPEN_PAGES = ("/", "/health")
OPERATOR_ROUTES = ("/metrics",)  # every key's name and usage: for whoever runs the server


@dataclass(frozen=True)
class KeyEntry:
    name: str
    digest: bytes  # sha256 of the key; the key itself is not kept
    quota: Quota
    operator: bool = False  # may read the operator routes


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def check_key(key: str, where: str) -> None:
    """Refuse an empty key or one that cannot travel in a header. The message never repeats the key."""
    if not key:
        raise OptionError(f"{where}: the API key is empty; give a non-empty key")
    if not KEY_CHARS.fullmatch(key):
        raise OptionError(f"{where}: the API key has spaces or non-ASCII characters; use printable ASCII only")


def parse_key_line(line: str, where: str, default_name: str, window: float) -> KeyEntry | None:
    """One line of a keys file, or None for a blank or comment line; `where` prefixes error messages."""
    words = re.split(r"\s+#", line, maxsplit=1)[0].split()
    if not words or words[0].startswith("#"):
        return None
    key, name, limits, role = words[0], None, {}, "user"
    check_key(key, where)
    for word in words[1:]:
        field, eq, value = word.partition("=")
        if not eq:
            if name is not None:
                raise OptionError(f"{where}: more than one name ({name!r}, {word!r}); {LINE_FORMAT}")
            if not NAME.fullmatch(word):
                raise OptionError(f"{where}: name {word!r} may only use letters, digits and ._- (at most 64)")
            name = word
        elif field == "role":
            if value not in ROLES:
                raise OptionError(f"{where}: role must be operator or user, got {value!r}")
            role = value
        elif field not in FIELDS:
            raise OptionError(f"{where}: unknown field {field!r}; {LINE_FORMAT}")
        elif not value.isdigit() or int(value) < 1:
            raise OptionError(f"{where}: {field} must be a positive whole number, got {value!r}")
        else:
            limits[FIELDS[field]] = int(value)
    return KeyEntry(name or default_name, digest(key), Quota(**limits, window=window), role == "operator")


def read_keys_file(path: Path, window: float = DEFAULT_WINDOW_S) -> list[KeyEntry]:
    """Every key of a keys file; an OptionError naming the file and line for anything malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Notepad's UTF-8) is not part of the key
    except FileNotFoundError:
        raise OptionError(f"--api-keys {path} does not exist; give a file with one key per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"--api-keys {path} cannot be read ({e}); it must be a UTF-8 text file") from None
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        entry = parse_key_line(line, f"--api-keys {path} line {n}", f"line{n}", window)
        if entry is not None:
            entries.append(entry)
    if not entries:
        raise OptionError(f"--api-keys {path} has no keys; {LINE_FORMAT}")
    return entries


def unique(entries: list[KeyEntry]) -> list[KeyEntry]:
    """Each key once, each name once: logs, /metrics and quotas tell keys apart by name."""
    seen: dict[bytes, str] = {}
    names: set[str] = set()
    for e in entries:
        if e.digest in seen:
            raise OptionError(f"the same API key is given twice (as '{seen[e.digest]}' and '{e.name}'); "
                              "give each key once")
        if e.name in names:
            raise OptionError(f"two API keys are named '{e.name}'; give each key its own name (logs and /metrics "
                              "tell keys apart by name)")
        seen[e.digest] = e.name
        names.add(e.name)
    return entries


class KeyStore:
    """The key table: keys given on the command line plus those of the keys file, each with its quota state.

    `lookup` reads the table once, `reload` builds a new one and swaps it in with one assignment; both run on
    the event loop, so a request is checked against either the old table or the new one, never a mix."""

    def __init__(self, keys: list[str] = (), path: Path | None = None, window: float = DEFAULT_WINDOW_S):
        for i, key in enumerate(keys, start=1):
            check_key(key, f"--api-key #{i}")
        self.path, self.window, self.metrics = path, window, None
        # Keys on the command line are the operator's own: whoever starts the server chose them.
        self.fixed = [KeyEntry(f"key{i}", digest(k), Quota(window=window), operator=True)
                      for i, k in enumerate(keys, start=1)]
        entries = unique(self.fixed + (read_keys_file(path, window) if path is not None else []))
        if not entries:
            raise OptionError("no API keys given; pass --api-key KEY or --api-keys FILE")
        self._state = self._build(entries, {})

    def bind_metrics(self, metrics: KeyMetrics) -> None:
        self.metrics = metrics
        for caller in self._state[1].values():
            caller.metrics = metrics

    def _build(self, entries: list[KeyEntry], old: dict[bytes, Caller]) -> tuple[tuple[KeyEntry, ...], dict]:
        callers = {}
        for e in entries:
            caller = old.get(e.digest)
            if caller is None:
                caller = Caller(e.name, e.quota, self.metrics)
            else:
                caller.reconfigure(e.name, e.quota)
            callers[e.digest] = caller
        return tuple(entries), callers

    def __len__(self) -> int:
        return len(self._state[0])

    def names(self) -> list[str]:
        return [e.name for e in self._state[0]]

    def lookup(self, key: str) -> Caller | None:
        """The caller holding this key, or None."""
        found = self.find(key)
        return found[0] if found is not None else None

    def find(self, key: str) -> tuple[Caller, KeyEntry] | None:
        """The caller holding this key and its entry, or None. Compares with every key, found or not."""
        table, callers = self._state
        presented, found = digest(key), None
        for entry in table:
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        return (callers[found.digest], found) if found is not None else None

    def reload(self) -> bool:
        """Read the keys file again (SIGHUP). A bad file is logged and the current keys stay."""
        if self.path is None:
            return False
        try:
            entries = unique(self.fixed + read_keys_file(self.path, self.window))
        except OptionError as e:
            log.error("keys not reloaded, the previous %d keys stay: %s", len(self), e)
            return False
        self._state = self._build(entries, self._state[1])
        log.warning("reloaded %d API keys from %s: %s", len(entries), self.path, ", ".join(self.names()))
        return True


def watch_sighup(keys: KeyStore | None) -> bool:
    """Handle SIGHUP on the running event loop (the main thread's: a server in another thread, as in tests,
    has no signal handlers): reload the keys file, or log that there is none. Always installed, as SIGHUP's
    default action ends the process, and `kill -HUP $(pgrep -f 'bertkit serve')` reaches every server.
    True when installed."""
    reload = keys.reload if keys is not None and keys.path is not None else nothing_to_reload
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as e:  # not the main thread; Windows
        log.debug("no SIGHUP reload of the keys file here: %s", e)
        return False
    return True


def nothing_to_reload() -> None:
    log.warning("SIGHUP: no keys file to reload (start with --api-keys FILE to reload keys); still serving")


def unwatch_sighup() -> None:
    try:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        pass


def bearer(scope: dict) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, or None when there is no such header."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def is_open(method: str, path: str) -> bool:
    return path.startswith("/static/") or (path in OPEN_PAGES and method in ("GET", "HEAD"))


def unauthorized(scope: dict, missing: bool):
    """The 401. The body has not been read: the connection is closed after the answer, not reused."""
    if missing:
        response = fail(scope, 401, "this server needs an API key: send the header 'Authorization: Bearer KEY'",
                        "missing_api_key")
        response.headers["WWW-Authenticate"] = 'Bearer realm="bertkit"'
    else:
        response = fail(scope, 401, "the API key is not valid; check the key you were given", "invalid_api_key")
        response.headers["WWW-Authenticate"] = 'Bearer realm="bertkit", error="invalid_token"'
    if scope["method"] in ("POST", "PUT", "PATCH"):
        response.headers["Connection"] = "close"
    return response


def operator_only(scope: dict):
    return fail(scope, 403, f"{scope['path']} is for the server's operator: use a key with role=operator in the "
                "keys file (or one given with --api-key)", "operator_only")


class AuthMiddleware:
    """Checks the key of every request but the open paths, spends one request of its quota, and leaves the key
    name in the request's state (for the access log) and its caller in CURRENT_CALLER (for token quotas).
    Plain ASGI; it never copies the scope (MetricsMiddleware reads the route the router writes into it)."""

    def __init__(self, app, keys: KeyStore, metrics: KeyMetrics):
        self.app, self.keys, self.metrics = app, keys, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open(scope["method"], scope["path"]):
            return await self.app(scope, receive, send)
        token = bearer(scope)
        found = self.keys.find(token) if token is not None else None
        if found is None:
            self.metrics.auth_failures.labels("missing" if token is None else "invalid").inc()
            return await unauthorized(scope, token is None)(scope, receive, send)
        caller, entry = found
        scope.setdefault("state", {})["key_name"] = caller.name
        if scope["path"] in OPERATOR_ROUTES and not entry.operator:
            return await operator_only(scope)(scope, receive, send)
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        reset = CURRENT_CALLER.set(caller)
        try:
            try:
                caller.take_request()
            except ServeError as e:
                response = fail(scope, e.status, str(e), e.code)
                response.headers["Retry-After"] = str(e.retry_after)
                return await response(scope, receive, send_status)
            await self.app(scope, receive, send_status)
        finally:
            CURRENT_CALLER.reset(reset)
            self.metrics.requests.labels(caller.name, str(status)).inc()


@dataclass
class AccessPolicy:
    """Who may call the server and what is logged: `create_app(..., access=AccessPolicy(...))`."""

    keys: KeyStore | None = None  # None: no keys needed (the loopback default)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the server (none: CORS closed)
    log_texts: bool = False  # log request bodies (texts); for debugging only
    # Host names answered (origin.py); None: any. `bertkit serve` on loopback without keys: loopback names only.
    allowed_hosts: tuple[str, ...] | None = None


def install_auth(app, access: AccessPolicy, registry) -> None:
    """The key check, inside the request ids, metrics and logs (a refused request is still counted, logged and
    given an id) and outside the body limits (the key is checked before the body is read)."""
    app.state.keys = access.keys
    if access.log_texts:
        log.warning("--log-texts is on: request bodies (the texts) are written to the log; turn it off "
                    "outside debugging")
    if access.keys is not None:
        metrics = KeyMetrics(registry)
        access.keys.bind_metrics(metrics)
        app.add_middleware(AuthMiddleware, keys=access.keys, metrics=metrics)
        log.info("API keys required on every route but /health and the page: %s", ", ".join(access.keys.names()))
