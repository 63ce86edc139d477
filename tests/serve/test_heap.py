"""serve.heap.bound_heap: on glibc a freed batch-sized buffer goes back to the system (bench/soak.py's RSS)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"),
                                reason="glibc's mallopt is Linux-only")

# After a 16 MB buffer is freed, glibc raises its mmap threshold to 16 MB, so an 8 MB buffer comes from the heap
# and stays resident after free (its trim threshold rose too). bound_heap fixes both thresholds at 256 KiB.
PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, sys
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "bound":
        from bertkit.serve.heap import bound_heap
        assert bound_heap()
    def resident_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    def touch_and_free(mb):
        p = libc.malloc(mb << 20)
        ctypes.memset(p, 1, mb << 20)
        libc.free(p)
    touch_and_free(16)
    before = resident_mb()
    touch_and_free(8)
    print(round(resident_mb() - before, 1))
""")


def kept_mb(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                          check=True)
    return float(done.stdout)


def test_bound_heap_gives_freed_buffers_back():
    assert kept_mb("default") >= 7.5  # glibc's default keeps the 8 MB: the creep the soak saw
    assert kept_mb("bound") < 1.0

