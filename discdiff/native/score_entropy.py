"""Torch front of the fused score-entropy kernel (``score_entropy.c``): buffers and threads."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from discdiff.native import library

__all__ = ["available", "score_entropy_rows"]

_MIN_PER_THREAD = 1 << 16  # elements per thread below which a second thread costs more
_KINDS = {"flat": 0, "full": 1, "mask": 2}


def available(ls: Tensor, kind: str) -> bool:
    """Whether the kernel can take these log scores: on a CPU, a limit it knows, built."""
    return ls.device.type == "cpu" and kind in _KINDS and library() is not None


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def score_entropy_rows(
    ls: Tensor, A: Tensor, Bc: Tensor, v: Tensor, z: Tensor, m: Tensor, w: Tensor,
    kind: str, cap: float, want_grad: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:  # fmt: skip
    """(values, rows to redo (bool), weighted gradient or None) of (N, K) float32 log scores;
    per-row A, Bc, w, ids v, z; the limit m over the K classes."""
    lib = library()
    N, K = ls.shape
    ls = ls.contiguous()
    f = lambda t: t.reshape(-1).float().contiguous()  # noqa: E731
    i = lambda t: t.reshape(-1).long().contiguous()  # noqa: E731
    A, Bc, w, v, z = f(A), f(Bc), f(w), i(v), i(z)
    m = f(m)
    log_m = torch.log(m)
    out = torch.empty(N, dtype=torch.float32)
    redo = torch.empty(N, dtype=torch.uint8)
    grad = torch.empty(N, K, dtype=torch.float32) if want_grad else None
    threads = max(1, min(torch.get_num_threads(), (N * K) // _MIN_PER_THREAD, N))
    lib.score_entropy_rows(
        _ptr(ls), _ptr(A), _ptr(Bc), _ptr(w), _ptr(v), _ptr(z), _ptr(m), _ptr(log_m),
        _KINDS[kind], float(cap), _ptr(out), _ptr(grad) if grad is not None else None,
        _ptr(redo), N, K, threads,
    )  # fmt: skip
    return out, redo.bool(), grad
