"""SundaeSampler (SUNDAE's unrolled denoising for uniform noise): early stop, argmax-unrolled
decoding by confidence, and the ranking of several starts, on the exact oracle of a random joint
over V^L sequences."""

from __future__ import annotations

import pytest
import torch

from discdiff import Absorbing, LogLinear, Uniform
from discdiff.samplers import SundaeSampler
from tests.oracle import ExactOracle, random_joint

V, L = 3, 3


@pytest.fixture(scope="module")
def joint() -> torch.Tensor:
    return random_joint(V, L, torch.Generator().manual_seed(0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sundae_early_stop_saves_calls_with_a_deterministic_model(joint):
    proc = Uniform(V, LogLinear())
    oracle = ExactOracle(joint, proc)
    on = SundaeSampler(50, argmax=True).sample(oracle, proc, (16, L), generator=gen(14))
    off = SundaeSampler(50, argmax=True, early_stop=False).sample(
        oracle, proc, (16, L), generator=gen(14)
    )
    assert off.num_calls == 50 and on.num_calls < 50
    # each row stops at its first fixed point of the argmax update and stays frozen there
    seen = []

    def recording(x_t, t, cond=None):
        out = oracle(x_t, t)
        seen.append((x_t.clone(), out.argmax(-1)))
        return out

    res = SundaeSampler(50, argmax=True).sample(recording, proc, (16, L), generator=gen(14))
    assert torch.equal(res.samples, on.samples)
    for row in range(16):
        first = next(j for j, (x, best) in enumerate(seen) if torch.equal(x[row], best[row]))
        assert torch.equal(res.samples[row], seen[first][0][row])
    with pytest.raises(TypeError, match="Uniform"):
        a = Absorbing(V, LogLinear())
        SundaeSampler(5).sample(ExactOracle(joint, a), a, (2, L))


def test_sundae_early_stop_is_an_unchanged_update_and_fires_when_sampling(joint):
    """A row stops after ``patience`` steps in a row that leave it unchanged (default
    ceil(3 / rho): one unchanged step at rho = 0.3 froze rows far from converged), and stays
    frozen; with stochastic proposals at temperature 0.8 this happens."""
    import math

    proc = Uniform(V, LogLinear())
    oracle = ExactOracle(joint, proc)
    sampler = SundaeSampler(200, proportion=0.3, temperature=0.8, early_stop=True)
    assert not SundaeSampler(200).early_stop and SundaeSampler(200, argmax=True).early_stop
    assert sampler._patience == math.ceil(3 / 0.3) == 10
    res = sampler.sample(oracle, proc, (32, L), generator=gen(21), return_trajectory=True)
    assert res.num_calls < 200
    assert res.rows_evaluated < res.num_calls * 32  # stopped rows are not evaluated
    traj = torch.stack(res.trajectory)  # (steps + 1, B, L)
    k = sampler._patience
    for row in range(32):
        still = (traj[1:, row] == traj[:-1, row]).all(-1).tolist()  # (steps,)
        runs = [j for j in range(len(still) - k + 1) if all(still[j : j + k])]
        assert runs, row  # it stopped
        first = runs[0] + k  # frozen from the step after its k-th unchanged one
        assert all(still[first:]), row
        # no earlier stop: before ``first`` no k unchanged steps in a row
        assert all(not all(still[j : j + k]) for j in range(runs[0])), row
    one = SundaeSampler(200, proportion=0.3, temperature=0.8, patience=1, early_stop=True)
    quick = one.sample(oracle, proc, (32, L), generator=gen(21))
    assert quick.num_calls < res.num_calls  # the old rule stopped much sooner
    with pytest.raises(ValueError, match="would be ignored"):
        SundaeSampler(10, argmax=True, top_p=0.5)
    with pytest.raises(ValueError, match="temperature"):
        SundaeSampler(10, argmax=True, temperature=0.5)
    assert SundaeSampler(10, argmax=True)._patience == 1


def test_sundae_argmax_with_starts_returns_the_best_scored_chain(joint):
    proc = Uniform(V, LogLinear())
    oracle = ExactOracle(joint, proc)
    B, n = 5, 4
    best = SundaeSampler(30, argmax=True, starts=n).sample(oracle, proc, (B, L), generator=gen(3))
    chains = SundaeSampler(30, argmax=True).sample(oracle, proc, (B * n, L), generator=gen(3))
    assert best.num_calls == chains.num_calls + 1  # one more call scores the finals
    x = chains.samples  # the same uniform starts, in the same order
    lp = torch.log_softmax(oracle(x, torch.zeros(B * n)), -1)
    score = lp.gather(-1, x.unsqueeze(-1)).squeeze(-1).sum(1).reshape(B, n)
    want = x.reshape(B, n, L)[torch.arange(B), score.argmax(1)]
    assert torch.equal(best.samples, want)
    again = SundaeSampler(30, argmax=True, starts=n).sample(oracle, proc, (B, L), generator=gen(3))
    assert torch.equal(again.samples, best.samples)  # deterministic given the starts
    with pytest.raises(ValueError, match="argmax"):
        SundaeSampler(5, starts=2)


def test_sundae_argmax_with_a_proportion_updates_the_surest_changes_first():
    """Argmax decoding updating by confidence: each step changes at most ceil(rho L) positions,
    the most confident of those whose argmax differs from the current token; deterministic;
    without a proportion every position is replaced (the paper's)."""
    import math

    proc = Uniform(V, LogLinear())
    torch.manual_seed(0)
    table = torch.randn(L, V, V)  # position i's logits depend on its left neighbour

    def den(x_t, t, cond=None):
        left = torch.cat([x_t[:, -1:], x_t[:, :-1]], 1)  # (B, L)
        return table[torch.arange(L), left]  # (B, L, V)

    rho = 0.25
    sampler = SundaeSampler(12, argmax=True, proportion=rho)
    res = sampler.sample(den, proc, (6, L), generator=gen(5), return_trajectory=True)
    traj = torch.stack(res.trajectory)  # (steps + 1, B, L)
    k = math.ceil(rho * L)
    for j in range(len(traj) - 1):
        x, nxt = traj[j], traj[j + 1]
        logits = den(x, None)
        conf, arg = logits.log_softmax(-1).max(-1)  # (B, L): the surest by probability
        changes = arg != x
        for b in range(6):
            moved = (nxt[b] != x[b]).nonzero().flatten().tolist()
            assert len(moved) == min(k, int(changes[b].sum()))
            if moved:  # the surest of the changes, to their argmax
                assert torch.equal(nxt[b, moved], arg[b, moved])
                others = changes[b].clone()
                others[moved] = False
                if others.any():
                    assert conf[b, moved].min() >= conf[b, others].max()
    again = sampler.sample(den, proc, (6, L), generator=gen(5))
    assert torch.equal(again.samples, res.samples)
    full = SundaeSampler(12, argmax=True).sample(den, proc, (6, L), generator=gen(5),
                                                 return_trajectory=True)  # fmt: skip
    first = torch.stack(full.trajectory)[:2]
    assert torch.equal(first[1], den(first[0], None).argmax(-1))  # every position at once
    assert SundaeSampler(5, argmax=True).config()["proportion"] is None


def test_sundae_starts_are_ranked_by_the_scorer_given():
    """With a scorer the chains of ``starts`` are ranked by it (the text task passes the
    model's ELBO), not by the model's own score, which can prefer a degenerate fixed point."""
    proc = Uniform(V, LogLinear())
    torch.manual_seed(1)
    table = torch.randn(L, V, V)

    def den(x_t, t, cond=None):
        left = torch.cat([x_t[:, -1:], x_t[:, :-1]], 1)
        return table[torch.arange(L), left]

    seen = []

    def fewest_zeros(x, cond):
        seen.append(x.shape)
        return -(x == 0).sum(1).float()

    B, n = 3, 5
    best = SundaeSampler(20, argmax=True, starts=n, scorer=fewest_zeros)
    got = best.sample(den, proc, (B, L), generator=gen(7))
    chains = SundaeSampler(20, argmax=True).sample(den, proc, (B * n, L), generator=gen(7))
    x = chains.samples.reshape(B, n, L)
    want = x[torch.arange(B), fewest_zeros(chains.samples, None).reshape(B, n).argmax(1)]
    assert torch.equal(got.samples, want) and seen[0] == (B * n, L)
    assert "scorer" not in best.config()
    with pytest.raises(TypeError, match="callable"):
        SundaeSampler(5, argmax=True, starts=2, scorer=3)
