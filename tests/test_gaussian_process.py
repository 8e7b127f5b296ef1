"""D3PM's discretized-Gaussian transition: the paper's formula, stochasticity, symmetry,
locality, and the Dense process built on it against brute-force matrix products."""

from __future__ import annotations

import math

import pytest
import torch

from discdiff.processes.dense import Dense
from discdiff.processes.gaussian import (
    d3pm_gaussian_schedule,
    discretized_gaussian,
    gaussian_step_matrices,
)
from discdiff.schedules import DiscreteSchedule


def paper_matrix(K: int, beta: float) -> list[list[float]]:
    """Austin et al. 2021, appendix A.2.1, written out with Python floats and explicit loops."""
    z = sum(math.exp(-4 * n * n / ((K - 1) ** 2 * beta)) for n in range(-(K - 1), K))
    Q = [[0.0] * K for _ in range(K)]
    for i in range(K):
        for j in range(K):
            if i != j:
                Q[i][j] = math.exp(-4 * (i - j) ** 2 / ((K - 1) ** 2 * beta)) / z
        Q[i][i] = 1.0 - sum(Q[i][j] for j in range(K) if j != i)
    return Q


@pytest.mark.parametrize("K", [2, 3, 7, 16])
def test_matches_paper_formula(K: int) -> None:
    betas = [0.01, 0.3, 2.0]
    Q = gaussian_step_matrices(K, betas)
    assert Q.shape == (3, K, K) and Q.dtype == torch.float64
    for k, beta in enumerate(betas):
        ref = torch.tensor(paper_matrix(K, beta), dtype=torch.float64)
        torch.testing.assert_close(Q[k], ref, rtol=1e-12, atol=1e-14)


