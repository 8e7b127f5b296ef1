"""Reverse-rate KLs of the continuous-time ELBO, per position: the maths of each process family.

``rate_kl(x_t, x0, logits, t)`` on a process is the integrand of the continuous-time ELBO at
time t: the KL between the true reverse jump rates (given x_0) and the model's (given logits
over x_0), (B, ...). Processes offer it as a method; :func:`discdiff.losses.continuous_elbo`
works for any process that has one. The closed forms below are O(K) per position and free of
cancellation as alpha -> 0 and where the model is confidently wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor

from discdiff.processes.base import expand_time

__all__ = ["phi", "rate_kl_d3pm", "rate_kl_mean", "rate_kl_masked", "rate_kl_uniform", "x0_nll"]


def x0_nll(logits: Tensor, x0: Tensor) -> Tensor:
    """-log softmax(logits)[x0] per position, (B, ...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, x0.long().unsqueeze(-1)).squeeze(-1)


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
    m = proc.limit.to(x_t.device).float()  # (S,)
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
    beta = expand_time(proc.schedule.rate(t).to(x_t.device), x_t)
    K = proc.num_classes
    c0 = (1.0 - a64) / K
    c0 = torch.where(c0 > 0, c0, torch.ones_like(c0))  # alpha = 1 (t = 0): a zero-weight row
    return a64, c0, c0 + a64, (beta / K).float()


def _sum_except(p: Tensor, idx: Tensor) -> Tensor:
    """sum_{y != idx} p(y) (...) without the cancellation of 1 - p(idx); p is restored."""
    at = p.gather(-1, idx)
    p.scatter_(-1, idx, 0.0)
    out = p.sum(-1)
    p.scatter_(-1, idx, at)
    return out


