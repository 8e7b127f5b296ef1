"""Losses against brute force: exact oracle NLLs, enumerated VLB sums, continuous limits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import discdiff as dd
from discdiff.losses import (
    _rate_kl,
    _rate_kl_mean,
    bits_per_token,
    continuous_elbo,
    hybrid_loss,
    kl_categorical,
    sundae_loss,
    vlb_loss,
)
from tests.oracle import ExactOracle, all_sequences, random_joint

V, L = 3, 3


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    joint = random_joint(V, L, g)
    idx = torch.multinomial(joint.reshape(-1).float(), n, replacement=True, generator=g)
    return joint, all_sequences(V, L)[idx]


def _gap(loss_fn, proc: dd.Process, n: int = 20000, seed: int = 0) -> tuple[float, float]:  # noqa: ANN001
    """Mean and standard error of (ELBO - exact NLL) over n draws of x0 and noise."""
    joint, x0 = _data(n, seed)
    oracle = ExactOracle(joint, proc)
    with torch.no_grad():
        elbo = loss_fn(proc, oracle, x0, generator=torch.Generator().manual_seed(seed + 1)).double()
    diff = elbo - oracle.nll(x0)
    return float(diff.mean()), float(diff.std() / math.sqrt(n))


CONTINUOUS = {
    "absorbing-loglinear": lambda: dd.Absorbing(V, dd.LogLinear()),
    "absorbing-cosine": lambda: dd.Absorbing(V, dd.CosineAlpha()),
    "uniform-loglinear": lambda: dd.Uniform(V, dd.LogLinear()),
    "uniform-cosine": lambda: dd.Uniform(V, dd.CosineAlpha()),
    "marginal-loglinear": lambda: dd.Marginal([0.2, 0.3, 0.5], dd.LogLinear()),
}


@pytest.mark.parametrize("name", list(CONTINUOUS))
def test_continuous_elbo_of_exact_denoiser_equals_nll(name: str) -> None:
    """Exact conditionals make the continuous-time ELBO tight: |ELBO - NLL| within 4 SE.

    For absorbing this is the any-order autoregressive equivalence; for uniform and marginal it
    holds with the posterior-mean parameterisation (exact reverse rates). The O(t_min) boundary
    gap (~1e-3 nats) is far below the standard error (~0.03-0.09 nats).
    """
    mean, se = _gap(continuous_elbo, CONTINUOUS[name]())
    assert abs(mean) < 4 * se, (mean, se)
    assert se < 0.12  # power: a 0.5-nat error would be caught


DISCRETE = {
    "absorbing-T20": lambda: dd.Absorbing(V, dd.absorbing_schedule(20)),
    "uniform-T20": lambda: dd.Uniform(V, dd.d3pm_cosine(20)),
    "uniform-d3pm-T20": lambda: dd.Uniform(V, dd.d3pm_cosine(20), "d3pm"),
    "marginal-T10": lambda: dd.Marginal([0.2, 0.3, 0.5], dd.d3pm_linear(10, 0.1, 1.0)),
}


@pytest.mark.parametrize("name", list(DISCRETE))
@pytest.mark.parametrize("loss", ["vlb", "hybrid"])
def test_discrete_vlb_bounds_nll(name: str, loss: str) -> None:
    fn = vlb_loss if loss == "vlb" else (lambda *a, **k: hybrid_loss(*a, lam=0.0, **k))
    mean, se = _gap(fn, DISCRETE[name](), n=10000)
    assert mean > -4 * se, (mean, se)


def test_d3pm_parameterisation_is_loose_for_exact_conditionals() -> None:
    """D3PM's eq. 4 double-counts x_t, so even exact conditionals leave a clear ELBO gap."""
    mean, se = _gap(continuous_elbo, dd.Uniform(V, dd.LogLinear(), "d3pm"))
    assert mean > 5 * se


