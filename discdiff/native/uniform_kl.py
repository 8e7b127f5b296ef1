"""Torch front of the fused uniform rate-KL kernel (``uniform_kl.c``): buffers and autograd."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from discdiff.native import library

__all__ = ["available", "uniform_rate_kl"]

_MIN_PER_THREAD = 1 << 16  # logits per thread below which a second thread costs more than it saves


def available(logits: Tensor) -> bool:
    """Whether the fused kernel can take these logits: on a CPU, with the library built."""
    return logits.device.type == "cpu" and library() is not None


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _per_row_group(v: Tensor, x_t: Tensor) -> tuple[Tensor, int]:
    """A (b, 1, .., 1) per-example value as (b,) contiguous and the rows of x_t per value."""
    N = x_t.numel()
    b = v.shape[0] if v.dim() else 1
    if v.numel() == b and b in (1, x_t.shape[0] if x_t.dim() else 1) and N % b == 0:
        return v.reshape(b).contiguous(), max(1, N // b)
    return v.expand(x_t.shape).reshape(-1).contiguous(), 1


def _kernel(logits: Tensor, x_t: Tensor, x0: Tensor, a, c0, c1, scale, want_grad: bool):
    """Scaled per-position values (N,) float32 and, if wanted, the (N, K) float32 gradient of
    their unscaled sum."""
    lib = library()
    K = logits.shape[-1]
    lf = logits.detach().reshape(-1, K).float().contiguous()
    N = lf.shape[0]
    zt = x_t.reshape(-1).long().contiguous()
    xo = x0.reshape(-1).long().contiguous()
    a, per = _per_row_group(a.double(), x_t)
    c0, _ = _per_row_group(c0.double(), x_t)
    c1, _ = _per_row_group(c1.double(), x_t)
    sc, _ = _per_row_group(scale.float(), x_t)
    out = torch.empty(N, dtype=torch.float32)
    threads = max(1, min(torch.get_num_threads(), (N * K) // _MIN_PER_THREAD, N))
    grad = torch.empty((N, K) if want_grad else (threads, K), dtype=torch.float32)
    scratch = torch.empty(threads, K, dtype=torch.float32)
    bad = lib.uniform_rate_kl(
        _ptr(lf), _ptr(zt), _ptr(xo), _ptr(a), _ptr(c0), _ptr(c1), _ptr(sc), per, _ptr(out),
        _ptr(grad), _ptr(scratch), N, K, int(want_grad), threads,
    )  # fmt: skip
    if bad:
        raise ValueError(f"x_t or x0 holds a class outside [0, {K}) at {bad} position(s)")
    return out, (grad if want_grad else None)


class _NativeUniformRateKL(torch.autograd.Function):
    """The value and its gradient in one fused pass; the backward scales the saved gradient in
    place (a second backward through the same graph then fails loudly: the saved tensor was
    modified)."""

    @staticmethod
    def forward(ctx, logits, x_t, x0, a, c0, c1, scale):  # type: ignore[override]
        out, grad = _kernel(logits, x_t, x0, a, c0, c1, scale, ctx.needs_input_grad[0])
        ctx.save_for_backward(grad if grad is not None else torch.empty(0), scale)
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        return out.view(x_t.shape)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        g, scale = ctx.saved_tensors
        gs = (grad_out.double() * scale).float().reshape(-1, 1)
        return g.mul_(gs).view(ctx.shape).to(ctx.dtype), None, None, None, None, None, None


def uniform_rate_kl(logits: Tensor, x_t: Tensor, x0: Tensor, a, c0, c1, scale) -> Tensor:
    """:class:`discdiff.processes.rates._UniformRateKL` by the fused kernel: same arguments,
    same value and gradient (tests); CPU only, see :func:`available`."""
    return _NativeUniformRateKL.apply(logits, x_t, x0, a, c0, c1, scale)