class _UniformRateKL(torch.autograd.Function):
    """sum_{y != z} u_q(y) phi(u_p(y) / u_q(y)) per position in O(K), forward and backward,
    with at most four (..., K) float32 buffers; the backward pass recomputes from the logits."""

    @staticmethod
    def _sums(p: Tensor, z: Tensor, x0: Tensor, same: Tensor) -> tuple[Tensor, ...]:
        """p(z), p(x0), 1 - p(z), 1 - p(x0) (...) float64, the last two as sums (no
        cancellation where a probability rounds to 1), from one pass over p (restored)."""
        pz, px0 = p.gather(-1, z), p.gather(-1, x0)  # (..., 1)
        p.scatter_(-1, z, 0.0).scatter_(-1, x0, 0.0)
        others = p.sum(-1).double()  # sum over y not in {z, x0}
        p.scatter_(-1, z, pz).scatter_(-1, x0, px0)
        pz, px0 = pz.squeeze(-1).double(), px0.squeeze(-1).double()
        rest_z = others + torch.where(same, 0.0, px0)
        rest_x0 = others + torch.where(same, 0.0, pz)
        return pz, px0, rest_z, rest_x0

    @staticmethod
    def _terms(p: Tensor, x0: Tensor, same: Tensor, sums: tuple[Tensor, ...], a, c0, c1):
        """(d, r): d = u_p / u_q - 1 and r = 1 + d for every class (garbage at y = z), r
        written as a sum of non-negative terms (accurate where d -> -1)."""
        pz, px0, rest_z, rest_x0 = sums
        a, c0, c1 = (v.expand_as(pz) for v in (a, c0, c1))
        # z = x0: u_q = c0 / c1 for every y != z, and d = alpha (c1 p / c0^2 + (1 - p(z)) / c0)
        # z != x0: u_q = 1 (y != x0), d = alpha (p / c0 - p(z) / c1), r = alpha p / c0 + b1
        A = torch.where(same, a * c1 / (c0 * c0), a / c0).float().unsqueeze(-1)
        Bd = torch.where(same, a * rest_z / c0, -a * pz / c1)
        b1 = (c0 + a * rest_z) / c1
        Br = torch.where(same, 1.0 + Bd, b1)
        d = torch.addcmul(Bd.float().unsqueeze(-1), p, A)
        r = torch.addcmul(Br.float().unsqueeze(-1), p, A)
        # z != x0, y = x0: u_q = c1 / c0
        d_x0 = -a * (rest_x0 / c1 + pz * c0 / (c1 * c1))
        r_x0 = a * px0 / c1 + c0 * (c0 + a * rest_z) / (c1 * c1)
        keep_d = d.gather(-1, x0).squeeze(-1).double()
        keep_r = r.gather(-1, x0).squeeze(-1).double()
        d.scatter_(-1, x0, torch.where(same, keep_d, d_x0).float().unsqueeze(-1))
        r.scatter_(-1, x0, torch.where(same, keep_r, r_x0).float().unsqueeze(-1))
        return d, r

    @staticmethod
    def forward(ctx, logits, x_t, x0, a, c0, c1, scale):  # type: ignore[override]
        z, x0i = x_t.unsqueeze(-1), x0.unsqueeze(-1)
        same = x_t == x0
        p = torch.softmax(logits.float(), dim=-1)
        sums = _UniformRateKL._sums(p, z, x0i, same)
        d, r = _UniformRateKL._terms(p, x0i, same, sums, a, c0, c1)
        del p
        # phi(1 + d) = d - log(1 + d): log1p(d) where 1 + d is accurate, log(r) near d = -1
        log_r = torch.log1p(d)
        torch.where(d < -0.5, r.log_(), log_r, out=log_r)
        del r
        h = d.sub_(log_r)
        del log_r
        h.scatter_(-1, z, 0.0)
        w = torch.where(same, c0 / c1, torch.ones_like(c0)).float()  # (...)
        q_x0 = (c1 / c0).float().expand_as(w)
        h_x0 = h.gather(-1, x0i).squeeze(-1)
        total = torch.where(same, w * h.sum(-1), h.sum(-1) + (q_x0 - 1) * h_x0)
        ctx.save_for_backward(logits, x_t, x0, a, c0, c1, scale, *sums)
        return total * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        logits, x_t, x0, a, c0, c1, scale, *sums = ctx.saved_tensors
        z, x0i = x_t.unsqueeze(-1), x0.unsqueeze(-1)
        same = x_t == x0
        p = torch.softmax(logits.float(), dim=-1)
        G, r = _UniformRateKL._terms(p, x0i, same, tuple(sums), a, c0, c1)
        G.div_(r)  # h'(d) = d / (1 + d)
        del r
        G.scatter_(-1, z, 0.0)
        sum_h = G.sum(-1, keepdim=True)  # (..., 1): over y != z
        pG = torch.matmul(p.unsqueeze(-2), G.unsqueeze(-1)).squeeze(-1)  # sum_{y != z} p G
        # dL/dlogit = p (g - sum p g) with g(y) = (alpha / c0) h'(d(y)) for y != z and
        # g(z) = -(alpha / c1) sum_h, times the upstream gradient: one scaled pass over G
        gs = (grad * scale).unsqueeze(-1)  # (..., 1)
        slope = (a / c0).float().unsqueeze(-1)
        g_z = -(a / c1).float().unsqueeze(-1) * sum_h
        mean = slope * pG + sums[0].float().unsqueeze(-1) * g_z
        G.mul_(slope * gs).sub_(mean * gs).mul_(p)
        G.scatter_(-1, z, (g_z - mean) * gs * sums[0].float().unsqueeze(-1))
        return G.to(logits.dtype), None, None, None, None, None, None


def rate_kl_uniform(proc, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    """:func:`rate_kl_mean` for the uniform process in closed form, (B, ...).

    With m = 1/K, c0 = (1 - alpha) / K and c1 = c0 + alpha, the model's scaled rate to y != z
    is u_p(y) = alpha p(y) / c0 + 1 - alpha p(z) / c1, affine in p(y), and the truth's u_q
    takes two values. So the KL is one pass of phi over d = u_p / u_q - 1 (per-position affine
    maps of p, written without cancellation), a special term at y = x0 when z != x0, and the
    backward pass is G(y) = (alpha / c0) h'(d(y)), G(z) = -(alpha / c1) sum_{y != z} h'(d(y)),
    h'(d) = d / (1 + d), pulled through the softmax. Same value and gradient as the general
    form (tests), with four (..., K) buffers instead of about twenty.
    """
    a, c0, c1, scale = _uniform_scalars(proc, x_t, t)
    return _UniformRateKL.apply(logits, x_t, x0.long(), a, c0, c1, scale)
