"""A bound on the request head (request line and headers): 431 past MAX_HEAD_BYTES, before the app sees it.

uvicorn's httptools parser keeps a header of any size in memory until the header ends: 100 MB
`Authorization` headers from clients with no key, a few at once, took the server's RSS from 387 to 873 MB,
and the key check could only run once they had all arrived. `HeadLimitedProtocol` counts the bytes of a head
while it arrives and answers 431 as soon as it passes MAX_HEAD_BYTES (h11's and Node's default, 16 KiB), then
closes the connection; a head that arrives whole in one read is measured when it ends. A connection thus
holds at most MAX_HEAD_BYTES plus one socket read (256 KiB) of head.

The same protocol closes a connection that still has request bytes to come with a lingering close
(`linger.LingeringTransport`), so a 413 or 431 answered before the request was read is not lost to a reset.

`run_server` serves with it (through `server_config`). Without httptools (it comes with the serve extra),
uvicorn's h11 parser is used with the same bound, which h11 answers 400, and without the lingering close.
"""

from __future__ import annotations

import logging

from bertkit.serve.linger import LingeringTransport

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
TOO_LARGE = (b'{"error": {"message": "the request line and headers are over MAX_HEAD_BYTES (16 KiB); send a '
             b'shorter URL or fewer and shorter headers", "type": "invalid_request_error", '
             b'"code": "request_header_too_large", "param": null}}')


class HeadTooLarge(Exception):
    pass


def http_protocol():
    """The `http` of uvicorn.Config: the head-limited httptools protocol, or "h11" without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class HeadLimitedProtocol(HttpToolsProtocol):
        """HttpToolsProtocol that refuses a head over MAX_HEAD_BYTES with 431 and lingers when it closes with
        request bytes unread (see the module docstring)."""

        head_bytes: int | None = None  # bytes of the head being read; None between heads
        refused = False

        def connection_made(self, transport) -> None:
            super().connection_made(LingeringTransport(transport, self.unread))

        def unread(self) -> bool:
            """Whether the client may still be sending: a refused head, or a body not read to its end."""
            return self.refused or (self.cycle is not None and self.cycle.more_body)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.transport.lingering:
                self.transport.close_now()  # its timers
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_bytes = 0

        def on_headers_complete(self) -> None:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            self.head_bytes = None
            if size > MAX_HEAD_BYTES:
                self.refused = True
                raise HeadTooLarge  # the parser stops: uvicorn answers through send_400_response
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self.transport.lingering:
                return self.transport.drop(data)
            reading = self.head_bytes is not None  # a head was already under way before this read
            super().data_received(data)
            if reading and self.head_bytes is not None and not self.refused:
                # Still in the same head: all of this read belongs to it. (The read where a head begins is not
                # counted, as part of it may be the previous request's body; on_headers_complete measures it.)
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.refused = True
                    self.send_400_response("")

        def send_400_response(self, msg: str) -> None:
            if not self.refused:
                return super().send_400_response(msg)
            log.warning("refused a request head over MAX_HEAD_BYTES (%d bytes) with 431", MAX_HEAD_BYTES)
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-type: application/json\r\n"
                                 b"content-length: " + str(len(TOO_LARGE)).encode() + b"\r\n"
                                 b"connection: close\r\n\r\n" + TOO_LARGE)
            self.transport.close()

    return HeadLimitedProtocol
