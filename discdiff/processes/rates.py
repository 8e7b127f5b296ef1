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

__all__ = ["phi", "rate_kl_d3pm", "rate_kl_mean", "rate_kl_masked", "x0_nll"]


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
