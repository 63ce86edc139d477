"""A real S3-compatible server on loopback for the object-storage tests: moto's server mode, in a thread of the
test process, on a free port; and a TCP proxy in front of it that can freeze an upload half-way."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

BUCKET = "corpora"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port with bucket BUCKET; yield its endpoint URL; stop it."""
    moto_server = pytest.importorskip("moto.server", reason="the object-storage tests need moto[server] (extra 'test')")
    from pyarrow import fs as pafs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", access_key="testing",
                               secret_key="testing", allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        yield endpoint
    finally:
        server.stop()


@contextlib.contextmanager
def s3_env() -> Iterator[str]:
    """moto_s3() with the AWS_* variables of a client of it set while it runs (for a module-scoped fixture)."""
    with moto_s3() as endpoint, pytest.MonkeyPatch.context() as mp:
        for k, v in {**KEYS, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        yield endpoint


def listing(endpoint: str, prefix: str) -> list[str]:
    """Every object key under BUCKET/prefix (relative to it)."""
    from pyarrow import fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", access_key="testing", secret_key="testing")
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path[len(BUCKET) + len(prefix) + 2:] for i in infos if i.type == pafs.FileType.File)


def put(endpoint: str, key: str, data: bytes) -> None:
    from pyarrow import fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", access_key="testing", secret_key="testing")
    with fs.open_output_stream(f"{BUCKET}/{key}") as f:
        f.write(data)


class FreezingProxy:
    """Forwards loopback TCP to `endpoint`; once the client has sent `count` requests whose bytes contain
    `marker` (e.g. b"PUT /corpora/out/_attempts/"), it forwards only half of that request's bytes and freezes
    the connection: an upload stuck half-way, for the test to kill the uploader."""

    def __init__(self, endpoint: str, marker: bytes, count: int):
        self.target = endpoint.removeprefix("http://").rsplit(":", 1)
        self.marker, self.count, self.seen = marker, count, 0
        self.frozen = threading.Event()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target[0], int(self.target[1])))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, outgoing: bool) -> None:
        try:
            while data := src.recv(65536):
                if outgoing and self.marker in data:
                    with self.lock:
                        self.seen += 1
                        freeze = self.seen >= self.count and not self.frozen.is_set()
                    if freeze:
                        dst.sendall(data[: len(data) // 2])
                        self.frozen.set()
                        return  # the rest never arrives: the server holds a half-sent request
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
