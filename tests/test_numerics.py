"""float32 edge cases found by an audit, each reproduced first: certain logits, times that
round to 1, long discrete schedules, and 1 - alpha near t = 0."""

from __future__ import annotations

import math

import pytest
import torch

import discdiff as dd
from discdiff import losses
from discdiff.processes.rates import rate_kl_d3pm, rate_kl_mean
from tests.test_losses import _rate_kl_brute


@pytest.mark.parametrize("cls", [dd.Absorbing, dd.Uniform])
def test_posterior_gradient_is_finite_when_the_model_is_certain(cls):
    p = cls(3, dd.LogLinear())
    logits = torch.tensor([[[17.0, 0.0, 0.0]]], requires_grad=True)  # p(0) rounds to 1 in fp32
    v = -p.posterior_log(torch.tensor([[0]]), logits, 0.0, 0.5)[0, 0, 0]
    v.backward()
    assert torch.isfinite(logits.grad).all()
    # and it is the float64 gradient
    ref = logits.detach().double().requires_grad_(True)
    (-p.posterior_log(torch.tensor([[0]]), ref, 0.0, 0.5)[0, 0, 0]).backward()
    torch.testing.assert_close(logits.grad.double(), ref.grad, atol=1e-7, rtol=0)


@pytest.mark.parametrize(
    "loss",
    [
        lambda p, d, x: dd.vlb_loss(p, d, x, num_steps=50),
        lambda p, d, x: dd.hybrid_loss(p, d, x, num_steps=50),
        lambda p, d, x: dd.continuous_elbo(p, d, x, boundary=True),
    ],
)
@pytest.mark.parametrize("cls", [dd.Absorbing, dd.Uniform])
def test_losses_have_finite_gradients_for_certain_logits(loss, cls):
    K = 4
    p = cls(K, dd.LogLinear())
    x0 = torch.randint(0, K, (8, 6), generator=torch.Generator().manual_seed(0))
    logits = (30.0 * torch.nn.functional.one_hot(x0, K).float()).requires_grad_(True)
    value = loss(p, lambda x, t, cond=None: logits * 1, x0)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("cls", [dd.Uniform, dd.Marginal, dd.Absorbing])
def test_continuous_elbo_is_finite_when_a_time_rounds_to_one(cls, monkeypatch):
    K = 5
    p = cls(torch.full((K,), 0.2), dd.LogLinear()) if cls is dd.Marginal else cls(K, dd.LogLinear())
    monkeypatch.setattr(
        losses,
        "sample_times",
        lambda B, g=None, d=None, s=True: torch.full((B,), 1 - 1e-9, dtype=torch.float64),
    )
    logits = torch.zeros(2, 4, K, requires_grad=True)
    x0 = torch.randint(0, K, (2, 4))
    v = dd.continuous_elbo(p, lambda x, t, cond=None: logits * 1, x0, boundary=False)
    v.sum().backward()
    assert torch.isfinite(v).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("T", [3400, 4000, 10_000])
def test_long_discrete_schedules_are_never_refused(T):
    p = dd.Absorbing(5, dd.absorbing_schedule(T))
    den = lambda x, t, cond=None: torch.zeros(*x.shape, 5)  # noqa: E731
    x0 = torch.randint(0, 5, (256, 4), generator=torch.Generator().manual_seed(0))
    pu = dd.Uniform(5, dd.d3pm_cosine(T))  # SUNDAE corrupts uniformly
    for seed in range(10):
        v = dd.vlb_loss(p, den, x0, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(v).all()
        dd.sundae_loss(pu, den, x0, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fn", [rate_kl_mean, rate_kl_d3pm])
@pytest.mark.parametrize("t", [1e-3, 1e-4])
def test_rate_kl_keeps_one_minus_alpha_in_float64_near_zero(fn, t):
    """CosineAlpha: 1 - alpha(1e-3) = 1.2e-6; its float32 rounding alone was off by ~1.5%."""
    proc = dd.Uniform(
        5, dd.CosineAlpha(), parameterization="mean" if fn is rate_kl_mean else "d3pm"
    )
    z, x0 = 1, 1
    logits = torch.tensor([0.3, 1.2, -0.4, 0.0, 0.8])
    got = float(
        fn(
            proc,
            torch.tensor([[z]]),
            torch.tensor([[x0]]),
            logits.reshape(1, 1, 5),
            torch.tensor([t]),
        )
    )
    if fn is rate_kl_mean:
        want = _rate_kl_brute(proc, z, x0, logits, t)
    else:  # d3pm form: rates from the plug-in marginal, brute force in float64
        a = float(proc.schedule.alpha(torch.tensor([t], dtype=torch.float64)))
        beta = float(proc.schedule.rate(torch.tensor([t], dtype=torch.float64)))
        m = proc.limit
        pr = torch.softmax(logits.double(), -1)
        onehot = torch.nn.functional.one_hot(torch.tensor(x0), 5).double()
        mq, mp = a * onehot + (1 - a) * m, a * pr + (1 - a) * m
        rq, rp = beta * m[z] * mq / mq[z], beta * m[z] * mp / mp[z]
        want = sum(
            float(rp[y] - rq[y] + rq[y] * math.log(rq[y] / rp[y])) for y in range(5) if y != z
        )
    assert got == pytest.approx(want, rel=2e-3)
