"""The listening socket, bound before the model loads: a busy port is one line and exit 2, not a model load
followed by uvicorn's error and exit 3. The bound socket is handed to uvicorn, so no other process can take
the port in between."""

from __future__ import annotations

import errno
import socket

from bertkit.errors import OptionError


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening; uvicorn does that), or an OptionError naming the fix."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OptionError(f"--host {host}: not an address or name this machine can resolve ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait for TIME_WAIT
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise OptionError(f"port {port} on {host} is already in use (another server?); stop it or choose "
                              "another --port") from None
        if e.errno == errno.EACCES:
            raise OptionError(f"port {port} needs privileges to listen on; choose --port 1024 or above") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise OptionError(f"--host {host} is not an address of this machine; use 127.0.0.1 or 0.0.0.0") from None
        raise OptionError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock
