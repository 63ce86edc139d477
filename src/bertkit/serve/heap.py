"""The serving process's C heap, on glibc: freed batch buffers go back to the system.

A server allocates and frees batch-sized buffers (token ids, hidden states, answers) from many threads: the
event loop, the thread pool that tokenizes and parses, the model thread and its workers. glibc gives contending
threads arenas of their own (up to 8 per core) and, once a large buffer has been freed, raises its mmap
threshold so that later large buffers come from those arenas' heaps, where the holes they leave are kept. RSS
then creeps for many minutes under mixed traffic (`bench/soak.py --minutes 30`: +11 % at 2 arenas per core and
the default thresholds). Two arenas and a fixed 256 KiB mmap and trim threshold give large buffers back on free.
Elsewhere (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
THRESHOLD_BYTES = 256 * 1024
ARENAS = 2


def bound_heap() -> bool:
    """Set glibc's arena count and mmap / trim thresholds for a long-lived server; True where it applied.
    Call it before the model loads, so that the threads it starts share the two arenas."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, ARENAS), (M_MMAP_THRESHOLD, THRESHOLD_BYTES), (M_TRIM_THRESHOLD, THRESHOLD_BYTES)))
    log.debug("glibc heap bounded: %s", ok)
    return ok
