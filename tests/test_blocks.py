"""Semi-autoregressive generation: the window slides over what was generated, the context is
kept fixed, and an end-of-sequence token ends a row."""

from __future__ import annotations

import pytest
import torch

import discdiff as dd

K, W = 7, 8


def counting(x_t, t, cond=None):
    """At a masked position after a known token v: v + 1 (mod K), with certainty; uniform else."""
    assert x_t.shape[1] <= W  # never more than the model's context
    out = torch.zeros(*x_t.shape, K)
    left = torch.cat([torch.full_like(x_t[:, :1], K), x_t[:, :-1]], 1)
    known = left < K
    nxt = (left.clamp_max(K - 1) + 1) % K
    return torch.where(known[..., None], 30.0 * torch.nn.functional.one_hot(nxt, K).float(), out)


def test_blocks_continue_the_sequence_across_windows():
    proc = dd.Absorbing(K, dd.LogLinear())
    sampler = dd.PlannedSampler(W)  # one token a step, the surest first
    n, length = 3, 29
    values = torch.zeros(n, W, dtype=torch.long)
    mask = torch.zeros(n, W, dtype=torch.bool)
    mask[:, 0] = True  # prompt: token 0 at position 0
    res = dd.sample_blocks(sampler, counting, proc, n, length, W, 3, fixed=(values, mask))
    assert res.samples.shape == (n, length)
    want = torch.arange(length) % K
    assert torch.equal(res.samples, want.expand(n, length))
    windows = 1 + -(-(length - W) // 3)
    assert res.num_calls == W * windows


def test_eos_ends_rows_and_generation():
    proc = dd.Absorbing(K, dd.LogLinear())
    sampler = dd.PlannedSampler(W)
    values = torch.zeros(2, W, dtype=torch.long)
    mask = torch.zeros(2, W, dtype=torch.bool)
    mask[:, 0] = True
    res = dd.sample_blocks(sampler, counting, proc, 2, 40, W, 4, fixed=(values, mask), eos_id=5)
    row = res.samples[0]
    assert row[:5].tolist() == [0, 1, 2, 3, 4] and bool((row[5:] == 5).all())
    assert res.num_calls == W  # every row had its EOS in the first window: no more windows
    with pytest.raises(ValueError, match="block"):
        dd.sample_blocks(sampler, counting, proc, 2, 40, W, 0)
