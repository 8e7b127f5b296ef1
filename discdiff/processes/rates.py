"""Reverse-rate KLs of the continuous-time ELBO, per position: the maths of each process family.

``rate_kl(x_t, x0, logits, t)`` on a process is the integrand of the continuous-time ELBO at
time t: the KL between the true reverse jump rates (given x_0) and the model's (given logits
over x_0), (B, ...). Processes offer it as a method; :func:`discdiff.losses.continuous_elbo`
works for any process that has one. The closed forms below are O(K) per position and free of
cancellation as alpha -> 0 and where the model is confidently wrong.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from discdiff.checks import trusted_values
from discdiff.native import reason
from discdiff.native import uniform_kl as fused
from discdiff.processes.base import expand_time

__all__ = ["phi", "rate_kl_d3pm", "rate_kl_mean", "rate_kl_masked", "rate_kl_uniform", "x0_nll"]


_NLL_BLOCK_CPU = 2**17  # float32 elements of one row block on a CPU (512 KB: stays in cache)
_NLL_BLOCK_DEVICE = 2**26  # on an accelerator (256 MB): few launches, a bounded temporary
_NLL_BLOCKED_FROM = 2**26  # logits elements (256 MB of float32) from which x0_nll is blocked


def _nll_rows(logits: Tensor) -> int:
    """Rows of one block of logits (N, K)."""
    block = _NLL_BLOCK_CPU if logits.device.type == "cpu" else _NLL_BLOCK_DEVICE
    return max(1, block // max(logits.shape[-1], 1))


class _BlockedNLL(torch.autograd.Function):
    """-log softmax(logits)[x0] for logits (N, K) of any float dtype, in float32, keeping no
    (N, K) buffer of its own: the forward takes a log_softmax per block (a temporary of one
    block) and keeps the log-normaliser (N,) beside the logits the caller holds anyway; the
    backward writes (softmax - onehot(x0)) g block by block into one gradient of the logits'
    dtype. ``log_softmax(logits.float())`` keeps a float32 copy and its output (3 logits
    buffers with the gradient, 1 here; the saving is larger in bf16)."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, x0: Tensor) -> Tensor:  # type: ignore[override]
        n = logits.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        rows = _nll_rows(logits)
        nll = torch.empty(n, dtype=torch.float32, device=logits.device)
        for s in range(0, n, rows):  # one fused log_softmax per block, kept only for the gather
            logp = torch.log_softmax(logits[s : s + rows].float(), dim=-1)
            torch.neg(logp.gather(-1, x0[s : s + rows, None]).squeeze(-1), out=nll[s : s + rows])
        # log-normaliser = logit at x0 + nll: the backward's softmax needs no second reduction
        torch.add(logits.gather(-1, x0.unsqueeze(-1)).squeeze(-1).float(), nll, out=lse)
        ctx.save_for_backward(logits, x0, lse)
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        logits, x0, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        g = g.float()
        rows = _nll_rows(logits)
        direct = logits.dtype == torch.float32  # the gradient block is the work buffer
        for s in range(0, logits.shape[0], rows):
            gb = g[s : s + rows, None]  # (n, 1)
            block = logits[s : s + rows]
            p = grad[s : s + rows] if direct else torch.empty_like(block, dtype=torch.float32)
            torch.sub(block, lse[s : s + rows, None], out=p)  # never into the caller's logits
            p.exp_().mul_(gb)
            p.scatter_add_(-1, x0[s : s + rows, None], -gb)
            if not direct:
                grad[s : s + rows] = p
        return grad, None


