"""Concrete scores of mixing processes (uniform, absorbing, marginal) for score-entropy models.

A score model (SEDD, Lou et al. 2024) reads the denoiser's output at position i as log concrete
scores: s_y = p_t(x with position i set to y) / p_t(x), y over the K classes (the entry at
y = x_t is the ratio 1 and is ignored). For a mixing process, with alpha = alpha(t), limit m
and marg_v(y) = alpha [y = v] + (1 - alpha) m(y) the forward marginal of a clean v,

    s_y = sum_v p(x0_i = v | x_t) marg_v(y) / marg_v(x_t)                          (1)

so scores and x_0-predictions are two readings of one object:

- :func:`scores_from_x0`: (1) from x_0 log-probabilities (an MDLM-style model used as a score
  model, e.g. by the tau-leaping sampler);
- :func:`x0_from_scores`: (1) inverted in closed form (the Tweedie denoiser of a score model:
  every x_0-based sampler and the reconstruction term then serve score models);
- :func:`score_entropy`: the diffusion-weighted denoising score entropy, per position,
  beta m(z) sum_{y != z} r_y phi(s_y / r_y) (+ s_y where r_y = 0), r_y = marg_x0(y) / marg_x0(z)
  the true ratio and phi(u) = u - 1 - log u: the integrand of SEDD's ELBO. It equals the
  rate KL of the continuous ELBO whose model rates are those scores, so with exact scores the
  bound is tight in continuous time.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, NamedTuple

import torch
from torch import Tensor

from discdiff.categorical import one_hot
from discdiff.processes.base import expand_time

__all__ = ["scores_from_x0", "x0_from_scores", "score_entropy", "has_scores"]


def has_scores(process: object) -> bool:
    """Whether ``process`` is a mixing process (a limit distribution and a continuous rate)."""
    return callable(getattr(process, "limit_on", None)) and getattr(process, "num_steps", 1) is None


def _setup(proc, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """alpha, 1 - alpha (B, 1.., 1; the latter from float64), the class limit m (K,), m(z)
    (B, .., 1) and a one-hot of z over the classes (B, .., K; zero for the mask state)."""
    K = proc.num_classes
    a64 = expand_time(proc.schedule.alpha(t).to(x_t.device), x_t).unsqueeze(-1)
    a, oma = a64.float(), (1.0 - a64).float()
    limit = proc.limit_on(x_t.device).float()  # (S,)
    m_z = limit[x_t].unsqueeze(-1)  # (B, .., 1)
    z_onehot = one_hot(x_t.long(), K)
    return a, oma, limit[:K], m_z, z_onehot


def scores_from_x0(proc, x_t: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    """Log concrete scores (B, ..., K) implied by x_0 logits (B, ..., K) at x_t, t by (1);
    the entry at y = x_t is 0 (ratio 1); -inf where the ratio is 0."""
    a, oma, m, m_z, zhot = _setup(proc, x_t, t)
    p = torch.softmax(logits.float(), -1)  # (B, .., K)
    p_z = (p * zhot).sum(-1, keepdim=True)
    c0 = oma * m_z  # marg_v(z) for v != z
    c1 = c0 + a  # marg_z(z)
    safe0 = torch.where(c0 > 0, c0, torch.ones_like(c0))
    W = torch.where(c0 > 0, (1 - p_z) / safe0, torch.zeros_like(c0)) + p_z / c1
    s = a * p / torch.where(zhot > 0, c1, safe0) + oma * m * W
    s = torch.where((c0 > 0) | (zhot > 0), s, torch.zeros_like(s))  # m(z) = 0: only z itself
    return torch.where(zhot > 0, torch.zeros_like(s), torch.log(s))


#: above this log score (a ratio of 5.5e34) the inversion's p(z) is 0 for any schedule point
#: a float32 grid reaches, and p(y) is proportional to s_y: x_0 is then a softmax of the scores
_HUGE_LOG_SCORE = 80.0


def x0_from_scores(proc, x_t: Tensor, log_scores: Tensor, t: Tensor) -> Tensor:
    """x_0 log-probabilities (B, ..., K) from log concrete scores by inverting (1):
    with d = (1 - alpha) m(z) and S = sum_{y != z} s_y,
    p(z) = (alpha + d)(1 - d (1 + S)) / alpha and
    p(y) = (d / alpha)(s_y - (1 - alpha) m(y) [p(z) / (alpha + d) + (1 - p(z)) / d]), y != z;
    exact for exact scores, clipped to >= 0 and renormalised for a model's. A token of an
    absorbing process (m(z) = 0) is its own x_0. Finite for every float32 log score: where
    one passes e^80 (a network far from its target), p(z) is 0 and p(y) proportional to s_y.

    Precision: the inversion divides by alpha, so in float32 it loses digits as alpha falls
    (about 1e-4 absolute at alpha = 1e-3, and up to 0.55 at t = 1 - 2^-24 for a log-linear
    schedule); :class:`~discdiff.samplers.scores.ScoresAsX0` never asks below alpha = 1e-3."""
    a, oma, m, m_z, zhot = _setup(proc, x_t, t)
    ls = log_scores.float()
    off_z = ls.masked_fill(zhot > 0, -torch.inf)
    top = off_z.amax(-1, keepdim=True)  # (B, .., 1) the largest log score off z
    s = torch.where(zhot > 0, torch.zeros_like(ls), ls.clamp_max(_HUGE_LOG_SCORE).exp())
    S = s.sum(-1, keepdim=True)
    d = oma * m_z
    a_safe = a.clamp_min(1e-30)
    p_z = ((a + d) * (1 - d * (1 + S)) / a_safe).clamp(0.0, 1.0)
    safe_d = torch.where(d > 0, d, torch.ones_like(d))
    g = p_z / (a + d) + torch.where(d > 0, (1 - p_z) / safe_d, torch.zeros_like(d))
    p_y = (d / a_safe) * (s - oma * m * g)
    p = torch.where(zhot > 0, p_z.expand_as(p_y), p_y).clamp_min(0.0)
    p = torch.where(d > 0, p, zhot)  # m(z) = 0: x_0 = z
    total = p.sum(-1, keepdim=True)
    p = torch.where(total > 0, p / total.clamp_min(1e-30), torch.full_like(p, 1.0 / p.shape[-1]))
    out = torch.log(p.clamp_min(1e-30))  # finite logits (a class the law rules out: 1e-30)
    huge = (top > _HUGE_LOG_SCORE) & (d > 0)
    if huge.any() if ls.device.type == "cpu" else True:  # on an accelerator: no host read
        big = torch.log_softmax(off_z, -1).clamp_min(math.log(1e-30))
        out = torch.where(huge, big, out)
    return out


#: exp is exact up to this log score (a ratio of 5.2e21, beyond any true concrete score of a
#: float32 schedule: about 1/t, or 1 / (t m(z)) for a uniform limit); above it, it is continued
#: as e^C (1 + log1p(s - C)), C^1 and increasing, so the loss and its gradient stay finite for
#: every float32 log score and still push a score network that is far off back down
LOG_SCORE_CAP = 50.0
_E_CAP = math.exp(LOG_SCORE_CAP)
_BLOCK = 1 << 18  # elements per block of rows on a CPU: one block's temporaries stay in cache
_BLOCK_DEVICE = 1 << 24  # on an accelerator: few launches, 64 MB per temporary


def _capped_exp(ls: Tensor) -> tuple[Tensor, Tensor]:
    """(E(ls), E'(ls)): exp(ls) up to :data:`LOG_SCORE_CAP`, e^C (1 + log1p(ls - C)) above."""
    over = (ls - LOG_SCORE_CAP).clamp_min(0.0)
    e = torch.exp(ls.clamp_max(LOG_SCORE_CAP))
    value = torch.where(over > 0, _E_CAP * (1.0 + torch.log1p(over)), e)
    slope = torch.where(over > 0, _E_CAP / (1.0 + over), e)
    return value, slope


def _entropy_terms(ls: Tensor, r: Tensor, log_r: Tensor) -> tuple[Tensor, Tensor]:
    """Per class, (value, d value / d ls) of r (e^u - 1 - u), u = ls - log r, with no
    cancellation and no overflow for any float32 ``ls``: a series for |u| < 0.1, r expm1(u) - r u
    for moderate u, E(ls) - r (1 + u) once e^ls dominates; E(ls) where r = 0."""
    u = ls - log_r
    big, slope = _capped_exp(ls)
    small = u.abs() < 0.1
    us = torch.where(small, u, torch.zeros_like(u))
    series = (
        us * us * (0.5 + us * (1 / 6 + us * (1 / 24 + us * (1 / 120 + us * (1 / 720 + us / 5040)))))
    )
    mid = (u <= 20.0) & (ls <= LOG_SCORE_CAP)
    um = torch.where(mid, u, torch.zeros_like(u))
    em = torch.expm1(um)
    value = torch.where(small, r * series, torch.where(mid, r * (em - um), big - r * (1.0 + u)))
    grad = torch.where(mid, r * em, slope - r)
    pos = r > 0
    return torch.where(pos, value, big), torch.where(pos, grad, slope)


class _Rows(NamedTuple):
    """What every path reads of one position per row: the log scores (N, K) float32, the
    ratios' parts A (off x0: A m(y)) and Bc (at x0: A m(x0) + Bc), both (N, 1), the x0 and x_t
    ids v, z (N,) and the weights w (N,)."""

    ls: Tensor
    A: Tensor
    Bc: Tensor
    v: Tensor
    z: Tensor
    w: Tensor

    def take(self, idx: Tensor) -> _Rows:
        return _Rows(*(t[idx] for t in self))


def _general_rows(rows: _Rows, m: Tensor, grad: Tensor | None) -> Tensor:
    """Value per row (and the weighted gradient into ``grad``) for any limit ``m`` (K,), in
    blocks of rows, every class through :func:`_entropy_terms` (no branch left to chance)."""
    ls, A, Bc, v, z, w = rows
    N, K = ls.shape
    out = torch.zeros(N, dtype=torch.float32, device=ls.device)
    log_m = torch.log(m)  # (K,); -inf where the limit has no mass (then r = 0 off x0)
    cols = torch.arange(K, device=ls.device)
    block = _BLOCK if ls.device.type == "cpu" else _BLOCK_DEVICE
    step = max(1, block // max(K, 1))
    for i in range(0, N, step):
        j = min(N, i + step)
        at_v = cols == v[i:j, None]  # (n, K)
        r_v = A[i:j] * m[v[i:j]][:, None] + Bc[i:j]  # (n, 1) the ratio at x0
        r = torch.where(at_v, r_v, A[i:j] * m)
        log_r = torch.where(at_v, torch.log(r_v), torch.log(A[i:j]) + log_m)
        value, g = _entropy_terms(ls[i:j], r, log_r)
        skip = (cols == z[i:j, None]) | ~(w[i:j, None] > 0)  # y = z, or a weightless row
        out[i:j] = w[i:j] * value.masked_fill(skip, 0.0).sum(-1)
        if grad is not None:
            grad[i:j] = (w[i:j, None] * g).masked_fill(skip, 0.0)
    return out


def _column_terms(ls_c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_entropy_terms` of one column per row ((N,) log scores and ratios)."""
    log_r = torch.log(torch.where(r > 0, r, torch.ones_like(r)))
    return _entropy_terms(ls_c, r, log_r)


def _fast_rows(
    rows_in: _Rows, m: Tensor, grad: bool, limit_kind: str, wide: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The torch CPU path for a limit with mass on every class ("flat": uniform; "full": most
    marginals; ``wide``: some m(y) / m(z) past e^30) or on none of them ("mask": absorbing):
    off x0 the ratio is A m(y) (or 0), so a row is a few passes (u, expm1, one product with m)
    and the x0 and z columns are corrected exactly.
    Returns (values, rows to redo on the general path: where a log score passes the cap or u
    passes 20, which these passes do not continue, the weighted gradient or None); at most two
    logits-sized buffers at a time, one kept (the gradient)."""
    ls, A, Bc, v, z, w = rows_in
    N, K = ls.shape
    rows = torch.arange(N, device=ls.device)
    zc = z.clamp_max(K - 1)
    z_col = z < K  # a class column to leave out (an absorbing mask state has none)
    at_v = z != v  # the x0 column counts unless it is z itself
    A1, Bc1 = A.squeeze(-1), Bc.squeeze(-1)
    r_v = A1 * m[v] + Bc1
    exact_v, grad_v = _column_terms(ls[rows, v], r_v)
    # Rows where a log score passes the cap, or u passes 20, are redone on the general path
    # (which continues exp there); these passes may leave inf in them, nothing worse.
    if limit_kind == "mask":  # r = 0 off x0: the terms are exp(ls)
        redo = ls.amax(-1) > LOG_SCORE_CAP
        e = torch.exp(ls)  # (N, K) the one buffer
        e[rows, v] = 0.0
        e[rows, zc] = torch.where(z_col, torch.zeros_like(r_v), e[rows, zc])
        total = e.sum(-1) + torch.where(at_v, exact_v, torch.zeros_like(exact_v))
        g = e.mul_(w[:, None]) if grad else None
    else:  # r = A m(y) off x0; at x0 the true ratio, at z nothing (u = 0 adds 0)
        flat = limit_kind == "flat"  # a uniform limit: m(y) one number
        u = torch.sub(ls, (torch.log(A) + torch.log(m[0])) if flat else torch.log(m))
        if not flat:
            u.sub_(torch.log(A))
        u[rows, v] = torch.where(at_v, ls[rows, v] - torch.log(r_v), torch.zeros_like(r_v))
        u[rows, zc] = torch.where(z_col, torch.zeros_like(r_v), u[rows, zc])
        redo = u.amax(-1) > 20.0
        # off x0, r <= max m / min m, so u <= 20 keeps ls under the cap unless that ratio is
        # past e^30: then every column is checked, else only x0's
        if wide:
            redo |= ls.amax(-1) > LOG_SCORE_CAP
        else:
            redo |= ls[rows, v] > LOG_SCORE_CAP
        em = torch.expm1(u)  # (N, K) the second buffer
        diff = torch.sub(em, u, out=u)  # e^u - 1 - u, in u's buffer
        # the x0 column's weight is r_v = A m(x0) + Bc: the product with m has A m(x0) of it
        rowsum = diff.sum(-1) * m[0] if flat else diff @ m
        total = A1 * rowsum + Bc1 * diff[rows, v]
        del u, diff
        g = None
        if grad:  # r expm1(u), weighted, in em's buffer
            g = em.mul_(A * w[:, None] * m[0]) if flat else em.mul_(m).mul_(A * w[:, None])
    if g is not None:
        g[rows, v] = torch.where(at_v, w * grad_v, torch.zeros_like(grad_v))
    return torch.where(w > 0, w * total, torch.zeros_like(total)), redo, g


class _ScoreEntropy(torch.autograd.Function):
    """sum_{y != z} r_y (e^{u_y} - 1 - u_y) per row, weighted, with its gradient made in the
    same passes: the gradient (one logits-sized buffer) is kept for backward and scaled there
    in place."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        ls: Tensor,
        A: Tensor,
        Bc: Tensor,
        v: Tensor,
        z: Tensor,
        m: Tensor,
        w: Tensor,
        limit: tuple[str, bool, bool | None],
    ) -> Tensor:
        limit_kind, wide, native = limit
        want = bool(ctx.needs_input_grad[0])
        rows = _Rows(ls, A, Bc, v, z, w)
        if ls.device.type != "cpu" or limit_kind not in ("flat", "full", "mask"):
            # on an accelerator every branch in one pass of elementwise kernels, no host read
            grad = torch.empty_like(ls) if want else None
            out = _general_rows(rows, m, grad)
        else:
            from discdiff.native import library

            if native is not False and library() is not None:
                # the fused C kernel (discdiff/native/score_entropy.c): a row in one pass while
                # it is in cache, its x0 column in float64
                from discdiff.native.score_entropy import score_entropy_rows

                out, redo, grad = score_entropy_rows(
                    ls, A, Bc, v, z, m, w, limit_kind, LOG_SCORE_CAP, want
                )  # fmt: skip
            else:
                out, redo, grad = _fast_rows(rows, m, want, limit_kind, wide)
            if bool(redo.any()):  # a CPU read: no device to wait for
                idx = redo.nonzero().squeeze(-1)
                sub = torch.empty_like(ls[idx]) if grad is not None else None
                out[idx] = _general_rows(rows.take(idx), m, sub)
                if grad is not None and sub is not None:
                    grad[idx] = sub
        ctx.save_for_backward(grad if grad is not None else ls.new_empty(0))
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        # scaled in place (a second backward through the same graph then fails loudly: the
        # saved tensor was modified), so the backward adds no logits-sized buffer
        return grad.mul_(grad_out[:, None]), None, None, None, None, None, None, None


_KINDS: weakref.WeakKeyDictionary[Any, tuple[str, bool]] = weakref.WeakKeyDictionary()


def _limit_kind(proc) -> tuple[str, bool]:
    """("flat" (the same mass on every class: uniform), "full" (mass on every class), "mask"
    (on none: absorbing) or "mixed", whether some ratio m(y) / m(z) passes e^30), read once per
    process from its limit on the CPU (no device value is read)."""
    try:
        return _KINDS[proc]
    except (KeyError, TypeError):
        pass
    m = proc.limit_on(torch.device("cpu"))[: proc.num_classes]
    if bool((m > 0).all()):
        kind = "flat" if bool((m == m[0]).all()) else "full"
    else:
        kind = "mask" if not bool((m > 0).any()) else "mixed"
    wide = kind == "full" and float(m.max() / m.min()) > math.exp(LOG_SCORE_CAP - 20.0)
    try:
        _KINDS[proc] = (kind, wide)
    except TypeError:  # a process that cannot be weakly referenced: asked again next time
        pass
    return kind, wide


def score_entropy(
    proc, x_t: Tensor, x0: Tensor, log_scores: Tensor, t: Tensor, native: bool | None = None
) -> Tensor:
    """SEDD's diffusion-weighted denoising score entropy at each position, (B, ...) nats per
    unit time: beta m(z) sum_{y != z} [s_y - r_y log s_y + r_y (log r_y - 1)], computed from the
    log scores u_y = log s_y - log r_y directly as r_y (e^u - 1 - u) (s_y alone where r_y = 0).

    The true ratios of a mixing process are r_y = ((1 - alpha) m(y) + alpha [y = x0]) / q(z | x0),
    so no K-sized ratio table is read: one pass over blocks of rows makes the value and its
    gradient together (about one logits-sized buffer besides the input): on a CPU by the fused
    C kernel of :mod:`discdiff.native` where it is built (``native=False``: the torch passes,
    the same values). Finite, with a finite gradient, for every float32 log score: exact where
    exp(log score) <= e^50 (:data:`LOG_SCORE_CAP`), continued beyond.
    """
    K = proc.num_classes
    a64 = expand_time(proc.schedule.alpha(t).to(x_t.device), x_t)  # (B, ..)
    a, oma = a64.float(), (1.0 - a64).float()
    beta = expand_time(proc.schedule.rate(t).to(x_t.device), x_t).float()
    limit = proc.limit_on(x_t.device).float()  # (S,)
    z, v = x_t.long(), x0.long()
    m_z = limit[z]
    q_z = torch.where(z == v, a, torch.zeros_like(a)) + oma * m_z  # q(z | x0)
    q_z = q_z.clamp_min(1e-30)
    shape = x_t.shape
    ls = log_scores.float().reshape(-1, K)
    if not ls.is_contiguous():
        ls = ls.contiguous()
    out = _ScoreEntropy.apply(
        ls,
        (oma / q_z).reshape(-1, 1),
        (a / q_z).reshape(-1, 1),
        v.reshape(-1),
        z.reshape(-1),
        limit[:K].contiguous(),
        (beta * m_z).reshape(-1),
        (*_limit_kind(proc), native),
    )
    return out.reshape(shape)