@pytest.mark.parametrize("kind", ["uniform", "marginal", "absorbing"])
@pytest.mark.parametrize("param", ["mean", "d3pm"])
def test_rate_kl_is_the_limit_of_discrete_step_kls(kind: str, param: str) -> None:
    """KL(q(x_{t-dt}|x_t,x0) || p(x_{t-dt}|x_t)) / dt -> the closed-form rate KL as dt -> 0."""
    g = torch.Generator().manual_seed(5)
    k = 6
    prior = torch.tensor([0.05, 0.15, 0.3, 0.2, 0.3, 0.0])
    proc = {
        "uniform": lambda: dd.Uniform(k, dd.LogLinear(), param),
        "marginal": lambda: dd.Marginal(prior, dd.CosineAlpha(), param),
        "absorbing": lambda: dd.Absorbing(k, dd.LogLinear(), param),
    }[kind]()
    B, n = 6, 5
    x0 = torch.randint(0, k - 1, (B, n), generator=g)
    t = (0.1 + 0.8 * torch.rand(B, generator=g)).double()
    x_t = proc.sample_marginal(x0, t, generator=g)
    logits = torch.randn(B, n, k, generator=g)
    rate = (_rate_kl_mean if param == "mean" else _rate_kl)(
        proc, x_t, x0, logits, t.float()
    ).double()
    errs = []
    for dt in (1e-2, 1e-3):
        log_q = proc.posterior_log(x_t, x0, t - dt, t).double()
        log_p = proc.posterior_log(x_t, logits, t - dt, t).double()
        errs.append(float((kl_categorical(log_q, log_p) / dt - rate).abs().max()))
    scale = float(rate.abs().max()) + 1.0
    assert errs[1] < 0.02 * scale and (errs[1] < errs[0] or errs[0] < 1e-4 * scale), errs


def _exact_vlb(proc: dd.Process, denoiser, x0: torch.Tensor) -> float:  # noqa: ANN001
    """sum_k E_{x_k}[KL_k] + prior by enumerating every x_k of a short sequence."""
    T = proc.num_steps
    S = proc.num_states
    total = float(proc.kl_prior(x0).sum())
    states = torch.tensor(list(itertools.product(range(S), repeat=x0.shape[1])))  # (S^L, L)
    n = states.shape[0]
    for k in range(1, T + 1):
        t = torch.full((n,), k / T, dtype=torch.float64)
        s = torch.full((n,), (k - 1) / T, dtype=torch.float64)
        x0n = x0.expand(n, -1)
        prob = proc.marginal(x0n, t).double().gather(-1, states.unsqueeze(-1)).squeeze(-1).prod(-1)
        logits = denoiser(states, t.float())
        kl = kl_categorical(
            proc.posterior_log(states, x0n, s, t).double(),
            proc.posterior_log(states, logits, s, t).double(),
        )
        total += float((prob * kl.sum(-1)).sum())
    return total


@pytest.mark.parametrize("kind", ["uniform", "absorbing"])
def test_vlb_estimator_is_unbiased_against_enumeration(kind: str) -> None:
    T = 6
    proc = (
        dd.Uniform(V, dd.d3pm_cosine(T))
        if kind == "uniform"
        else dd.Absorbing(V, dd.absorbing_schedule(T))
    )
    table = torch.randn(proc.num_states, 2, V, generator=torch.Generator().manual_seed(0))

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # depends on x_t and t
        return table[x_t.flip(-1), torch.arange(2)] * (1 + t.reshape(-1, 1, 1))

    x0 = torch.tensor([[2, 0]])
    exact = _exact_vlb(proc, denoiser, x0)
    n = 40000
    est = vlb_loss(
        proc, denoiser, x0.expand(n, -1), generator=torch.Generator().manual_seed(1)
    ).double()
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)