def x0_nll(logits: Tensor, x0: Tensor) -> Tensor:
    """-log softmax(logits)[x0] per position, (B, ...) float32, from logits (B, ..., K).

    From 2^26 logits on (a 16 x 1024 batch at K = 4,096; 256 MB of float32), block by block
    (:class:`_BlockedNLL`): no float32 copy of the logits and no saved log-probabilities, so
    the loss adds one gradient buffer to what the model made (1.0 logits buffers instead of
    3.0; on one CPU thread 1.16x / 1.34x the plain form's time at 4 x 1024 x 8,192 / 50,257,
    ``benchmarks/losses.py``). Below that the plain fused ``log_softmax`` is faster and its
    buffers are small."""
    K = logits.shape[-1]
    if logits.numel() < _NLL_BLOCKED_FROM:  # small logits: one fused log_softmax is faster
        logp = torch.log_softmax(logits.float(), dim=-1)
        return -logp.gather(-1, x0.long().unsqueeze(-1)).squeeze(-1)
    flat = logits.reshape(-1, K)
    ids = x0.long().reshape(-1)
    return _BlockedNLL.apply(flat, ids).view(x0.shape)


def phi(d: Tensor, r: Tensor) -> Tensor:
    """phi(r) = r - 1 - log r >= 0 given both d = r - 1 and r, each computed without cancellation.

    A series in d near r = 1 (where r - 1 - log r cancels), the direct form elsewhere: r itself
    stays accurate when the model puts almost no mass where the truth does (d -> -1).
    """
    small = d.abs() < 1e-2
    ds = torch.where(small, d, torch.zeros_like(d))
    series = ds * ds * (0.5 - ds * (1 / 3 - ds * (0.25 - ds * 0.2)))
    rl = torch.where(small, torch.ones_like(r), r)
    return torch.where(small, series, (rl - 1) - torch.log(rl))


