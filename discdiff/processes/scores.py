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

import torch
from torch import Tensor

from discdiff.categorical import one_hot
from discdiff.processes.base import expand_time
from discdiff.processes.rates import phi

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


def x0_from_scores(proc, x_t: Tensor, log_scores: Tensor, t: Tensor) -> Tensor:
    """x_0 log-probabilities (B, ..., K) from log concrete scores by inverting (1):
    with d = (1 - alpha) m(z) and S = sum_{y != z} s_y,
    p(z) = (alpha + d)(1 - d (1 + S)) / alpha and
    p(y) = (d / alpha)(s_y - (1 - alpha) m(y) [p(z) / (alpha + d) + (1 - p(z)) / d]), y != z;
    exact for exact scores, clipped to >= 0 and renormalised for a model's. A token of an
    absorbing process (m(z) = 0) is its own x_0."""
    a, oma, m, m_z, zhot = _setup(proc, x_t, t)
    s = torch.where(zhot > 0, torch.zeros_like(log_scores), log_scores.float().exp())
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
    return torch.log(p.clamp_min(1e-30))  # finite logits (a class the law rules out: 1e-30)


def score_entropy(proc, x_t: Tensor, x0: Tensor, log_scores: Tensor, t: Tensor) -> Tensor:
    """SEDD's diffusion-weighted denoising score entropy at each position, (B, ...) nats per
    unit time: beta m(z) sum_{y != z} [s_y - r_y log s_y + r_y (log r_y - 1)] in the stable
    form r_y phi(s_y / r_y) (s_y alone where r_y = 0)."""
    a, oma, m, m_z, zhot = _setup(proc, x_t, t)
    beta = expand_time(proc.schedule.rate(t).to(x_t.device), x_t).float()  # (B, ..)
    K = proc.num_classes
    x0hot = one_hot(x0.long(), K)
    marg = a * x0hot + oma * m  # q(y | x0) over the classes
    q_z = (x_t == x0.long()).float().unsqueeze(-1) * a + oma * m_z  # q(z | x0)
    r = marg / q_z.clamp_min(1e-30)  # true ratios
    ls = log_scores.float()
    pos = r > 0
    log_r = torch.log(torch.where(pos, r, torch.ones_like(r)))
    u = ls - log_r
    term = torch.where(pos, r * phi(torch.expm1(u), torch.exp(u)), ls.exp())
    term = torch.where(zhot > 0, torch.zeros_like(term), term).sum(-1)
    w = beta * m_z.squeeze(-1)
    return torch.where(w > 0, w * term, torch.zeros_like(term))
