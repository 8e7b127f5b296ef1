"""Reuse freed memory on Linux: large tensors without page faults.

glibc serves every allocation above 32 MB (a (4, 1024, 8192) float32 logit tensor is 134 MB)
with a fresh ``mmap`` and returns it to the kernel on ``free``, so each new large tensor
faults in and zeroes all its pages on first touch. On the machines this library is tuned on,
that first touch costs more than the arithmetic: a fresh ``softmax`` over (4, 1024, 8192) took
263 ms, 80 ms once freed memory is kept and reused (``benchmarks/losses.py`` and the note
beside :func:`reuse_freed_memory`). The command line calls it at start; a library user may.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no ``mmap`` per large block, no
    trimming below 2 GB of free heap); True when applied. Process-wide and lasting: the
    resident size then stays near its peak instead of shrinking after each large tensor.
    A no-op (False) off Linux or without glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _done = ok
    return ok