def test_stochastic_symmetric_and_uniform_stationary() -> None:
    K = 16
    Q = gaussian_step_matrices(K, d3pm_gaussian_schedule())  # (1000, K, K)
    assert bool((Q >= 0).all())
    torch.testing.assert_close(
        Q.sum(-1), torch.ones(1000, K, dtype=torch.float64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(Q, Q.transpose(1, 2), rtol=0, atol=0)
    u = torch.full((K,), 1.0 / K, dtype=torch.float64)
    torch.testing.assert_close(u @ Q, u.expand(1000, K), rtol=0, atol=1e-15)


def test_mass_decreases_with_distance() -> None:
    K = 9
    Q = gaussian_step_matrices(K, [0.05, 0.5, 5.0])
    for k in range(Q.shape[0]):
        for i in range(K):
            right = Q[k, i, i:]  # offsets 0, 1, 2, ... to the right
            left = Q[k, i, : i + 1].flip(0)  # offsets 0, 1, 2, ... to the left
            for side in (right, left):
                # the diagonal holds at least the kernel's peak; off it, strictly decreasing
                assert bool((side[1:] < side[:-1]).all()), (k, i, side)


def test_wider_kernel_for_larger_beta() -> None:
    K = 12
    Q = gaussian_step_matrices(K, [0.01, 0.1, 1.0])
    dist = (torch.arange(K)[:, None] - torch.arange(K)[None, :]).abs().double()
    mean_jump = (Q * dist).sum(-1).mean(-1)  # (3,) expected |x_k - x_{k-1}|
    assert bool((mean_jump[1:] > mean_jump[:-1]).all())


def test_zero_and_tiny_beta_give_identity() -> None:
    Q = gaussian_step_matrices(256, [0.0, 1e-9])
    eye = torch.eye(256, dtype=torch.float64)
    assert bool(torch.isfinite(Q).all())
    torch.testing.assert_close(Q[0], eye, rtol=0, atol=0)
    torch.testing.assert_close(Q[1], eye, rtol=0, atol=1e-300)


def test_default_schedule_is_d3pm_linear() -> None:
    s = d3pm_gaussian_schedule()
    assert isinstance(s, DiscreteSchedule) and s.num_steps == 1000
    torch.testing.assert_close(s.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    # a schedule and its betas build the same matrices
    torch.testing.assert_close(gaussian_step_matrices(4, s), gaussian_step_matrices(4, s.betas))


def test_dense_marginals_and_posterior_match_brute_force() -> None:
    K, T = 5, 4
    betas = [0.02, 0.2, 0.7, 3.0]
    proc = discretized_gaussian(K, betas)
    assert isinstance(proc, Dense)
    assert (proc.num_classes, proc.num_states, proc.num_steps) == (K, K, T)
    torch.testing.assert_close(
        proc.prior_log_probs().exp(), torch.full((K,), 1.0 / K, dtype=torch.float64)
    )
    steps = [torch.tensor(paper_matrix(K, b), dtype=torch.float64) for b in betas]
    cum = [torch.eye(K, dtype=torch.float64)]
    for Qk in steps:
        cum.append(cum[-1] @ Qk)
    x0 = torch.arange(K).repeat(T + 1, 1)  # (T + 1, K): every class at every step
    t = torch.arange(T + 1, dtype=torch.float64) / T  # (T + 1,)
    marg = proc.marginal(x0, t)  # (T + 1, K, K)
    for k in range(T + 1):
        torch.testing.assert_close(marg[k], cum[k], rtol=1e-12, atol=1e-14)
    # exact posterior q(x_{k-1} | x_k, x0) by Bayes with explicit products
    x_t = torch.tensor([[0, 3, 4, 1, 2]]).repeat(T, 1)  # (T, K)
    kk = torch.arange(1, T + 1)
    post = proc.posterior(x_t, x0[:T], (kk - 1).double() / T, kk.double() / T)  # (T, K, K)
    for r in range(T):
        k = int(kk[r])
        for n in range(K):
            a, z = int(x0[r, n]), int(x_t[r, n])
            joint = cum[k - 1][a] * steps[k - 1][:, z]  # (K,)
            torch.testing.assert_close(post[r, n], joint / joint.sum(), rtol=1e-10, atol=1e-14)


def test_default_process_reaches_uniform_prior() -> None:
    K = 16
    proc = discretized_gaussian(K)
    assert proc.num_steps == 1000
    x0 = torch.arange(K)[None, :]  # (1, K)
    kl = proc.kl_prior(x0)  # (1, K) nats per pixel
    assert bool((kl >= 0).all()) and float(kl.max()) < 1e-3
    # while early steps stay close to the data
    early = proc.marginal(x0, torch.tensor([0.01]))[0]  # (K, K)
    assert float(early.diagonal().min()) > 0.5


def test_float32_dense() -> None:
    proc = discretized_gaussian(8, [0.1, 0.5], dtype=torch.float32)
    assert proc.step_matrices.dtype == torch.float32
    torch.testing.assert_close(
        proc.step_matrices, gaussian_step_matrices(8, [0.1, 0.5]).float(), rtol=0, atol=0
    )


@pytest.mark.parametrize(
    "K, betas, match",
    [
        (1, [0.1], "num_classes"),
        (2.0, [0.1], "num_classes"),
        (4, [-0.1], "betas"),
        (4, [float("nan")], "betas"),
        (4, [], "beta"),
    ],
)
def test_bad_arguments(K: int, betas: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gaussian_step_matrices(K, betas)


def test_bad_schedule_arguments() -> None:
    with pytest.raises(ValueError, match="num_steps"):
        d3pm_gaussian_schedule(0)
    with pytest.raises(ValueError, match="betas"):
        d3pm_gaussian_schedule(10, beta_end=1.5)


def test_training_gradients_are_finite_where_the_kernel_underflows() -> None:
    """At beta = 1e-4 the Gaussian kernel has exact zeros; the VLB's gradient must stay finite."""
    from discdiff.losses import vlb_loss

    proc = discretized_gaussian(16)
    w = torch.zeros(16, requires_grad=True)
    x0 = torch.randint(0, 16, (8, 10), generator=torch.Generator().manual_seed(0))
    loss = vlb_loss(
        proc, lambda x, t: w.expand(*x.shape, 16), x0, generator=torch.Generator().manual_seed(0)
    )
    loss.mean().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(w.grad).all()


def _mean_posterior_by_definition(proc: Dense, xt: int, probs: list[float], ks: int, kt: int):
    """sum_x0 p(x0) q(x_s | x_t, x0), each q(. | x_t, x0) normalised on its own in log space."""
    qs = proc.cumulative(ks).tolist()
    fwd = proc.span(ks, kt)[:, xt].tolist()
    S = len(fwd)
    out = [0.0] * S
    for x0, p in enumerate(probs):
        logs = [
            math.log(qs[x0][y]) + math.log(fwd[y]) if qs[x0][y] > 0 and fwd[y] > 0 else -math.inf
            for y in range(S)
        ]
        top = max(logs)
        if top == -math.inf:
            continue  # x_t cannot come from this x0
        norm = top + math.log(math.fsum(math.exp(v - top) for v in logs))
        for y in range(S):
            out[y] += p * math.exp(logs[y] - norm)
    total = math.fsum(out)
    return [v / total for v in out]


def test_model_posterior_is_exact_where_far_x0_have_denormal_likelihoods() -> None:
    """Early steps of the narrow kernel: q(x_t | x0) reaches ~1e-310 for far x0, which made the
    plain p(x0) / q(x_t | x0) overflow (NaN rows, infinite losses at k <= 10). Compare with the
    definition, each x0's posterior normalised on its own."""
    K = 16
    proc = discretized_gaussian(K)
    assert float(proc.cumulative(10)[0].min()) < 1e-300  # the regime this test is about
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, K, K, generator=g, dtype=torch.float64, requires_grad=True)
    xt = torch.arange(K).unsqueeze(0)  # (1, K): every x_t once
    for kt in (1, 2, 5, 10, 40, 200, 1000):  # the first five take the exact log-space form
        t = torch.tensor([kt / proc.num_steps])
        s = torch.tensor([(kt - 1) / proc.num_steps])
        lp = proc.posterior_log(xt, logits, s, t)  # (1, K, S)
        assert torch.isfinite(lp.exp()).all() and not torch.isnan(lp).any()
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(1, K, dtype=lp.dtype))
        probs = torch.softmax(logits.detach(), -1)[0]
        for x in range(K):
            ref = _mean_posterior_by_definition(proc, x, probs[x].tolist(), kt - 1, kt)
            torch.testing.assert_close(
                lp[0, x].exp().detach(), torch.tensor(ref, dtype=lp.dtype), rtol=1e-9, atol=1e-12
            )
        lp.exp().pow(2).sum().backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None
