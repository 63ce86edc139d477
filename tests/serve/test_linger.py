"""serve/linger.py: a connection answered before its request was read closes without losing the answer.

Without the lingering close, a 413 sent with 1 MB of the body unread was lost to a reset in every one of 100
exchanges on loopback (64 KiB unread: 7 in 200). A real server in a thread, raw sockets.
"""

from __future__ import annotations

import socket
import time

import pytest
from support import thread_server

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

HEAD = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52428800\r\n\r\n")


@pytest.fixture(scope="module")
def server(encoder):
    from bertkit.serve import create_app

    with thread_server(create_app(encoder)) as srv:
        yield srv


def connect(srv) -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_to_eof(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("unread", [64 * 1024, 1024 * 1024, 8 * 1024 * 1024])
def test_a_413_with_the_body_unread_reaches_the_client_every_time(server, unread):
    junk = b'{"input": ["hi"], "junk": "' + b"x" * unread
    for _ in range(20 if unread < 8 * 1024 * 1024 else 3):
        with connect(server) as s:
            s.sendall(HEAD + junk)
            answer = read_to_eof(s)  # the server half-closes after the answer: EOF, not a reset
        assert answer.startswith(b"HTTP/1.1 413") and b"max_body_bytes" in answer, answer[:200]


def test_a_silent_client_is_closed_after_the_quiet_time(server, monkeypatch):
    from bertkit.serve import linger

    monkeypatch.setattr(linger, "LINGER_QUIET_S", 0.2)
    with connect(server) as s:
        s.sendall(HEAD + b"x" * 1000)
        assert read_to_eof(s).startswith(b"HTTP/1.1 413")
        time.sleep(0.6)  # past the quiet time: the server has closed, so what is sent now is refused
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(50):
                s.sendall(b"x" * 65536)
                time.sleep(0.02)


def test_a_client_that_keeps_sending_is_cut_off_at_linger_max_bytes(server, monkeypatch):
    from bertkit.serve import linger

    monkeypatch.setattr(linger, "LINGER_MAX_BYTES", 1024 * 1024)
    start = time.monotonic()
    with connect(server) as s:
        s.sendall(HEAD)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(1000):  # 64 MB, if nobody cut it off
                s.sendall(b"x" * 65536)
    assert time.monotonic() - start < linger.LINGER_MAX_S


def test_a_complete_request_on_a_closing_connection_does_not_linger(server):
    body = b'{"input": ["hi"]}'
    head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with connect(server) as s:
        s.sendall(head + body)
        answer = read_to_eof(s)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        time.sleep(0.2)  # closed at once, not half-closed: bytes sent now meet a reset
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(50):
                s.sendall(b"x" * 65536)
                time.sleep(0.02)
