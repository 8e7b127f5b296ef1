"""ReMDM remasking: its exact law by enumeration (the paper's kernel written out densely here),
eta = 0 equal to ancestral sampling in law, convergence to the joint, fixed positions."""

from __future__ import annotations

import pytest
import torch

from discdiff import Absorbing, LogLinear, ReMDMSampler, make_sampler
from discdiff.samplers import AncestralSampler
from discdiff.samplers.base import time_for_alpha, time_grid
from tests.oracle import all_sequences, gen
from tests.test_samplers import (
    TimeAgnostic,
    assert_matches,
    empirical,
    exact_ancestral_law,
    tv,
    tv_bound,
)

V, L = 3, 3


def loop_alpha(t: torch.Tensor, t_on: float, t_off: float, a_on: float) -> torch.Tensor:
    early = (1 - t) * a_on / (1 - t_on)
    late = 1 - t * (1 - a_on) / t_off
    return torch.where(t > t_on, early, torch.where(t <= t_off, late, torch.full_like(t, a_on)))


def exact_remdm_law(oracle, proc, steps, strategy, eta, t_on=0.55, t_off=0.05, a_on=0.9):
    """The exact output law of ReMDM with this oracle: the Markov chain over all S^L states,
    each step's kernel built from the paper's per-token probabilities."""
    S, m = proc.num_states, proc.mask_id
    states = all_sequences(S, L)  # (S^L, L)
    dist = (states == m).all(1).double()  # start fully masked
    grid = time_grid(proc, steps)
    alpha = proc.schedule.alpha(grid) if strategy != "loop" else loop_alpha(grid, t_on, t_off, a_on)
    told = grid if strategy != "loop" else time_for_alpha(proc.schedule, alpha)
    for i in range(grid.numel() - 1):
        a_t, a_s = float(alpha[i]), float(alpha[i + 1])
        cap = min(1.0, (1 - a_s) / a_t) if a_t > 0 else 1.0
        if strategy == "cap":
            sigma = min(eta, cap)
        elif strategy == "rescale":
            sigma = eta * cap
        else:
            sigma = min(eta, cap) if t_off < float(grid[i]) <= t_on else 0.0
        p = oracle(states, torch.full((states.shape[0],), float(told[i]))).double().softmax(-1)
        step = torch.zeros(states.shape[0], L, S, dtype=torch.float64)  # (from, position, to)
        masked = states == m
        step[..., :V] = torch.where(
            masked[..., None], p * (a_s - (1 - sigma) * a_t) / (1 - a_t), 0.0
        )
        step[..., m] = torch.where(masked, (1 - a_s - sigma * a_t) / (1 - a_t), sigma)
        keep = torch.nn.functional.one_hot(states, S).double() * (1 - sigma)
        step = torch.where(masked[..., None], step, keep + step * (~masked[..., None]))
        assert torch.allclose(step.sum(-1), torch.ones(()).double())
        step = step / step.sum(-1, keepdim=True)
        trans = torch.ones(states.shape[0], states.shape[0], dtype=torch.float64)
        for j in range(L):
            trans = trans * step[:, j, :][:, states[:, j]]
        dist = dist @ trans
    done = (states < V).all(1)
    assert abs(float(dist[done].sum()) - 1) < 1e-9  # the last step decodes everything
    return dist[done].reshape((V,) * L)


@pytest.mark.parametrize(
    "strategy, eta, steps",
    [("cap", 0.3, 12), ("rescale", 0.5, 12), ("loop", 0.3, 20)],
)
def test_remdm_follows_its_exact_law(joint, strategy, eta, steps):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    law = exact_remdm_law(oracle, proc, steps, strategy, eta)
    sampler = ReMDMSampler(steps, strategy=strategy, eta=eta)
    res = sampler.sample(oracle, proc, (3000, L), generator=gen(5))
    assert res.num_calls == steps
    assert_matches(res.samples, law, joint)
    # remasking really happened: the law differs from ancestral sampling's on the same grid
    if strategy != "loop":
        assert tv(law, exact_ancestral_law(oracle, proc, steps)) > 1e-3


@pytest.mark.parametrize("strategy", ["cap", "rescale"])
def test_remasking_off_is_ancestral_in_law(joint, strategy):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    law = exact_ancestral_law(oracle, proc, 8)
    assert tv(exact_remdm_law(oracle, proc, 8, strategy, 0.0), law) < 1e-6  # kernels agree
    res = ReMDMSampler(8, strategy=strategy, eta=0.0).sample(oracle, proc, (3000, L), gen(6))
    assert_matches(res.samples, law, joint)
    anc = AncestralSampler(8).sample(oracle, proc, (3000, L), generator=gen(7)).samples
    assert tv(empirical(res.samples), empirical(anc)) < 2 * tv_bound(law, 3000)


@pytest.mark.parametrize("strategy, eta", [("cap", 0.2), ("rescale", 0.7), ("loop", 0.1)])
def test_remasking_keeps_the_forward_marginals(strategy, eta):
    """With a denoiser that knows x_0, the state after each step has the masked fraction
    1 - alpha of its time (the marginal q(x_t | x_0) ReMDM preserves), whatever sigma is."""
    K, B, Lx = 5, 50, 200
    proc = Absorbing(K, LogLinear())
    x0 = torch.randint(K, (B, Lx), generator=gen(9))

    def knows_x0(x_t, t, cond=None):
        return torch.where(torch.nn.functional.one_hot(x0, K).bool(), 0.0, -30.0)

    sampler = ReMDMSampler(20, strategy=strategy, eta=eta)
    res = sampler.sample(knows_x0, proc, (B, Lx), generator=gen(10), return_trajectory=True)
    grid = time_grid(proc, 20)
    alpha = sampler.alphas(proc.schedule, grid)
    n = B * Lx
    for x, a in zip(res.trajectory, alpha.tolist(), strict=True):
        frac = float((x == proc.mask_id).double().mean())
        se = max((a * (1 - a) / n) ** 0.5, 1e-3)
        assert abs(frac - (1 - a)) < 5 * se, (strategy, a, frac)
        assert bool(((x == x0) | (x == proc.mask_id)).all())  # decoded tokens are x_0's
    assert torch.equal(res.samples, x0)


def test_fixed_positions_are_never_remasked(joint):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    n = 64
    values = torch.zeros(n, L, dtype=torch.long)
    values[:, 1] = 2
    mask = torch.zeros(n, L, dtype=torch.bool)
    mask[:, 1] = True
    res = ReMDMSampler(10, strategy="rescale", eta=1.0).sample(
        oracle, proc, (n, L), fixed=(values, mask), generator=gen(8), return_trajectory=True
    )
    assert all(bool((x[:, 1] == 2).all()) for x in res.trajectory)
    assert bool((res.samples < V).all())


def test_remdm_settings_are_checked_and_registered():
    s = make_sampler("remdm", steps=5, strategy="loop", eta=0.1)
    assert isinstance(s, ReMDMSampler) and s.config()["strategy"] == "loop"
    for bad in ({"strategy": "nope"}, {"eta": 1.5}, {"t_on": 0.1, "t_off": 0.2}):
        with pytest.raises(ValueError):
            ReMDMSampler(5, **bad)
