"""Closing a connection without losing the answer: a lingering close, as nginx's `lingering_close`.

When the server answers before it has read the whole request (413 for a Content-Length over max_body_bytes,
431 for a head over MAX_HEAD_BYTES) and then closes the socket, the bytes the client already sent and the server
never read make the kernel reset the connection, and the reset can reach the client before it has read the
answer, which is then lost: the client sees "connection reset" instead of the 413 that names the fix (7 in 200
exchanges with 64 KiB unread on loopback, every one of 100 with 1 MB).

So a connection closed with request bytes still to come is half-closed instead: the answer goes out, then a
FIN; whatever the client still sends is read and dropped; the socket is closed when the client closes its side,
after LINGER_QUIET_S without data, or at the latest after LINGER_MAX_S or LINGER_MAX_BYTES dropped. Other closes
(a complete request on a connection that ends, shutdown of idle connections) close at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

LINGER_QUIET_S = 2.0  # close once the client has sent nothing for this long
LINGER_MAX_S = 10.0  # and in any case after this long
LINGER_MAX_BYTES = 64 * 1024 * 1024  # or once this much has been dropped


class LingeringTransport:
    """An asyncio transport whose close() lingers while `unread()` says the request is not all read.
    Everything else is the wrapped transport's. The protocol hands what it reads while lingering to `drop`."""

    def __init__(self, transport: asyncio.Transport, unread: Callable[[], bool]):
        self._transport, self._unread = transport, unread
        self.lingering = False
        self._dropped = 0
        self._quiet: asyncio.TimerHandle | None = None
        self._last: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.lingering:
            return
        if self._transport.is_closing() or not self._unread():
            self._transport.close()
            return
        self.lingering = True
        loop = asyncio.get_running_loop()
        if self._transport.can_write_eof():  # not over TLS: there the client closes on `connection: close`
            self._transport.write_eof()  # sent after the answer still buffered
        self._transport.resume_reading()  # uvicorn may have paused reading a large body
        self._quiet = loop.call_later(LINGER_QUIET_S, self.close_now)
        self._last = loop.call_later(LINGER_MAX_S, self.close_now)

    def drop(self, data: bytes) -> None:
        """Bytes that arrived while lingering: dropped, and the quiet timer starts again."""
        self._dropped += len(data)
        if self._dropped > LINGER_MAX_BYTES:
            log.info("closed a lingering connection after dropping %d bytes", self._dropped)
            return self.close_now()
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = asyncio.get_running_loop().call_later(LINGER_QUIET_S, self.close_now)

    def close_now(self) -> None:
        for timer in (self._quiet, self._last):
            if timer is not None:
                timer.cancel()
        self._quiet = self._last = None
        self._transport.close()
