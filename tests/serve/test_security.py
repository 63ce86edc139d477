"""Issue 29, the server's security and protocol rows: each test sends exactly the input that got through.

6 request heads of any size read before the key check (431 past MAX_HEAD_BYTES), 7 bodies read before the key
check (401 first), 8 SIGHUP killing a server without a keys file, 9 any Host answered by a loopback server
without keys and cross-origin simple POSTs run, 13 /metrics shown to every key, 18 HEAD /health and HEAD / 405,
19 a keys file with a UTF-8 BOM refused, 23 --cors-origin values a browser never sends, 24 the OpenAI JS SDK's
preflight refused (the browser test itself is test_browser_sdk.py).

Two `bertkit serve` processes (the packaged model) take the rows that live in the command or the protocol:
one with a keys file (rows 6, 13, 19), one without keys (rows 8, 9); the rest run on servers in a thread.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import assert_user_error, error_of, run_process, serve_process, thread_server, wait_ready

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

USER, OPS, CLI_KEY = "sk-user-5c1d2e3f4a", "sk-ops-9a8b7c6d5e", "sk-cli-1f2e3d4c"
# The BOM is what Notepad (and PowerShell's Out-File) writes at the start of a UTF-8 file (row 19).
KEYS_FILE = f"\ufeff# KEY [NAME] [rpm=N] [tpm=N] [role=operator]\n{USER} user\n{OPS} ops role=operator\n"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def address(srv) -> tuple[str, int]:
    host, port = srv.url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.fixture(scope="module")
def keyed_cli(tmp_path_factory):
    """`bertkit serve --api-keys FILE --api-key KEY`: the file has a BOM, a user key and an operator key."""
    folder = tmp_path_factory.mktemp("security-keyed")
    (folder / "keys.txt").write_text(KEYS_FILE, encoding="utf-8")
    with serve_process(folder, "--api-keys", folder / "keys.txt", "--api-key", CLI_KEY) as srv:
        wait_ready(srv.url, srv.proc)
        yield srv


@pytest.fixture(scope="module")
def open_cli(tmp_path_factory):
    """`bertkit serve` on loopback without keys, one extra Host name allowed."""
    with serve_process(tmp_path_factory.mktemp("security-open"), "--allow-host", "embed.box") as srv:
        wait_ready(srv.url, srv.proc)
        yield srv


# -- row 6: request heads are bounded -------------------------------------------------------------------------


def flood_head(srv, start: bytes, size: int) -> bytes:
    """Send `start` and then `size` bytes of one header value in one go; what the server answered ('' when it
    only closed). The server may close while the head still arrives: that is what the bound is for."""
    with socket.create_connection(address(srv), timeout=30) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(start + b"a" * size)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            return s.recv(65536)
    return b""


def test_row6_an_oversized_authorization_header_is_431_before_the_key_check(keyed_cli):
    """4 MB of `Authorization: Bearer aaaa...` from a client with no key: refused at MAX_HEAD_BYTES, without
    reading the rest; the server then answers as before (bench/serve_flood.py measures RSS under 100 MB)."""
    start = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
    answer = flood_head(keyed_cli, start, 4 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"MAX_HEAD_BYTES" in answer or b"16 KiB" in answer, answer
    assert keyed_cli.get("/health").status_code == 200
    assert keyed_cli.get("/info", headers=bearer(USER)).status_code == 200


def test_row6_a_head_just_over_the_bound_in_one_piece_is_431_and_one_under_passes(keyed_cli):
    from bertkit.serve.headlimit import MAX_HEAD_BYTES

    over = {"X-Pad": "p" * MAX_HEAD_BYTES, **bearer(USER)}
    r = keyed_cli.get("/info", headers=over)
    assert r.status_code == 431, r.text
    assert "request_header_too_large" in r.text
    under = {"X-Pad": "p" * (MAX_HEAD_BYTES - 1024), **bearer(USER)}
    assert keyed_cli.get("/info", headers=under).status_code == 200
    long_url = "/info?" + "q" * MAX_HEAD_BYTES  # the request line is part of the head
    assert keyed_cli.get(long_url, headers=bearer(USER)).status_code == 431


# -- row 7: the key before the body ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_thread(encoder):
    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy, KeyStore

    store = KeyStore(path=None, keys=[OPS])
    with thread_server(create_app(encoder, access=AccessPolicy(store))) as srv:
        yield srv


def announce_body(srv, headers: bytes = b"") -> bytes:
    """A POST that announces 16 MB and sends none of it; what the server answers within 5 s."""
    request = (b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 16000000\r\n" + headers + b"\r\n")
    with socket.create_connection(address(srv), timeout=5) as s:
        s.sendall(request)
        try:
            return s.recv(65536)
        except TimeoutError:
            return b"(no answer in 5 s: the server waits for the body)"


def test_row7_forty_unauthenticated_16_mb_bodies_are_401_before_a_byte_is_read(keyed_thread):
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: announce_body(keyed_thread), range(40)))
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b"connection: close" in answer.lower()  # the body is never read: the connection cannot be reused
    wrong = announce_body(keyed_thread, b"Authorization: Bearer sk-wrong\r\n")
    assert wrong.startswith(b"HTTP/1.1 401 "), wrong[:200]
    # With the key, the body is waited for as before (body_timeout_s), and a normal request is answered.
    r = keyed_thread.post("/embed", json={"texts": ["a guitar"]}, headers=bearer(OPS))
    assert r.status_code == 200, r.text


# -- row 8: SIGHUP without a keys file ------------------------------------------------------------------------


def test_row8_sighup_without_a_keys_file_logs_and_keeps_serving(open_cli):
    texts = [" ".join(["word"] * 200) + f" {i}" for i in range(64)]
    result: dict = {}

    def embed():
        result["r"] = httpx.post(open_cli.url + "/embed", json={"texts": texts}, timeout=120)

    thread = threading.Thread(target=embed)
    thread.start()
    time.sleep(0.3)  # the request is in flight
    open_cli.proc.send_signal(signal.SIGHUP)
    thread.join(120)
    assert result["r"].status_code == 200
    time.sleep(0.3)
    assert open_cli.proc.poll() is None, "SIGHUP killed the server"
    assert open_cli.get("/health").status_code == 200
    assert "SIGHUP: no keys file to reload" in open_cli.proc.log.read_text()


# -- row 9: DNS rebinding and cross-origin simple POSTs -------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "attacker.test", "10.0.0.7"])
def test_row9_a_loopback_server_without_keys_refuses_other_host_names(open_cli, host):
    r = open_cli.get("/info", headers={"Host": host})
    assert "--allow-host" in error_of(r, 400, "host_not_allowed")
    r = open_cli.post("/search", json={"query": "x"}, headers={"Host": host})
    assert r.status_code == 400


def test_row9_loopback_names_and_allowed_hosts_are_answered(open_cli):
    port = open_cli.url.rsplit(":", 1)[1]
    for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "[::1]",
                 "embed.box", f"embed.box:{port}"):
        assert open_cli.get("/info", headers={"Host": host}).status_code == 200, host


def test_row9_cross_origin_text_plain_posts_are_refused(open_cli):
    """What a page of another origin can send without a preflight: a text/plain (or form) POST. The server
    refuses it; the same POST from its own page, or with no Origin (curl), runs."""
    body = '{"texts": ["secret"]}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = open_cli.post("/embed", content=body, headers={"Content-Type": ctype, "Origin": "http://evil.example"})
        assert "http://evil.example" in error_of(r, 403, "cross_origin_refused"), ctype
    r = open_cli.post("/embed", content=body, headers={"Content-Type": "text/plain", "Origin": "null"})
    assert r.status_code == 403
    own = open_cli.url
    r = open_cli.post("/embed", content=body, headers={"Content-Type": "text/plain", "Origin": own})
    assert r.status_code == 200, r.text
    assert open_cli.post("/embed", content=body, headers={"Content-Type": "text/plain"}).status_code == 200
    # Behind a reverse proxy that rewrites Host, the page's own origin arrives in X-Forwarded-Host.
    proxied = {"Content-Type": "text/plain", "Origin": "https://embed.box", "X-Forwarded-Host": "embed.box"}
    assert open_cli.post("/embed", content=body, headers=proxied).status_code == 200


def test_row9_keys_or_a_public_host_lift_the_host_check(encoder):
    """With keys a rebinding page has no key; on 0.0.0.0 the operator chose the network: any Host there."""
    from bertkit.cli.serving import access_policy

    assert access_policy([OPS], None, 60, None, False, "127.0.0.1", []).allowed_hosts is None
    assert "box.lan" in access_policy([OPS], None, 60, None, False, "0.0.0.0", ["box.lan"]).allowed_hosts
    assert access_policy(None, None, 60, None, False, "0.0.0.0", []).allowed_hosts is None
    hosts = access_policy(None, None, 60, None, False, "127.0.0.1", ["Box.Lan"]).allowed_hosts
    assert {"localhost", "127.0.0.1", "[::1]", "box.lan"} <= set(hosts)


# -- row 13: /metrics is for operators ------------------------------------------------------------------------


def test_row13_metrics_is_operator_only(keyed_cli):
    r = keyed_cli.get("/metrics", headers=bearer(USER))
    assert "operator" in error_of(r, 403, "operator_only")
    assert keyed_cli.get("/info", headers=bearer(USER)).status_code == 200  # other routes as before
    for key in (OPS, CLI_KEY):  # role=operator in the file; keys on the command line are the operator's
        r = keyed_cli.get("/metrics", headers=bearer(key))
        assert r.status_code == 200 and "bertkit_key_requests_total" in r.text
    assert error_of(keyed_cli.get("/metrics"), 401, "missing_api_key")


def test_row13_without_keys_metrics_stays_open_on_loopback(open_cli):
    assert open_cli.get("/metrics").status_code == 200


def test_row13_role_field_is_checked():
    from bertkit.errors import OptionError
    from bertkit.serve.auth import parse_key_line

    assert parse_key_line("sk-a ops role=operator", "here", "x", 60).operator
    assert not parse_key_line("sk-a bob role=user", "here", "x", 60).operator
    assert not parse_key_line("sk-a bob", "here", "x", 60).operator
    with pytest.raises(OptionError, match="here: role must be operator or user, got 'admin'"):
        parse_key_line("sk-a bob role=admin", "here", "x", 60)


# -- row 18: HEAD ---------------------------------------------------------------------------------------------


def test_row18_head_health_and_head_page_are_200(encoder, keyed_thread):
    from bertkit.serve import create_app

    with thread_server(create_app(encoder)) as srv:
        for server in (srv, keyed_thread):  # open routes, with keys on or not
            for path in ("/health", "/"):
                r = httpx.head(server.url + path, timeout=30)
                assert r.status_code == 200, (path, r.status_code)
                assert r.content == b""


# -- row 19: a keys file with a BOM ---------------------------------------------------------------------------


def test_row19_a_keys_file_with_a_bom_loads(tmp_path, keyed_cli):
    from bertkit.serve.auth import KeyStore

    path = tmp_path / "keys.txt"
    path.write_bytes(b"\xef\xbb\xbfsk-bom-key-1 alice\r\nsk-bom-key-2 bob\r\n")  # Notepad: BOM and CRLF
    store = KeyStore(path=path)
    assert store.names() == ["alice", "bob"] and store.lookup("sk-bom-key-1").name == "alice"
    assert keyed_cli.get("/info", headers=bearer(USER)).status_code == 200  # the CLI server's file has one too


# -- row 23: --cors-origin values a browser never sends -------------------------------------------------------


@pytest.mark.parametrize("origin, fragment", [
    ("https://app.example/", "trailing slash"),
    ("https://app.example/app", "a path"),
    ("app.example", "not an http(s) origin"),
    ("ftp://app.example", "not an http(s) origin"),
    ("https://app.example?x=1", "a query"),
    ("https://App.Example", "lowercase"),
    ("https://app.example:443", "default port"),
    ("null", "not an http(s) origin"),
])
def test_row23_cors_origins_a_browser_never_sends_are_refused_at_start(tmp_path, origin, fragment):
    result = run_process("serve", "--cors-origin", origin, "--model", tmp_path / "no-model")
    assert_user_error(result, f"--cors-origin {origin}", fragment)


def test_row23_good_origins_pass():
    from bertkit.serve.origin import check_origins

    good = ("https://app.example", "http://127.0.0.1:5173", "http://[::1]:8080", "http://localhost:3000", "*")
    check_origins(good)


# -- row 24: the OpenAI JS SDK's and TEI clients' headers in a preflight --------------------------------------

STAINLESS = ("x-stainless-lang, x-stainless-package-version, x-stainless-os, x-stainless-arch, "
             "x-stainless-runtime, x-stainless-runtime-version, x-stainless-retry-count, x-stainless-timeout")


def test_row24_preflight_of_the_openai_js_sdk_is_allowed_for_an_allowed_origin(encoder):
    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy, KeyStore

    app = create_app(encoder, access=AccessPolicy(KeyStore([OPS]), cors_origins=("https://app.example",)))
    with thread_server(app) as srv:
        for requested in (f"authorization, content-type, {STAINLESS}",
                          "authorization, content-type, x-use-cache, x-wait-for-model"):  # huggingface.js (TEI)
            r = httpx.options(srv.url + "/v1/embeddings", timeout=30, headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": requested})
            assert r.status_code == 200, r.text
            allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
            assert {h.strip() for h in requested.split(",")} <= allowed
        r = httpx.options(srv.url + "/v1/embeddings", timeout=30, headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": STAINLESS})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
