"""Tweedie and tau-leaping samplers: exact laws by enumeration, convergence as steps grow."""

from __future__ import annotations

import pytest
import torch

import discdiff as dd
from discdiff.samplers.base import time_grid
from tests.oracle import all_sequences, gen
from tests.test_samplers import (
    TimeAgnostic,
    assert_matches,
    exact_ancestral_law,
    oracle_for,
    tv,
)
from tests.test_score_entropy import ExactScores

V, L = 3, 3


def exact_tau_leaping_law(scores, proc, steps: int) -> torch.Tensor:
    """The exact law of tau-leaping with exact concrete scores: per position the jump
    probabilities Lambda m(z) s_y (renormalised past one), the Tweedie step last."""
    S = proc.num_states
    states = all_sequences(S, L)  # (S^L, L)
    dist = proc.prior_log_probs().exp()[states].prod(-1)
    grid = time_grid(proc, steps)
    oracle = oracle_for(scores.joint.reshape((V,) * L), proc)
    limit = proc.limit.double()
    for i in range(grid.numel() - 1):
        t = torch.full((states.shape[0],), float(grid[i]), dtype=torch.float64)
        s = torch.full_like(t, float(grid[i + 1]))
        if i == grid.numel() - 2:
            step = proc.posterior(states, oracle(states, t), s, t).double()
        else:
            a_t, a_s = proc.schedule.alpha(t[:1]), proc.schedule.alpha(s[:1])
            lam = float(torch.log(a_s / a_t)) if float(a_t) > 0 else float("inf")
            sc = scores(states, t.float()).double().exp()  # (N, L, V)
            jump = torch.zeros(states.shape[0], L, S, dtype=torch.float64)
            rate = limit[states].unsqueeze(-1) * sc  # m(z) s_y
            rate = torch.where(torch.isnan(rate * lam), 0.0, rate * lam)
            rate = rate.clamp(max=1e30)
            here = torch.nn.functional.one_hot(states.clamp_max(V), V + 1)[..., :V].bool()
            rate = torch.where(here, 0.0, rate)
            total = rate.sum(-1, keepdim=True)
            rate = torch.where(total > 1, rate / total, rate)
            jump[..., :V] = rate
            jump = jump.scatter_add(-1, states.unsqueeze(-1), 1 - rate.sum(-1, keepdim=True))
            step = jump
        step = step / step.sum(-1, keepdim=True)
        trans = torch.ones(states.shape[0], states.shape[0], dtype=torch.float64)
        for j in range(L):
            trans = trans * step[:, j, :][:, states[:, j]]
        dist = dist @ trans
    done = (states < V).all(1)
    assert abs(float(dist[done].sum()) - 1) < 1e-6
    return dist[done].reshape((V,) * L)


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_tau_leaping_follows_its_exact_law_and_converges(joint, kind):
    proc = dd.make_process(kind, V, schedule="loglinear")
    scores = ExactScores(joint, proc)
    law = exact_tau_leaping_law(scores, proc, 12)
    res = dd.TauLeapingSampler(12, output="scores").sample(
        scores, proc, (3000, L), generator=gen(1)
    )
    assert res.num_calls == 12
    assert_matches(res.samples, law, joint)
    x0_model = dd.TauLeapingSampler(12).sample(
        oracle_for(joint, proc), proc, (3000, L), generator=gen(1)
    )  # an x_0-predicting model through the same rates
    assert_matches(x0_model.samples, law, joint)
    gaps = [tv(exact_tau_leaping_law(scores, proc, n), joint) for n in (4, 16, 64)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.03, gaps


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_tweedie_with_exact_scores_is_ancestral_in_law(joint, kind):
    proc = dd.make_process(kind, V, schedule="loglinear")
    oracle = TimeAgnostic(joint, proc) if kind == "absorbing" else oracle_for(joint, proc)
    law = exact_ancestral_law(oracle, proc, 10)
    res = dd.TweedieSampler(10, output="scores").sample(
        ExactScores(joint, proc), proc, (3000, L), generator=gen(2)
    )
    assert_matches(res.samples, law, joint)


def test_score_samplers_refuse_other_processes():
    for sampler in (dd.TauLeapingSampler(3), dd.TweedieSampler(3)):
        with pytest.raises(TypeError, match="mixing process"):
            sampler.sample(
                lambda x, t: torch.zeros(2, L, V), dd.Uniform(V, dd.d3pm_cosine(5)), (2, L)
            )
    with pytest.raises(ValueError, match="output"):
        dd.TauLeapingSampler(3, output="logits")
