"""Self-conditioning: what the model is fed in training, evaluation and sampling."""

from __future__ import annotations

import pytest
import torch

import discdiff as dd
from discdiff.samplers import AncestralSampler, CachingSampler

K, L = 5, 6


class Recorder(torch.nn.Module):
    """A tiny self-conditioned transformer that records the self_cond of every call."""

    def __init__(self) -> None:
        super().__init__()
        cfg = dd.TransformerConfig(
            num_states=K + 1, num_classes=K, num_layers=1, d_model=16, num_heads=2,
            cond_dim=8, max_len=L, self_conditioning=True, time_conditioning=False,
        )  # fmt: skip
        self.model = dd.TransformerDenoiser(cfg)
        torch.manual_seed(0)
        for p in self.model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x_t, t, cond=None):  # noqa: ANN001, ANN201
        self.seen.append(cond["self_cond"].clone())
        return self.model(x_t, None, cond)


def test_training_feeds_the_first_pass_to_half_the_rows_without_gradient():
    rec = Recorder().train()
    den = dd.SelfConditioned(rec, prob=0.5)
    x = torch.randint(K + 1, (64, L), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    out = den(x, torch.rand(64))
    first, second = rec.seen
    assert torch.equal(first, torch.zeros_like(first))
    used = second.abs().sum((1, 2)) > 0
    assert 16 < int(used.sum()) < 48  # about half the rows
    want = rec.model(x, None, None).softmax(-1)  # the first pass (no self-cond input)
    torch.testing.assert_close(second[used], want[used].detach())
    out.sum().backward()
    assert rec.model.self_cond.weight.grad is not None  # the second pass trains the input map
    always = dd.SelfConditioned(Recorder().train(), prob=1.0)
    always(x, torch.rand(64))
    assert bool((always.denoiser.seen[1].abs().sum((1, 2)) > 0).all())


def test_evaluation_is_two_deterministic_passes():
    rec = Recorder().eval()
    den = dd.SelfConditioned(rec).eval()
    x = torch.randint(K + 1, (4, L), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = den(x, torch.rand(4)), den(x, torch.rand(4))
    torch.testing.assert_close(a, b)
    assert len(rec.seen) == 4 and torch.equal(rec.seen[0], torch.zeros_like(rec.seen[0]))
    torch.testing.assert_close(rec.seen[1], rec.model(x, None, None).softmax(-1).detach())


def test_sampling_feeds_the_previous_estimate():
    rec = Recorder()
    den = dd.SelfConditioned(rec)
    proc = dd.Absorbing(K, dd.LogLinear())
    res = AncestralSampler(5).sample(den, proc, (3, L), generator=torch.Generator().manual_seed(4))
    assert res.num_calls == 5 and len(rec.seen) == 5  # one pass per step
    assert torch.equal(rec.seen[0], torch.zeros_like(rec.seen[0]))
    for j in range(1, 5):  # call j sees call j - 1's prediction
        assert rec.seen[j].abs().sum() > 0
        torch.testing.assert_close(rec.seen[j].sum(-1), torch.ones(3, L))
    assert not den._sampling and den._prev is None  # state cleared after the run
    with pytest.raises(ValueError, match="keeps state"):
        CachingSampler(5).sample(den, proc, (3, L))
    res = CachingSampler(5, allow_time_conditioned=True).sample(den, proc, (3, L))
    assert bool((res.samples < K).all())
