"""Discrete flow matching: kappa schedules, the generalized-KL loss (on a mask path it is the
masked ELBO example by example), the Euler solver's exact law and its convergence."""

from __future__ import annotations

import math

import pytest
import torch

import discdiff as dd
from discdiff.samplers.base import time_grid
from tests.oracle import all_sequences, gen
from tests.test_samplers import assert_matches, oracle_for, tv

V, L = 3, 3


def test_kappa_schedules_are_paths_from_source_to_data():
    tau = torch.linspace(0, 1, 11, dtype=torch.float64)
    for sched in (dd.PolynomialKappa(1), dd.PolynomialKappa(2.5), dd.CosineKappa()):
        k = sched.kappa(tau)
        assert k[0] == 0 and k[-1] == 1 and bool((k[1:] >= k[:-1]).all())
        t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
        h = 1e-6
        fd = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
        torch.testing.assert_close(sched.alpha_prime(t), fd, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(dd.PolynomialKappa(1).alpha(tau), dd.LogLinear().alpha(tau))
    from discdiff.schedules import make_schedule, schedule_config

    assert schedule_config(make_schedule("kappa-poly", exponent=2))["exponent"] == 2


@pytest.mark.parametrize("sched", [dd.LogLinear(), dd.PolynomialKappa(2), dd.CosineKappa()])
def test_generalized_kl_on_a_mask_path_is_the_masked_elbo_example_by_example(sched):
    K, B, Lx = 6, 32, 9
    proc = dd.Absorbing(K, sched)
    x1 = torch.randint(K, (B, Lx), generator=gen(0))
    table = torch.randn(B, Lx, K, generator=gen(1)) * 2

    def model(x_t, t, cond=None):  # logits that also depend on the input
        return table + 0.3 * (x_t[..., None] == torch.arange(K)).float()

    got = dd.dfm_loss(proc, model, x1, generator=gen(2))
    want = dd.continuous_elbo(proc, model, x1, boundary=False, generator=gen(2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ce = dd.dfm_loss(proc, model, x1, kind="cross_entropy", generator=gen(2))
    assert ce.shape == (B,) and bool((ce > 0).all())


def test_generalized_kl_is_zero_for_a_perfect_model_and_positive_otherwise():
    K, B, Lx = 5, 16, 8
    proc = dd.Uniform(K, dd.PolynomialKappa(2))
    x1 = torch.randint(K, (B, Lx), generator=gen(3))
    perfect = lambda x_t, t, cond=None: 40.0 * torch.nn.functional.one_hot(x1, K).float()  # noqa: E731
    assert dd.dfm_loss(proc, perfect, x1, generator=gen(4)).abs().max() < 1e-4
    noisy = lambda x_t, t, cond=None: torch.randn(B, Lx, K, generator=gen(5))  # noqa: E731
    assert bool((dd.dfm_loss(proc, noisy, x1, generator=gen(4)) > 0).all())
    with pytest.raises(ValueError, match="kind"):
        dd.dfm_loss(proc, noisy, x1, kind="mse")


def exact_euler_law(oracle, proc, steps: int, div_free: float = 0.0) -> torch.Tensor:
    """The exact output law of the Euler solver, by enumerating the states (S^L)."""
    S = proc.num_states
    states = all_sequences(S, L)
    N = states.shape[0]
    dist = proc.prior_log_probs().exp()[states].prod(-1)
    grid = time_grid(proc, steps)
    src = proc.limit.double()
    mask_id = getattr(proc, "mask_id", None)
    for i in range(grid.numel() - 1):
        t = torch.full((N,), float(grid[i]), dtype=torch.float64)
        p = oracle(states, t).double().softmax(-1)  # (N, L, V)
        p = torch.nn.functional.pad(p, (0, S - V))
        if mask_id is not None:  # carry-over of decoded tokens
            keep = torch.nn.functional.one_hot(states, S).double()
            p = torch.where((states != mask_id)[..., None], keep, p)
        if i == grid.numel() - 2:
            step = p
        else:
            kap, dk = float(proc.schedule.alpha(t[:1])), float(-proc.schedule.alpha_prime(t[:1]))
            h = float(grid[i] - grid[i + 1])
            coef = dk / (1 - kap)
            cdiv = div_free * dk / (kap * (1 - kap)) if 0 < kap < 1 else 0.0
            step = torch.zeros(N, L, S, dtype=torch.float64)
            here = torch.nn.functional.one_hot(states, S).bool()
            for v in range(S):
                onev = torch.zeros(S, dtype=torch.float64)
                onev[v] = 1
                u = coef * onev + cdiv * ((1 - kap) * src + kap * onev)  # (S,)
                u = torch.where(here, 0.0, u.expand(N, L, S))
                lam = u.sum(-1, keepdim=True)
                go = -torch.expm1(-h * lam)
                trans = torch.where(lam > 0, go * u / lam.clamp_min(1e-300), 0.0)
                trans = trans + torch.where(here, 1 - go, 0.0)
                step = step + p[..., v : v + 1] * trans
        step = step / step.sum(-1, keepdim=True)
        trans = torch.ones(N, N, dtype=torch.float64)
        for j in range(L):
            trans = trans * step[:, j, :][:, states[:, j]]
        dist = dist @ trans
    done = (states < V).all(1)
    assert abs(float(dist[done].sum()) - 1) < 1e-6
    return dist[done].reshape((V,) * L)


@pytest.mark.parametrize(
    "kind, div_free", [("absorbing", 0.0), ("absorbing", 1.0), ("uniform", 0.0), ("uniform", 0.5)]
)
def test_euler_solver_follows_its_exact_law_and_converges(joint, kind, div_free):
    proc = dd.make_process(kind, V, schedule=dd.PolynomialKappa(1))
    oracle = oracle_for(joint, proc)
    law = exact_euler_law(oracle, proc, 10, div_free)
    res = dd.DFMEulerSampler(10, div_free=div_free).sample(
        oracle, proc, (3000, L), generator=gen(6)
    )
    assert res.num_calls == 10
    assert_matches(res.samples, law, joint)
    gaps = [tv(exact_euler_law(oracle, proc, n, div_free), joint) for n in (4, 16, 64)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.04, gaps
    assert math.isfinite(gaps[-1])
