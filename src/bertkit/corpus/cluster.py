"""Joining an existing Ray cluster (`--address`), shared by `embed-corpus --engine ray` and `serve --engine ray`."""

from __future__ import annotations

from bertkit.errors import OptionError


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse, with one line, a host:port (or ray://host:port) where no Ray head answers."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise OptionError(f"--address {address!r}: give the head's HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:10001")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise OptionError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                          "`ray start --head` or check the address") from None
