"""D3PM's discretized-Gaussian transition for ordinal data such as pixel intensities.

Austin et al. 2021 ("Structured Denoising Diffusion Models in Discrete State-Spaces",
appendix A.2.1) mimic a Gaussian kernel on the K ordered states 0..K-1:

    Q_t[i, j] = exp(-4 (i - j)^2 / ((K - 1)^2 beta_t)) / Z_t                 for i != j
    Z_t       = sum_{n = -(K-1)}^{K-1} exp(-4 n^2 / ((K - 1)^2 beta_t))
    Q_t[i, i] = 1 - sum_{l != i} Q_t[i, l]

The normaliser Z_t is the same for every row (it runs over all offsets, n = 0 included), so
Q_t[i, j] depends only on |i - j|: Q_t is symmetric, hence doubly stochastic, and the uniform
distribution is stationary; the prior is uniform. Mass moves mostly to nearby intensities
(standard deviation (K - 1) sqrt(beta_t / 8) states per step). Being neither uniform nor
absorbing, it has no O(K) closed form and runs on the explicit (T, K, K) matrices of
:class:`~discdiff.processes.dense.Dense`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from discdiff.processes.dense import Dense
from discdiff.schedules import DiscreteSchedule

__all__ = [
    "gaussian_step_matrices",
    "d3pm_gaussian_schedule",
    "discretized_gaussian",
]


def _check_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


def _betas(betas: Tensor | list[float] | DiscreteSchedule) -> Tensor:
    if isinstance(betas, DiscreteSchedule):
        return betas.betas
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 1:
        raise ValueError("need at least one beta")
    if not bool(torch.isfinite(b).all()) or bool((b < 0).any()):
        raise ValueError(
            f"betas must be finite and >= 0, got {b[~torch.isfinite(b) | (b < 0)][0].item()}"
        )
    return b


def gaussian_step_matrices(
    num_classes: int,
    betas: Tensor | list[float] | DiscreteSchedule,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The discretized-Gaussian step matrices Q_1..Q_T, (T, K, K), rows "from" (see module).

    ``betas`` (T,) >= 0 or a DiscreteSchedule (its per-step betas); beta = 0 gives the
    identity. Built in float64 in log space, so tiny betas underflow cleanly to 0 off the
    diagonal; the diagonal is the kernel mass at offset 0 plus the mass of the offsets that
    fall outside the row, so it is non-negative by construction.
    """
    K = _check_classes(num_classes)
    b = _betas(betas)  # (T,)
    T = b.numel()
    n = torch.arange(K, dtype=torch.float64)  # offsets 0..K-1
    safe = torch.where(b > 0, b, torch.ones_like(b))
    logits = -4.0 * n[None, :] ** 2 / ((K - 1) ** 2 * safe[:, None])  # (T, K)
    # log Z over all offsets -(K-1)..K-1: offset 0 once, every other offset twice.
    both = torch.cat([logits[:, 1:], logits], dim=1)  # (T, 2K - 1)
    w = torch.exp(logits - torch.logsumexp(both, dim=1, keepdim=True))  # (T, K): weight of |i-j|
    w = torch.where((b > 0)[:, None], w, (n == 0).to(w.dtype)[None, :].expand(T, K))
    # tail[:, m] = sum_{n >= m} w[:, n], with tail[:, K] = 0
    tail = torch.flip(torch.cumsum(torch.flip(w, [1]), 1), [1])  # (T, K)
    tail = torch.cat([tail, torch.zeros(T, 1, dtype=w.dtype)], dim=1)  # (T, K + 1)
    i = torch.arange(K)
    dist = (i[:, None] - i[None, :]).abs()  # (K, K)
    Q = w[:, dist]  # (T, K, K)
    # row i lacks offsets -(K-1)..-(i+1) and K-i..K-1: that mass stays on the diagonal.
    diag = w[:, :1] + tail[:, i + 1] + tail[:, K - i]  # (T, K)
    Q[:, i, i] = diag
    return Q.to(dtype)


def d3pm_gaussian_schedule(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> DiscreteSchedule:
    """D3PM's betas for the Gaussian transition: linear from 1e-4 to 0.02 over T = 1000 steps.

    These are Ho et al.'s DDPM betas, the D3PM-Gauss CIFAR-10 setting (the official config
    comments "1e-4 gauss, 0.02 uniform" / "0.02 gauss, 1. uniform"). Only the betas are meant:
    this schedule's alpha(t) (keep probability of a uniform/absorbing chain) has no meaning
    for the Gaussian kernel.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not (0.0 <= beta_start <= 1.0 and 0.0 <= beta_end <= 1.0):
        raise ValueError(f"betas must lie in [0, 1], got {beta_start}, {beta_end}")
    return DiscreteSchedule(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))


def discretized_gaussian(
    num_classes: int,
    betas: Tensor | list[float] | DiscreteSchedule | None = None,
    dtype: torch.dtype = torch.float64,
) -> Dense:
    """A :class:`Dense` process with D3PM's discretized-Gaussian steps and a uniform prior.

    ``betas`` defaults to :func:`d3pm_gaussian_schedule` (T = 1000). Memory: Dense keeps Q
    and its T + 1 cumulative products, about 2 T K^2 x 8 bytes in float64 (1.05 GB at
    K = 256, T = 1000; half that with dtype=torch.float32).
    """
    K = _check_classes(num_classes)
    Q = gaussian_step_matrices(K, d3pm_gaussian_schedule() if betas is None else betas)  # (T, K, K)
    prior = torch.full((K,), 1.0 / K, dtype=torch.float64)
    return Dense(Q.to(dtype), prior=prior.to(dtype), dtype=dtype)