def test_hybrid_adds_cross_entropy() -> None:
    proc = dd.Uniform(4, dd.d3pm_cosine(10))
    x0 = torch.randint(0, 4, (8, 5), generator=torch.Generator().manual_seed(0))
    w = torch.randn(4, 4)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return w[x_t]

    seen = {}

    def rec(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen["x_t"] = x_t
        return w[x_t]

    vlb = vlb_loss(proc, den, x0, generator=torch.Generator().manual_seed(3))
    hyb = hybrid_loss(proc, rec, x0, lam=0.5, generator=torch.Generator().manual_seed(3))
    ce = -torch.log_softmax(w[seen["x_t"]], -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1).sum(1)
    torch.testing.assert_close(hyb, vlb + 0.5 * ce)


def test_mask_excludes_positions_from_noise_and_loss() -> None:
    proc = dd.Absorbing(4, dd.LogLinear())
    x0 = torch.randint(0, 4, (64, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(x0, dtype=torch.bool)
    mask[:, :2] = False  # a given prefix
    seen = []

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x_t.clone())
        return torch.zeros(*x_t.shape, 4)

    a = continuous_elbo(proc, den, x0, mask, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x[:, :2], x0[:, :2]) for x in seen)
    x0b = x0.clone()
    x0b[:, :2] = (x0b[:, :2] + 1) % 4
    b = continuous_elbo(proc, den, x0b, mask, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_multi_field_is_a_weighted_sum_of_fields() -> None:
    pa = dd.Absorbing(4, dd.LogLinear())
    pb = dd.Uniform(3, dd.LogLinear())
    g = torch.Generator().manual_seed(0)
    xa = torch.randint(0, 4, (16, 5), generator=g)
    xb = torch.randint(0, 3, (16, 2, 2), generator=g)
    wa, wb = torch.randn(5, 4), torch.randn(3, 3)

    def den_pair(x: dict, t: torch.Tensor) -> dict:
        return {"a": wa[x["a"]], "b": wb[x["b"]]}

    def den_a(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return wa[x]

    both = continuous_elbo(
        {"a": pa, "b": pb},
        den_pair,
        {"a": xa, "b": xb},
        weights={"b": 0.0},
        boundary=False,
        generator=torch.Generator().manual_seed(2),
    )
    only_a = continuous_elbo(
        pa, den_a, xa, boundary=False, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(both, only_a)
    with pytest.raises(ValueError, match="unknown fields"):
        continuous_elbo({"a": pa}, den_pair, {"a": xa}, weights={"c": 1.0})


def test_loss_errors_are_clear() -> None:
    proc = dd.Absorbing(4, dd.LogLinear())
    x0 = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"logits have shape \(2, 3, 5\), expected \(2, 3, 4\)"):
        continuous_elbo(proc, lambda x, t: torch.zeros(2, 3, 5), x0)
    with pytest.raises(TypeError, match="bool"):
        continuous_elbo(proc, lambda x, t: torch.zeros(2, 3, 4), x0, x0)
    with pytest.raises(ValueError, match="num_steps"):
        vlb_loss(proc, lambda x, t: torch.zeros(2, 3, 4), x0)
    with pytest.raises(TypeError, match="continuous schedule"):
        continuous_elbo(
            dd.Absorbing(4, dd.absorbing_schedule(5)), lambda x, t: torch.zeros(2, 3, 4), x0
        )
    with pytest.raises(ValueError, match="infinite"):
        continuous_elbo(dd.Absorbing(4, dd.LogLinear(0.01)), lambda x, t: torch.zeros(2, 3, 4), x0)
    with pytest.raises(ValueError, match="outside"):
        continuous_elbo(proc, lambda x, t: torch.zeros(2, 3, 4), x0 + 4)


def test_vlb_on_continuous_process_with_num_steps() -> None:
    proc = dd.Uniform(V, dd.LogLinear())
    mean, se = _gap(
        lambda p, d, x, generator: vlb_loss(p, d, x, num_steps=50, generator=generator),
        proc,
        n=10000,
    )
    assert mean > -4 * se


def test_sundae_loss() -> None:
    proc = dd.Uniform(5, dd.LogLinear())
    x0 = torch.randint(0, 5, (32, 7), generator=torch.Generator().manual_seed(0))

    def perfect(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x0, 5).float() * 50.0

    loss = sundae_loss(
        proc, perfect, x0, unroll_steps=3, generator=torch.Generator().manual_seed(1)
    )
    assert float(loss.max()) < 1e-10 * 7 + 1e-6
    w = torch.randn(5, 5)
    seen = []

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x_t)
        return w[x_t]

    one = sundae_loss(proc, den, x0, unroll_steps=1, generator=torch.Generator().manual_seed(2))
    ce = -torch.log_softmax(w[seen[0]], -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1).sum(1)
    torch.testing.assert_close(one, ce)
    seen.clear()
    two = sundae_loss(proc, den, x0, unroll_steps=2, generator=torch.Generator().manual_seed(2))
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    ce2 = -torch.log_softmax(w[seen[1]], -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1).sum(1)
    torch.testing.assert_close(two, (ce + ce2) / 2)
    with pytest.raises(ValueError, match="unroll_steps"):
        sundae_loss(proc, den, x0, unroll_steps=0)


def test_gradients_flow_and_are_finite() -> None:
    for proc in (dd.Uniform(6, dd.LogLinear()), dd.Absorbing(6, dd.LogLinear())):
        emb = torch.nn.Embedding(proc.num_states, 6)

        def den(x_t: torch.Tensor, t: torch.Tensor, _emb=emb) -> torch.Tensor:
            return _emb(x_t) * 5

        x0 = torch.randint(0, 6, (16, 8), generator=torch.Generator().manual_seed(0))
        for fn in (continuous_elbo, lambda *a, **k: vlb_loss(*a, num_steps=100, **k)):
            loss = fn(proc, den, x0, generator=torch.Generator().manual_seed(0)).mean()
            emb.zero_grad()
            loss.backward()
            assert torch.isfinite(emb.weight.grad).all() and emb.weight.grad.abs().sum() > 0


def test_bits_per_token() -> None:
    torch.testing.assert_close(
        bits_per_token(torch.tensor([math.log(2) * 10]), 5), torch.tensor([2.0])
    )


def _rate_kl_brute(
    proc: dd.MixingProcess, z: int, x0: int, logits: torch.Tensor, t: float
) -> float:
    """sum_{y != z} r_p - r_q + r_q log(r_q / r_p), rates from their definitions, float64."""
    a = float(proc.schedule.alpha(torch.tensor([t], dtype=torch.float64)))
    beta = float(proc.schedule.rate(torch.tensor([t], dtype=torch.float64)))
    m = proc.limit
    K = proc.num_classes
    p = torch.softmax(logits.double(), -1)

    def marg(c: int) -> torch.Tensor:
        return (
            a * torch.nn.functional.one_hot(torch.tensor(c), proc.num_states).double() + (1 - a) * m
        )

    r_q = beta * m[z] * marg(x0) / marg(x0)[z]
    r_p = beta * m[z] * sum(p[c] * marg(c) / marg(c)[z] for c in range(K))
    total = 0.0
    for y in range(proc.num_states):
        if y != z and r_q[y] > 0:
            total += float(r_p[y] - r_q[y] + r_q[y] * torch.log(r_q[y] / r_p[y]))
        elif y != z:
            total += float(r_p[y])
    return total


@pytest.mark.parametrize("gap", [0.0, 3.0, 30.0, 80.0])
@pytest.mark.parametrize("t", [0.02, 0.5, 0.98])
def test_rate_kl_matches_definition_even_for_confident_wrong_models(gap: float, t: float) -> None:
    """A model sure of the wrong class (p(x0) ~ e^-gap) must give a large finite loss, not inf."""
    proc = dd.Uniform(5, dd.LogLinear())
    z, x0 = 1, 3
    logits = torch.zeros(5)
    logits[z] = gap
    got = float(
        _rate_kl_mean(
            proc,
            torch.tensor([[z]]),
            torch.tensor([[x0]]),
            logits.reshape(1, 1, 5),
            torch.tensor([t]),
        )
    )
    want = _rate_kl_brute(proc, z, x0, logits, t)
    assert math.isfinite(got)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_sundae_loss_and_sampler_accept_and_refuse_the_same_processes() -> None:
    x0 = torch.randint(V, (2, L))
    den = lambda x, t: torch.zeros(2, L, V)  # noqa: E731
    for proc in (dd.Absorbing(V, dd.LogLinear()), dd.Marginal([0.2, 0.3, 0.5], dd.LogLinear())):
        with pytest.raises(TypeError, match="Uniform"):
            sundae_loss(proc, den, x0)
        with pytest.raises(TypeError, match="Uniform"):
            dd.SundaeSampler(3).sample(den, proc, (2, L))
    uni = dd.Uniform(V, dd.LogLinear())
    assert sundae_loss(uni, den, x0).shape == (2,)
    assert dd.SundaeSampler(3).sample(den, uni, (2, L)).samples.shape == (2, L)


def test_continuous_elbo_ce_weight_adds_the_cross_entropy_and_its_gradient():
    """ce_weight adds weight x the x_0 cross-entropy at the scored positions (linear in the
    weight, same draws), and gives a rare class that the model misses a gradient several times
    the rate KL's (which saturates as p -> 0 where x_t = x_0)."""
    import discdiff as dd

    K, B, L = 4, 64, 6
    proc = dd.Marginal([0.9997, 1e-4, 1e-4, 1e-4], dd.LogLinear())
    x0 = torch.ones(B, L, dtype=torch.long)  # the rare class 1 everywhere
    base = torch.tensor([8.0, -8.0, 0.0, 0.0])  # the model says p(1) ~ 1e-7

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(base.clone())

        def forward(self, x_t, t, cond=None):
            return self.logits.expand(*x_t.shape, K)

    def loss(model, w):
        g = torch.Generator().manual_seed(3)
        return dd.continuous_elbo(proc, model, x0, boundary=False, generator=g, ce_weight=w)

    m = Fixed()
    l0, l1, l2 = (loss(m, w) for w in (0.0, 1.0, 2.0))
    torch.testing.assert_close(l2 - l0, 2 * (l1 - l0))
    nll = -torch.log_softmax(base, -1)[1]
    # the integral over [t_min, 1] is (1 - t_min) times the integrand at the drawn time
    want = torch.full((B,), float(nll) * L * (1 - 1e-3))
    torch.testing.assert_close(l1 - l0, want, rtol=1e-5, atol=1e-4)
    g0 = torch.autograd.grad(loss(m, 0.0).mean(), m.logits)[0][1]
    g1 = torch.autograd.grad(loss(m, 1.0).mean(), m.logits)[0][1]
    assert abs(float(g1)) > 5 * abs(float(g0))  # measured: 6.70 against 0.71
    assert abs(float(g1)) > L * 0.9  # the cross-entropy's own: about 1 a position
    with pytest.raises(ValueError, match="ce_weight"):
        loss(m, -1.0)


# ---- the x_0 cross-entropy, block by block ----------------------------------------------------


@pytest.mark.parametrize("blocked", [True, False])
@pytest.mark.parametrize("K", [2, 7, 256, 50257])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_blocked_x0_nll_matches_float64_log_softmax(K, dtype, blocked, monkeypatch):
    """Values and gradients against float64 brute force, both paths at every K, across block
    boundaries (blocks of 3 rows forced), with -inf logits off the target; the caller's logits
    are left as they were; the gradient has the logits' dtype."""
    from discdiff.processes import rates

    monkeypatch.setattr(rates, "_NLL_BLOCK_CPU", 3 * K)  # 3 rows a block: 50 rows = 17 blocks
    monkeypatch.setattr(rates, "_NLL_BLOCKED_FROM", 0 if blocked else 10**9)
    gen = torch.Generator().manual_seed(K)
    B, L = 2, 25
    base = torch.randn(B, L, K, generator=gen, dtype=torch.float64) * 6
    x0 = torch.randint(0, K, (B, L), generator=gen)
    if K > 2:
        base[0, 0, (x0[0, 0] + 1) % K] = -torch.inf  # a class the model rules out
    logits = base.to(dtype).requires_grad_()
    kept = logits.detach().clone()
    g = torch.rand(B, L, generator=gen)
    nll = rates.x0_nll(logits, x0)
    (nll * g).sum().backward()
    ref_in = logits.detach().double().requires_grad_()
    ref = -torch.log_softmax(ref_in, -1).gather(-1, x0[..., None]).squeeze(-1)
    (ref * g.double()).sum().backward()
    assert nll.dtype == torch.float32 and logits.grad.dtype == dtype
    assert torch.equal(logits.detach(), kept)  # the backward never wrote into the logits
    torch.testing.assert_close(nll.double(), ref, rtol=1e-6, atol=1e-5)
    tol = 8e-3 if dtype == torch.bfloat16 else 2e-6
    torch.testing.assert_close(logits.grad.double(), ref_in.grad, rtol=1e-5, atol=tol)


def test_blocked_x0_nll_keeps_no_buffer_the_size_of_the_logits(monkeypatch):
    """What the loss saves for its backward, beyond the logits the model made: O(positions)."""
    from discdiff.processes import rates
    from discdiff.processes.rates import x0_nll

    monkeypatch.setattr(rates, "_NLL_BLOCKED_FROM", 2**18)  # these logits: 2^18 elements
    N, K = 64, 4096
    logits = torch.randn(N, K, requires_grad=True)
    saved: list[int] = []

    def pack(t):
        if t.data_ptr() != logits.data_ptr():
            saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x0_nll(logits, torch.randint(0, K, (N,))).sum().backward()
    assert sum(saved) <= 2 * N, saved  # the ids and the log-normaliser
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        saved.clear()
        logp = torch.log_softmax(logits.float(), -1)
        (-logp.gather(-1, torch.zeros(N, 1, dtype=torch.long))).sum().backward()
    assert sum(saved) >= N * K  # the plain form keeps the log-probabilities
