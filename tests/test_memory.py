"""reuse_freed_memory: after it, a large tensor comes from the heap (no mmap), freed memory is
kept, and a second large tensor of the same size reuses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import ctypes, sys
    import torch

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    import discdiff as dd
    if sys.argv[1] == "on":
        assert dd.reuse_freed_memory() and dd.reuse_freed_memory()  # idempotent
    before = libc.mallinfo2().hblkhd
    x = torch.ones(64, 1024, 1024)  # 256 MB
    mapped = libc.mallinfo2().hblkhd - before
    del x
    kept = libc.mallinfo2().fordblks
    y = torch.ones(64, 1024, 1024)
    print(mapped, kept, float(y.sum()))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc: Linux only")
def test_large_tensors_come_from_the_heap_and_are_kept():
    def run(mode: str) -> list[float]:
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return [float(v) for v in out.stdout.split()]

    mapped_off, _, total = run("off")
    mapped_on, kept_on, total_on = run("on")
    assert mapped_off >= 256 * 2**20  # glibc's default: a fresh mmap for the tensor
    assert mapped_on == 0 and kept_on >= 256 * 2**20  # the heap serves it and keeps it freed
    assert total == total_on == 64 * 2**20