def _terms(proc, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> tuple[Tensor, ...]:
    """What both rate forms start from, float32: alpha and 1 - alpha (B, 1.., 1) (the latter
    taken in float64: no cancellation near t = 0), beta (B, 1..), the limit m (S,), p =
    softmax(logits) padded to S states (B, .., S), z = x_t (B, .., 1), one-hot(x0), m(z),
    [z = x0] and p(z) (B, .., 1)."""
    a64 = expand_time(proc.schedule.alpha(t).to(x_t.device), x_t).unsqueeze(-1)  # (B, 1.., 1)
    a, oma = a64.float(), (1.0 - a64).float()
    beta = expand_time(proc.schedule.rate(t).to(x_t.device), x_t).float()  # (B, 1..)
    m = proc.limit_on(x_t.device).float()  # (S,)
    S = proc.num_states
    p = torch.softmax(logits.float(), -1)
    if S > proc.num_classes:
        p = torch.nn.functional.pad(p, (0, S - proc.num_classes))
    z = x_t.unsqueeze(-1)
    onehot_x0 = torch.zeros_like(p).scatter_(-1, x0.long().unsqueeze(-1), 1.0)
    m_z = m[x_t].unsqueeze(-1)
    q0_z = (x_t == x0.long()).float().unsqueeze(-1)
    return a, oma, beta, m, p, z, onehot_x0, m_z, q0_z, p.gather(-1, z)


def rate_kl_d3pm(proc, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    """Rate KL for D3PM's parameterisation, per position (B, ...).

    With marg(y) = alpha x(y) + (1 - alpha) m(y) for x = one-hot(x0) (q) or softmax(logits) (p),
    the reverse rate from z to y != z is beta m(z) marg(y) / marg(z), so the rate KL is
        beta m(z) sum_y u_q(y) phi(u_p(y) / u_q(y)),   u(y) = marg(y) / marg(z),  phi(r) = r - 1 - log r.
    r - 1 is formed from a cancellation-free numerator so the result stays accurate as alpha -> 0.
    """
    a, oma, beta, m, p, z, onehot_x0, m_z, q0_z, p_z = _terms(proc, x_t, x0, logits, t)
    marg_q = a * onehot_x0 + oma * m
    marg_p = a * p + oma * m
    mq_z = a * q0_z + oma * m_z
    mp_z = a * p_z + oma * m_z
    # D(y) = marg_p(y) marg_q(z) - marg_q(y) marg_p(z), with the oma^2 m(y) m(z) terms cancelled.
    D = a * (p * mq_z - oma * (p_z - q0_z) * m) - a * onehot_x0 * mp_z
    pos = marg_q > 0
    safe_q = torch.where(pos, marg_q, torch.ones_like(D))
    d = D / (safe_q * mp_z)
    r = (marg_p * mq_z) / (safe_q * mp_z)  # u_p / u_q, direct
    term = torch.where(pos, marg_q / mq_z * phi(d, r), marg_p / mp_z)
    return beta * m_z.squeeze(-1) * term.sum(-1)


def rate_kl_mean(proc, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    """Rate KL for the posterior-mean parameterisation (reverse rates = concrete-score ratios).

    The model's rate to y is beta m(z) u_p(y) with u_p(y) = sum_x0 p(x0) marg_x0(y) / marg_x0(z).
    With c0 = (1 - alpha) m(z), c1 = c0 + alpha and c(y) = c1 if y = z else c0,
    u_p(y) - u_q(y) = alpha [(p(y) - [y = x0]) / c(y) + (1 - alpha) m(y) ([z = x0] - p(z)) / (c0 c1)],
    which has no cancellation as alpha -> 0.
    """
    a, oma, beta, m, p, z, onehot_x0, m_z, q0_z, p_z = _terms(proc, x_t, x0, logits, t)
    c0 = oma * m_z
    c0 = torch.where(c0 > 0, c0, torch.ones_like(c0))  # m(z) = 0 rows are zeroed by beta m(z) below
    c1 = c0 + a
    c_y = c0.expand_as(p).scatter(-1, z, c1.expand_as(p_z))
    mq_z = torch.where(q0_z > 0, c1, c0)
    u_q = (a * onehot_x0 + oma * m) / mq_z
    diff = a * ((p - onehot_x0) / c_y + oma * m * (q0_z - p_z) / (c0 * c1))
    W = (1 - p_z) / c0 + p_z / c1  # sum_x0 p(x0) / c(x0)
    u_p = a * p / c_y + oma * m * W  # direct: accurate where u_p << u_q
    pos = u_q > 0
    safe_q = torch.where(pos, u_q, torch.ones_like(u_q))
    term = torch.where(pos, u_q * phi(diff / safe_q, u_p / safe_q), diff)
    return beta * m_z.squeeze(-1) * term.sum(-1)


def rate_kl_masked(proc, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    """MDLM: -alpha'(t) / (1 - alpha(t)) times the cross-entropy of x_0 at masked positions."""
    a = proc.schedule.alpha(t)
    w = expand_time((-proc.schedule.alpha_prime(t) / (1.0 - a)).to(x_t.device), x_t).float()
    nll = x0_nll(logits, x0)
    return torch.where(x_t == proc.mask_id, nll * w, torch.zeros_like(nll))


def _uniform_scalars(proc, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """alpha, c0 = (1 - alpha) / K, c1 = c0 + alpha (B, 1..) float64 and the position weight
    beta m = beta / K (B, 1..) float32 of the uniform closed form."""
    a64 = expand_time(proc.schedule.alpha(t).to(x_t.device), x_t)  # (B, 1..) float64
    with trusted_values():  # t was checked just now: rate's alpha and alpha' need not again
        beta = expand_time(proc.schedule.rate(t).to(x_t.device), x_t)
    K = proc.num_classes
    c0 = (1.0 - a64) / K
    c0 = torch.where(c0 > 0, c0, torch.ones_like(c0))  # alpha = 1 (t = 0): a zero-weight row
    return a64, c0, c0 + a64, (beta / K).float()


_CHUNK = 2**17  # elements of one row block of the backward on a CPU (512 KB of float32)


def _block_rows(p: Tensor, n: int) -> int:
    """Rows of one cache-sized block of p (..., K) on a CPU; on an accelerator every row at once
    (its kernels stream from memory anyway, and a block per launch would cost launches)."""
    if p.device.type != "cpu":
        return max(1, n)
    return max(1, _CHUNK // p.shape[-1])


class _UniformRateKL(torch.autograd.Function):
    """sum_{y != z} u_q(y) phi(u_p(y) / u_q(y)) per position in O(K), forward and backward.

    Outside M = {z, x0} every class has the same u_q and an affine u_p, so 1 + d(y) =
    Br (1 + A' p(y)) with per-position scalars Br > 0 and A' >= 0, and the sum over those
    classes is n phi(Br) + Bd A' others + (A' others - sum log1p(A' p)): one log1p pass over
    the probabilities; the at most two classes in M are per-position float64 terms. The
    backward needs one more reduction, sum p / (1 + A' p), and writes the gradient in the
    same pass. One (..., K) buffer (p) is kept between the passes; each pass adds one more.
    """

    @staticmethod
    def _rows(p: Tensor, z: Tensor, x0: Tensor, same: Tensor, a, c0, c1) -> dict[str, Tensor]:
        """Zero p at M (in place) and return the per-position float64 scalars (...)."""
        pz = p.gather(-1, z).squeeze(-1).double()
        px0 = p.gather(-1, x0).squeeze(-1).double()
        p.scatter_(-1, z, 0.0).scatter_(-1, x0, 0.0)
        others = p.sum(-1).double()  # sum over y not in M, no cancellation as p(z) -> 1
        a, c0, c1 = (v.expand_as(pz) for v in (a, c0, c1))
        rest_z = others + torch.where(same, 0.0, px0)  # 1 - p(z) as a sum
        rest_x0 = others + torch.where(same, 0.0, pz)
        # same (z = x0): u_q = c0 / c1 and d = alpha (c1 p / c0^2 + (1 - p(z)) / c0) for y != z;
        # z != x0, y != x0: u_q = 1 and d = alpha p / c0 - alpha p(z) / c1
        A = torch.where(same, a * c1 / (c0 * c0), a / c0)
        Bd = torch.where(same, a * rest_z / c0, -a * pz / c1)
        Br = torch.where(same, 1.0 + Bd, (c0 + a * rest_z) / c1)  # 1 + Bd, as a sum
        # z != x0, y = x0: u_q = c1 / c0, d and r = 1 + d written without cancellation
        d_x0 = -a * (rest_x0 / c1 + pz * c0 / (c1 * c1))
        r_x0 = a * px0 / c1 + c0 * (c0 + a * rest_z) / (c1 * c1)
        n = torch.where(same, p.shape[-1] - 1.0, p.shape[-1] - 2.0).double()
        return dict(
            pz=pz, px0=px0, others=others, A1=A / Br, Bd=Bd, Br=Br, d_x0=d_x0, r_x0=r_x0,
            n=n, a=a, c0=c0, c1=c1,
        )  # fmt: skip

    @staticmethod
    def forward(ctx, logits, x_t, x0, a, c0, c1, scale):  # type: ignore[override]
        z, x0i = x_t.unsqueeze(-1), x0.unsqueeze(-1)
        same = x_t == x0
        p = torch.softmax(logits.float(), dim=-1)
        s = _UniformRateKL._rows(p, z, x0i, same, a, c0, c1)
        u = torch.mul(p, s["A1"].float().unsqueeze(-1))
        log_sum = u.log1p_().sum(-1).double()  # (row blocks measured no faster here: compute-bound)
        del u
        A1o = s["A1"] * s["others"]
        # each term of the sum is >= 0: rounding may not make the total negative
        body = s["n"] * phi(s["Bd"], s["Br"]) + s["Bd"] * A1o + (A1o - log_sum).clamp_min(0.0)
        body = body.clamp_min(0.0)
        x0_term = s["c1"] / s["c0"] * phi(s["d_x0"], s["r_x0"])
        total = torch.where(same, s["c0"] / s["c1"] * body, body + x0_term)
        ctx.save_for_backward(p, x_t, x0, scale, *s.values())
        ctx.keys, ctx.dtype = list(s), logits.dtype
        return (total * scale).float()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        p, x_t, x0, scale, *vals = ctx.saved_tensors
        s = {k: v.reshape(-1) for k, v in zip(ctx.keys, vals, strict=True)}
        K = p.shape[-1]
        pf = p.view(-1, K)
        N = pf.shape[0]
        same = (x_t == x0).reshape(-1)
        slope, Br, A1, pz, px0 = s["a"] / s["c0"], s["Br"], s["A1"], s["pz"], s["px0"]
        # With R2 = sum_{y not in M} p / (1 + A' p) and h'(d) = d / (1 + d) = 1 - 1 / (Br (1 +
        # A' p)) outside M, every per-position constant of the gradient is affine in R2:
        # sum h' = (n Bd + A' R2) / Br, sum p h' = others - R2 / Br; g = slope h' outside M,
        # g(x0) = slope h'(d_x0), g(z) = -(alpha / c1) sum_{y != z} h', mean = sum p g.
        hp_x0 = torch.where(same, 0.0, s["d_x0"] / s["r_x0"])
        g_x0 = slope * hp_x0
        gz0 = -(s["a"] / s["c1"]) * (s["n"] * s["Bd"] / Br + hp_x0)
        gz1 = -(s["a"] / s["c1"]) * A1 / Br
        m0 = slope * s["others"] + pz * gz0 + torch.where(same, 0.0, px0 * g_x0)
        m1 = -slope / Br + pz * gz1
        gs = (grad.double() * scale).reshape(-1)
        # dL/dlogit(y) = gs p(y) (g(y) - mean) = ca p(y) + cb p(y) / (1 + A' p(y)) outside M
        ca0, ca1 = gs * (slope - m0), -gs * m1
        cb = (-gs * slope / Br).float().unsqueeze(-1)
        A1f = A1.float().unsqueeze(-1)
        out = torch.empty_like(pf)
        R2 = torch.empty(N, dtype=torch.float32, device=p.device)
        rows = _block_rows(p, N)  # two (rows, K) blocks stay in cache across the five passes
        for i in range(0, N, rows):
            j = min(N, i + rows)
            pc, w = pf[i:j], out[i:j]
            torch.mul(pc, A1f[i:j], out=w).add_(1.0)
            torch.div(pc, w, out=w)  # p / (1 + A' p), zero at M
            torch.sum(w, -1, out=R2[i:j])
            ca = (ca0[i:j] + ca1[i:j] * R2[i:j].double()).float().unsqueeze(-1)
            w.mul_(cb[i:j]).addcmul_(pc, ca)
        r2 = R2.double()
        mean = m0 + m1 * r2
        val_x0 = gs * px0 * (g_x0 - mean)
        val_z = gs * pz * (gz0 + gz1 * r2 - mean)
        out.scatter_(-1, x0.reshape(-1, 1), val_x0.float().unsqueeze(-1))
        out.scatter_(-1, x_t.reshape(-1, 1), val_z.float().unsqueeze(-1))  # after x0: z wins
        return out.view(p.shape).to(ctx.dtype), None, None, None, None, None, None


def rate_kl_uniform(
    proc, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor, *, native: bool | None = None
) -> Tensor:
    """:func:`rate_kl_mean` for the uniform process in closed form, (B, ...).

    With m = 1/K, c0 = (1 - alpha) / K and c1 = c0 + alpha, the model's scaled rate to y != z
    is u_p(y) = alpha p(y) / c0 + 1 - alpha p(z) / c1, affine in p(y), and the truth's u_q
    takes two values. So the KL is a per-position closed form plus one sum of log1p(A' p(y))
    over the classes (:class:`_UniformRateKL`), and its gradient needs one more sum,
    p / (1 + A' p). One softmax, one log1p and five cheap passes over (..., K) in all, at most
    two (..., K) buffers besides the gradient; same value and gradient as the general form and
    float64 brute force (tests, K up to 50,257).

    On a CPU the fused C kernel (:mod:`discdiff.native.uniform_kl`) computes the same value and
    gradient in one read of the logits; ``native=False`` forces the torch path, ``True``
    requires the kernel (RuntimeError with the reason where it is not built), None (default)
    uses it where it can.
    """
    a, c0, c1, scale = _uniform_scalars(proc, x_t, t)
    use = native is not False and fused.available(logits)
    if native and not use:
        why = reason() or f"logits on {logits.device}"
        raise RuntimeError(f"the fused uniform rate-KL kernel is unavailable: {why}")
    if use:
        return fused.uniform_rate_kl(logits, x_t, x0.long(), a, c0, c1, scale)
    return _UniformRateKL.apply(logits, x_t, x0.long(), a, c0, c1, scale)
