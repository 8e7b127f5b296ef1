"""Schedules: boundary values, closed forms, derivatives against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

import discdiff as dd


@pytest.mark.parametrize("sched", [dd.LogLinear(), dd.CosineAlpha(), dd.LogLinear(0.01)])
def test_continuous_boundaries_and_derivative(sched: dd.Schedule) -> None:
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = sched.alpha(t)
    assert a[0] == 1.0
    assert a[-1] == pytest.approx(getattr(sched, "alpha_min", 0.0), abs=0)
    assert bool((a[1:] <= a[:-1]).all())
    h = 1e-6
    tt = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    fd = (sched.alpha(tt + h) - sched.alpha(tt - h)) / (2 * h)
    torch.testing.assert_close(sched.alpha_prime(tt), fd, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(sched.rate(tt), -fd / sched.alpha(tt), atol=1e-5, rtol=1e-5)


def test_default_alpha_prime_uses_autograd() -> None:
    class Square(dd.schedules.ContinuousSchedule):
        def _alpha(self, t: torch.Tensor) -> torch.Tensor:
            return 1 - t**2

    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(Square().alpha_prime(t), -2 * t)


def test_absorbing_schedule_is_linear() -> None:
    T = 8
    sched = dd.absorbing_schedule(T)
    k = torch.arange(T + 1, dtype=torch.float64)
    torch.testing.assert_close(sched.alphas, 1 - k / T)
    torch.testing.assert_close(sched.alpha(k / T), 1 - k / T)


def test_d3pm_cosine_reaches_zero_and_matches_formula() -> None:
    T, s = 50, 0.008
    sched = dd.d3pm_cosine(T, s)
    k = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((k / T + s) / (1 + s) * math.pi / 2) ** 2
    want = f / f[0]
    want[-1] = 0
    torch.testing.assert_close(sched.alphas, want, atol=1e-12, rtol=1e-9)
    assert sched.num_steps == T


def test_linear_betas_product() -> None:
    sched = dd.d3pm_linear(5, 0.1, 0.5)
    betas = torch.linspace(0.1, 0.5, 5, dtype=torch.float64)
    torch.testing.assert_close(sched.alphas[1:], torch.cumprod(1 - betas, 0))


def test_alpha_ratio() -> None:
    sched = dd.d3pm_cosine(10)
    s = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    t = torch.tensor([0.6, 0.5, 1.0], dtype=torch.float64)
    r = sched.alpha_ratio(s, t)
    assert r[1] == 1.0 and r[2] == 1.0
    assert r[0] == pytest.approx(float(sched.alpha(t[:1]) / sched.alpha(s[:1])))


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="grid"):
        dd.absorbing_schedule(4).alpha(torch.tensor([0.3]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dd.LogLinear().alpha(torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="positive integer"):
        dd.d3pm_cosine(0)
    with pytest.raises(ValueError, match="betas"):
        dd.DiscreteSchedule([0.5, 1.5])
    with pytest.raises(TypeError, match="discrete"):
        dd.absorbing_schedule(4).rate(torch.tensor([0.25]))


@pytest.mark.parametrize("base", [dd.schedules.ContinuousSchedule, dd.Schedule])
@pytest.mark.parametrize("process", ["uniform", "absorbing"])
def test_a_schedule_with_only_alpha_works_with_every_loss(base, process) -> None:
    """LogLinear written as _alpha alone (a subclass of Schedule or ContinuousSchedule): its
    rate comes by autograd, and the continuous ELBO equals the built-in LogLinear's draw for
    draw (the same generator), on a uniform process too (which needs the rate)."""

    class MyLinear(base):
        num_steps = None

        def _alpha(self, t: torch.Tensor) -> torch.Tensor:
            return 1 - t

    t = torch.tensor([0.0, 0.3, 0.999], dtype=torch.float64)
    torch.testing.assert_close(MyLinear().rate(t), dd.LogLinear().rate(t))
    K, B, L = 5, 6, 7
    x0 = torch.randint(K, (B, L), generator=torch.Generator().manual_seed(0))
    den = dd.nn.TransformerDenoiser(
        dd.TransformerConfig(
            num_states=K + (process == "absorbing"), num_classes=K, num_layers=1, d_model=16,
            num_heads=2, cond_dim=8, max_len=L,
        )
    )  # fmt: skip
    torch.manual_seed(0)
    for p in den.parameters():
        torch.nn.init.normal_(p, std=0.3)
    got, want = (
        dd.continuous_elbo(
            dd.make_process(process, K, schedule=sched), den, x0,
            generator=torch.Generator().manual_seed(1),
        )
        for sched in (MyLinear(), dd.LogLinear())
    )  # fmt: skip
    torch.testing.assert_close(got, want)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize(
    "sched",
    [dd.LogLinear(), dd.LogLinear(0.05), dd.CosineAlpha(), dd.CosineAlpha(0.1),
     dd.PolynomialKappa(2.5), dd.CosineKappa()],
)  # fmt: skip
def test_closed_form_inverse_alpha_is_the_bisection(sched) -> None:
    """time_for_alpha takes the closed form where a schedule has one; it agrees with the
    bisection it replaces, ends included."""
    from discdiff.samplers.base import time_for_alpha

    target = torch.cat([torch.linspace(0, 1, 101, dtype=torch.float64), torch.tensor([1e-9])])
    got = time_for_alpha(sched, target)

    class Bisect(dd.schedules.ContinuousSchedule):
        def _alpha(self, t):
            return sched._alpha(t)

    want = time_for_alpha(Bisect(), target)
    floor = getattr(sched, "alpha_min", 0.0)
    keep = target >= floor  # below alpha_min every t = 1 qualifies
    # where alpha is flat (cosine at t = 0) bisection resolves t only to ~sqrt(eps)
    torch.testing.assert_close(got[keep], want[keep], atol=1e-7, rtol=0)
    torch.testing.assert_close(sched.alpha(got[keep]), target[keep], atol=1e-12, rtol=0)
