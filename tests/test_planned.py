"""Planned unmasking: random order one token a step is exact, confidence order is MaskGIT's,
margin / entropy pick the positions they say, P2 self-planning remasks and keeps the counts."""

from __future__ import annotations

import pytest
import torch

from discdiff import Absorbing, LogLinear, PlannedSampler, make_sampler
from discdiff.samplers import ConfidenceSampler
from tests.oracle import gen
from tests.test_samplers import TimeAgnostic, assert_matches

V, L = 3, 3


def test_random_order_one_token_a_step_samples_the_joint(joint):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    res = PlannedSampler(L, order="random").sample(oracle, proc, (3000, L), generator=gen(1))
    assert res.num_calls == L
    assert_matches(res.samples, joint, joint)


def test_confidence_order_is_maskgit(joint):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    a = PlannedSampler(L, order="confidence").sample(oracle, proc, (200, L), generator=gen(2))
    b = ConfidenceSampler(L, schedule="linear").sample(oracle, proc, (200, L), generator=gen(2))
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize("order", ["margin", "entropy"])
def test_margin_and_entropy_decode_the_surest_position_first(order):
    K, Lx = 6, 5
    proc = Absorbing(K, LogLinear())
    table = torch.randn(Lx, K, generator=gen(3)) * torch.linspace(0.2, 3.0, Lx)[:, None]
    table = table[torch.randperm(Lx, generator=gen(4))]  # (L, K) position-wise logits

    def fixed_logits(x_t, t, cond=None):
        return table.expand(x_t.shape[0], Lx, K)

    lp = table.log_softmax(-1)
    p = lp.exp()
    if order == "margin":
        top = p.topk(2, -1).values
        want = int((top[:, 0] - top[:, 1]).argmax())
    else:
        want = int((p * lp).sum(-1).argmax())
    res = PlannedSampler(Lx, order=order).sample(
        fixed_logits, proc, (4, Lx), generator=gen(5), return_trajectory=True
    )
    first = res.trajectory[1]  # after one step exactly one position is decoded: the surest
    decoded = (first != proc.mask_id).nonzero()[:, 1]
    assert decoded.tolist() == [want] * 4


def test_self_planning_remasks_and_follows_the_schedule(joint):
    proc = Absorbing(V, LogLinear())

    def doubtful(x_t, t, cond=None):  # a model that disbelieves decoded 0s
        out = torch.zeros(*x_t.shape, V)
        out[..., 0] = torch.where(x_t == 0, -8.0, 1.0)
        return out

    n, steps, Lx = 64, 6, 8
    sampler = PlannedSampler(steps, order="confidence", eta=1.0)
    res = sampler.sample(doubtful, proc, (n, Lx), generator=gen(6), return_trajectory=True)
    remasked = 0
    for j, (before, after) in enumerate(zip(res.trajectory, res.trajectory[1:], strict=False)):
        left = int(Lx * (1 - (j + 1) / steps)) if j < steps - 1 else 0
        assert ((after == proc.mask_id).sum(1) == left).all()  # the schedule, exactly
        remasked += int(((before != proc.mask_id) & (after == proc.mask_id)).sum())
    assert remasked > 0  # P2 revised decoded tokens
    off = PlannedSampler(steps, eta=0.0).sample(
        doubtful, proc, (n, Lx), generator=gen(6), return_trajectory=True
    )
    for before, after in zip(off.trajectory, off.trajectory[1:], strict=False):
        assert not ((before != proc.mask_id) & (after == proc.mask_id)).any()  # never revised


def test_fixed_positions_are_kept_and_settings_checked(joint):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    values = torch.full((16, L), 1)
    mask = torch.zeros(16, L, dtype=torch.bool)
    mask[:, 0] = True
    res = PlannedSampler(4, eta=2.0).sample(
        oracle, proc, (16, L), fixed=(values, mask), generator=gen(7), return_trajectory=True
    )
    assert all(bool((x[:, 0] == 1).all()) for x in res.trajectory)
    assert bool((res.samples < V).all())
    assert isinstance(make_sampler("planned", steps=3, order="entropy"), PlannedSampler)
    with pytest.raises(ValueError, match="order='confidence'"):
        PlannedSampler(3, order="margin", eta=1.0)
    with pytest.raises(ValueError, match="order"):
        PlannedSampler(3, order="best")
