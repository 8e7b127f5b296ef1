"""Score entropy (SEDD) against brute force: concrete scores from an enumerated joint, the
bound tight with exact scores, the identity with the rate KL, the Tweedie inversion."""

from __future__ import annotations

import math

import pytest
import torch

import discdiff as dd
from discdiff.processes import score_entropy, scores_from_x0, x0_from_scores
from discdiff.processes.rates import rate_kl_mean
from tests.oracle import ExactOracle, all_sequences, random_joint

V, L = 3, 3


class ExactScores:
    """Log concrete scores p_t(x with position i set to y) / p_t(x) of a known joint, by
    enumerating every clean sequence (independent of the closed form (1) of the library)."""

    def __init__(self, joint: torch.Tensor, process) -> None:
        self.process, self.joint = process, joint.reshape(-1).double()
        self.seqs = all_sequences(V, L)  # (N, L)

    def log_pt(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p_t(x) for states x (B, L) at times t (B,)."""
        B, N = x.shape[0], self.seqs.shape[0]
        seqs = self.seqs.unsqueeze(0).expand(B, N, L).reshape(B * N, L)
        lm = self.process.marginal_log(seqs, t.repeat_interleave(N)).double()  # (B N, L, S)
        idx = x.repeat_interleave(N, 0).unsqueeze(-1)
        lik = lm.gather(-1, idx).squeeze(-1).sum(-1).reshape(B, N)
        return torch.logsumexp(lik + self.joint.log(), 1)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        base = self.log_pt(x_t, t.double())
        out = torch.zeros(*x_t.shape, V, dtype=torch.float64)
        for i in range(L):
            for y in range(V):
                moved = x_t.clone()
                moved[:, i] = y
                out[:, i, y] = self.log_pt(moved, t.double()) - base
        return out.float()


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    joint = random_joint(V, L, g)
    idx = torch.multinomial(joint.reshape(-1).float(), n, replacement=True, generator=g)
    return joint, all_sequences(V, L)[idx]


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_score_entropy_with_exact_scores_is_the_nll(kind):
    """Exact concrete scores make the bound tight in continuous time: |bound - NLL| within 4 SE
    (absorbing and uniform alike; the O(t_min) boundary gap is far below the SE), and a model
    whose scores are off pays for it (a bound, strictly above)."""
    proc = dd.make_process(kind, V, schedule="loglinear")
    joint, x0 = _data(4000, 0)
    nll = ExactOracle(joint, proc).nll(x0)
    exact = ExactScores(joint, proc)
    with torch.no_grad():
        bound = dd.score_entropy_loss(proc, exact, x0, generator=torch.Generator().manual_seed(1))
    gap = bound.double() - nll
    se = float(gap.std() / math.sqrt(gap.numel()))
    assert abs(float(gap.mean())) < 4 * se and se < 0.15, (float(gap.mean()), se)

    def off(x_t, t, cond=None):
        return exact(x_t, t) + 0.7 * torch.randn(
            *x_t.shape, V, generator=torch.Generator().manual_seed(2)
        )

    with torch.no_grad():
        worse = dd.score_entropy_loss(proc, off, x0, generator=torch.Generator().manual_seed(1))
    gap = worse.double() - nll
    assert float(gap.mean()) > 4 * float(gap.std() / math.sqrt(gap.numel()))


@pytest.mark.parametrize(
    "make",
    [
        lambda: dd.Uniform(5, dd.LogLinear()),
        lambda: dd.Absorbing(5, dd.CosineAlpha()),
        lambda: dd.Marginal([0.1, 0.2, 0.3, 0.25, 0.15], dd.LogLinear()),
    ],
    ids=["uniform", "absorbing", "marginal"],
)
def test_scores_and_x0_are_two_readings_of_one_model(make):
    """The score entropy of the scores implied by x_0 logits is the rate KL of those logits
    (dense twin), and the Tweedie inversion gives the logits' probabilities back."""
    proc = make()
    g = torch.Generator().manual_seed(0)
    K, B, Lx = 5, 64, 7
    x0 = torch.randint(K, (B, Lx), generator=g)
    t = torch.rand(B, generator=g).clamp(0.01, 0.99)
    x_t = proc.sample_marginal(x0, t, generator=g)
    logits = 2 * torch.randn(B, Lx, K, generator=g)
    ls = scores_from_x0(proc, x_t, logits, t)
    torch.testing.assert_close(
        score_entropy(proc, x_t, x0, ls, t), rate_kl_mean(proc, x_t, x0, logits, t),
        rtol=1e-4, atol=1e-4,
    )  # fmt: skip
    back = x0_from_scores(proc, x_t, ls, t).exp()
    free = x_t != getattr(proc, "mask_id", -1)
    if isinstance(proc, dd.Absorbing):  # a token is its own x_0; masked: the logits' law
        free = x_t == proc.mask_id
        assert torch.equal(back[~free].argmax(-1), x_t[~free])
    torch.testing.assert_close(back[free], logits.softmax(-1)[free], rtol=1e-4, atol=1e-5)


def test_score_entropy_edge_cases_are_finite_or_loudly_infinite():
    proc = dd.Uniform(4, dd.LogLinear())
    x0 = torch.tensor([[0, 1, 2, 3]])
    for t in (1e-6, 0.5, 1 - 1e-6):
        tt = torch.tensor([t])
        x_t = proc.sample_marginal(x0, tt, generator=torch.Generator().manual_seed(0))
        exact = scores_from_x0(proc, x_t, torch.nn.functional.one_hot(x0, 4).float() * 30, tt)
        assert torch.isfinite(score_entropy(proc, x_t, x0, exact, tt)).all()
    x_t = torch.tensor([[1, 1, 2, 3]])  # position 0 moved: the model saying "never 0" pays inf
    ls = torch.zeros(1, 4, 4)
    ls[0, 0, 0] = -torch.inf
    assert torch.isinf(score_entropy(proc, x_t, x0, ls, torch.tensor([0.5]))[0, 0])
    with pytest.raises(TypeError, match="mixing process"):
        dd.score_entropy_loss(dd.Uniform(4, dd.d3pm_cosine(10)), lambda x, t: ls, x0)
