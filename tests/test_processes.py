"""Conformance suite: every process against its brute-force Dense twin and basic laws."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import discdiff as dd

K = 5


def _marginal_prior(k: int = K) -> torch.Tensor:
    p = torch.arange(1, k + 1, dtype=torch.float64)
    p[-1] = 0.0  # a class with zero prior mass must not break anything
    return p / p.sum()


def make(kind: str, schedule: dd.Schedule, param: str = "mean", k: int = K) -> dd.MixingProcess:
    if kind == "uniform":
        return dd.Uniform(k, schedule, param)
    if kind == "absorbing":
        return dd.Absorbing(k, schedule, param)
    return dd.Marginal(_marginal_prior(k), schedule, param)


KINDS = ["uniform", "absorbing", "marginal"]
SCHEDULES = {
    "cosine10": lambda: dd.d3pm_cosine(10),
    "absorb10": lambda: dd.absorbing_schedule(10),
    "linear10": lambda: dd.d3pm_linear(10, 0.05, 0.5),
}


def grid_times(T: int, B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    kt = torch.randint(1, T + 1, (B,), generator=g)
    ks = (torch.rand(B, generator=g, dtype=torch.float64) * kt).floor().long()
    return ks.double() / T, kt.double() / T


@pytest.mark.parametrize("param", ["mean", "d3pm"])
@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("kind", KINDS)
def test_structured_equals_dense_twin(kind: str, sched: str, param: str) -> None:
    g = torch.Generator().manual_seed(hash((kind, sched, param)) % 2**31)
    proc = make(kind, SCHEDULES[sched](), param)
    dense = dd.Dense.from_process(proc)
    # the twin's cumulative matrices are explicit products of its step matrices
    Q = dense.step_matrices
    prod = torch.eye(proc.num_states, dtype=torch.float64)
    for k in range(Q.shape[0]):
        prod = prod @ Q[k]
    assert torch.allclose(dense.cumulative(Q.shape[0]), prod, atol=1e-12)
    B, L = 16, 3
    x0 = torch.randint(0, K - 1, (B, L), generator=g)
    s, t = grid_times(10, B, g)
    torch.testing.assert_close(
        proc.marginal(x0, t).double(), dense.marginal(x0, t), atol=1e-6, rtol=0
    )
    x_t = proc.sample_marginal(x0, t, generator=g)
    torch.testing.assert_close(
        proc.posterior(x_t, x0, s, t).double(), dense.posterior(x_t, x0, s, t), atol=1e-6, rtol=0
    )
    logits = 3 * torch.randn(B, L, K, generator=g)
    torch.testing.assert_close(
        proc.posterior(x_t, logits, s, t).double(),
        dense.posterior(x_t, logits, s, t),
        atol=2e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        proc.marginal(logits, t).double(), dense.marginal(logits, t), atol=1e-6, rtol=0
    )
    kl, kl_d = proc.kl_prior(x0).double(), dense.kl_prior(x0)
    finite = torch.isfinite(kl_d)
    assert torch.equal(torch.isfinite(kl), finite)
    torch.testing.assert_close(kl[finite], kl_d[finite], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_continuous_schedule_on_grid_equals_dense(kind: str) -> None:
    g = torch.Generator().manual_seed(3)
    proc = make(kind, dd.CosineAlpha())
    dense = dd.Dense.from_process(proc, num_steps=40)
    B = 12
    x0 = torch.randint(0, K - 1, (B, 2), generator=g)
    s, t = grid_times(40, B, g)
    x_t = proc.sample_marginal(x0, t, generator=g)
    logits = torch.randn(B, 2, K, generator=g)
    torch.testing.assert_close(
        proc.posterior(x_t, x0, s, t).double(), dense.posterior(x_t, x0, s, t), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        proc.posterior(x_t, logits, s, t).double(),
        dense.posterior(x_t, logits, s, t),
        atol=2e-6,
        rtol=0,
    )


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    k=st.integers(2, 7),
    steps=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    param=st.sampled_from(["mean", "d3pm"]),
)
def test_posteriors_match_dense_bayes_hypothesis(
    kind: str, k: int, steps: int, seed: int, param: str
) -> None:
    g = torch.Generator().manual_seed(seed)
    proc = make(kind, dd.d3pm_cosine(steps), param, k=k)
    dense = dd.Dense.from_process(proc)
    B = 6
    x0 = torch.randint(0, max(k - 1, 1), (B, 2), generator=g)
    s, t = grid_times(steps, B, g)
    x_t = proc.sample_marginal(x0, t, generator=g)
    p, d = proc.posterior(x_t, x0, s, t).double(), dense.posterior(x_t, x0, s, t)
    torch.testing.assert_close(p, d, atol=1e-6, rtol=0)
    logits = 4 * torch.randn(B, 2, k, generator=g)
    p, d = proc.posterior(x_t, logits, s, t).double(), dense.posterior(x_t, logits, s, t)
    torch.testing.assert_close(p, d, atol=2e-6, rtol=0)
    torch.testing.assert_close(p.sum(-1), torch.ones(B, 2, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_laws_alpha_one_and_zero(kind: str) -> None:
    proc = make(kind, dd.LogLinear())
    x0 = torch.tensor([[0, 1, 3], [2, 2, 0]])
    at0 = proc.marginal(x0, 0.0)
    torch.testing.assert_close(at0, torch.nn.functional.one_hot(x0, proc.num_states).float())
    at1 = proc.marginal(x0, 1.0)
    prior = proc.prior_log_probs().exp().float()
    torch.testing.assert_close(at1, prior.expand_as(at1))
    torch.testing.assert_close(proc.kl_prior(x0), torch.zeros(2, 3))
    # the exact posterior from t to s = 0 recovers x0
    x_t = proc.sample_marginal(x0, 0.7, generator=torch.Generator().manual_seed(0))
    back = proc.posterior(x_t, x0, 0.0, 0.7)
    torch.testing.assert_close(back, torch.nn.functional.one_hot(x0, proc.num_states).float())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.0, 1e-7, 0.5, 1 - 1e-7, 1.0])
def test_no_nan_at_extreme_times(kind: str, t: float) -> None:
    g = torch.Generator().manual_seed(1)
    proc = make(kind, dd.LogLinear())
    x0 = torch.randint(0, K - 1, (4, 6), generator=g)
    x_t = proc.sample_marginal(x0, t, generator=g)
    logits = torch.randn(4, 6, K, generator=g) * 50  # near-deterministic predictions
    for s in [0.0, t / 2, t]:
        for arg in (x0, logits):
            lp = proc.posterior_log(x_t, arg, s, t)
            assert not torch.isnan(lp).any()
            assert torch.allclose(lp.exp().sum(-1), torch.ones(4, 6), atol=1e-5)
    assert not torch.isnan(proc.marginal_log(logits, t)).any()


@pytest.mark.parametrize("kind", KINDS)
def test_sample_marginal_matches_marginal(kind: str) -> None:
    """Empirical frequencies of x_t lie within 5 binomial standard errors of q(x_t | x0)."""
    g = torch.Generator().manual_seed(7)
    proc = make(kind, dd.CosineAlpha())
    n = 40000
    x0 = torch.full((n, 1), 1)
    t = torch.full((n,), 0.6)
    xt = proc.sample_marginal(x0, t, generator=g).flatten()
    freq = torch.bincount(xt, minlength=proc.num_states).double() / n
    p = proc.marginal(x0[:1], t[:1]).double().flatten()
    se = torch.sqrt(p * (1 - p) / n).clamp_min(1e-9)
    assert ((freq - p).abs() <= 5 * se + 1e-12).all(), (freq, p)


@pytest.mark.parametrize("kind", KINDS)
def test_prior_sample_matches_prior(kind: str) -> None:
    g = torch.Generator().manual_seed(8)
    proc = make(kind, dd.LogLinear())
    n = 40000
    xs = proc.prior_sample((n,), generator=g)
    freq = torch.bincount(xs, minlength=proc.num_states).double() / n
    p = proc.prior_log_probs().exp()
    se = torch.sqrt(p * (1 - p) / n).clamp_min(1e-9)
    assert ((freq - p).abs() <= 5 * se + 1e-12).all()


def test_absorbing_reverse_keeps_unmasked_tokens() -> None:
    proc = dd.Absorbing(4, dd.LogLinear())
    x_t = torch.tensor([[0, 4, 2, 4]])
    logits = torch.randn(1, 4, 4)
    post = proc.posterior(x_t, logits, 0.2, 0.6)
    assert torch.allclose(post[0, 0], torch.nn.functional.one_hot(torch.tensor(0), 5).float())
    assert torch.allclose(post[0, 2], torch.nn.functional.one_hot(torch.tensor(2), 5).float())
    # masked: stays masked with prob (1 - a_s)/(1 - a_t), else unmasks as softmax(logits)
    stay = (1 - 0.8) / (1 - 0.4)
    torch.testing.assert_close(post[0, 1, 4], torch.tensor(stay))
    torch.testing.assert_close(post[0, 1, :4], (1 - stay) * torch.softmax(logits[0, 1], -1))


def test_mean_parameterisation_is_exact_for_true_conditionals() -> None:
    """With logits = log p(x0 | x_t) of one token, the reverse step equals q(x_s | x_t) exactly."""
    g = torch.Generator().manual_seed(11)
    for kind in KINDS:
        proc = make(kind, dd.CosineAlpha())
        data = torch.rand(K - 1, generator=g, dtype=torch.float64)
        data = data / data.sum()  # p(x0) over the first K - 1 classes
        s, t = 0.3, 0.7
        ids = torch.arange(K - 1).reshape(-1, 1)
        q_t = proc.marginal(ids, t).double()[:, 0]  # (K-1, S): q(x_t | x0)
        q_s = proc.marginal(ids, s).double()[:, 0]
        q_ts = dd.Dense.from_process(proc, num_steps=10).span(3, 7)  # q(x_t | x_s)
        for z in range(proc.num_states):
            pz = (data * q_t[:, z]).sum()
            if pz <= 0:
                continue
            post_x0 = data * q_t[:, z] / pz  # exact p(x0 | x_t = z)
            logits = torch.log(
                torch.cat([post_x0, torch.zeros(1, dtype=torch.float64)])[:K]
            ).float()
            true = (data @ q_s) * q_ts[:, z] / pz  # q(x_s | x_t = z)
            got = proc.posterior(torch.tensor([[z]]), logits.reshape(1, 1, K), s, t)[0, 0].double()
            torch.testing.assert_close(got, true, atol=1e-5, rtol=0)


# ---- bad input -------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors() -> None:
    proc = dd.Uniform(5, dd.LogLinear())
    x0 = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="id 5 outside"):
        proc.marginal(torch.tensor([[0, 5]]), 0.5)
    with pytest.raises(ValueError, match="id -1 outside"):
        proc.sample_marginal(torch.tensor([[-1, 0]]), 0.5)
    with pytest.raises(TypeError, match="integer ids"):
        proc.sample_marginal(x0.float(), 0.5)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        proc.marginal(x0, 1.5)
    with pytest.raises(ValueError, match="shape"):
        proc.marginal(x0, torch.tensor([0.1, 0.2]))
    with pytest.raises(TypeError, match="float"):
        proc.marginal(x0, torch.tensor([1]))
    with pytest.raises(ValueError, match="s <= t"):
        proc.posterior(x0, x0, 0.6, 0.5)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 5\)"):
        proc.posterior(x0, torch.randn(1, 3, 4), 0.2, 0.5)
    with pytest.raises(ValueError, match="not on the grid"):
        dd.Uniform(5, dd.d3pm_cosine(10)).marginal(x0, 0.55)
    with pytest.raises(ValueError, match="sums to"):
        dd.Dense(torch.tensor([[[0.5, 0.4], [0.5, 0.5]]]))
    with pytest.raises(ValueError, match="shape"):
        dd.Dense(torch.ones(2, 3, 2) / 2)
    with pytest.raises(ValueError, match="sum to 1"):
        dd.Marginal([0.5, 0.6], dd.LogLinear())
    with pytest.raises(ValueError, match="parameterization"):
        dd.Uniform(5, dd.LogLinear(), "eps")
    with pytest.raises(TypeError, match="Schedule"):
        dd.Uniform(5, "cosine")  # type: ignore[arg-type]


def test_marginal_from_data() -> None:
    x = torch.tensor([[0, 0, 1, 3], [0, 1, 1, 9]])
    mask = x < 4
    proc = dd.Marginal.from_data(x, 4, dd.LogLinear(), mask=mask)
    torch.testing.assert_close(proc.limit, torch.tensor([3, 3, 0, 1], dtype=torch.float64) / 7)
    with pytest.raises(ValueError, match="outside"):
        dd.Marginal.from_data(x, 4, dd.LogLinear())


def test_large_vocab_memory_is_linear_in_k(tmp_path) -> None:  # noqa: ANN001
    """8 x 1024 tokens at K = 50,257: sample_marginal + exact posterior stay under 4 GB of RAM."""
    import subprocess
    import sys

    code = (
        "import resource, torch, discdiff as dd\n"
        "torch.set_num_threads(2)\n"
        "K = 50257\n"
        "for proc in (dd.Uniform(K, dd.LogLinear()), dd.Absorbing(K, dd.LogLinear())):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x0 = torch.randint(0, K, (8, 1024), generator=g)\n"
        "    t = torch.full((8,), 0.5); s = torch.full((8,), 0.25)\n"
        "    xt = proc.sample_marginal(x0, t, generator=g)\n"
        "    post = proc.posterior(xt, x0, s, t)\n"
        "    assert post.shape == (8, 1024, proc.num_states)\n"
        "    del post\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak_gb = int(out.stdout.strip().splitlines()[-1]) / 1024**2
    assert peak_gb < 4.0, f"peak RSS {peak_gb:.2f} GB"
    assert math.isfinite(peak_gb)


@pytest.mark.parametrize("schedule", [dd.LogLinear(), dd.CosineAlpha()])
@pytest.mark.parametrize("grad", [False, True])
def test_absorbing_closed_form_posterior_equals_the_mixing_form(schedule, grad):
    from discdiff.processes.mixing import MixingProcess

    p = dd.Absorbing(7, schedule)
    g = torch.Generator().manual_seed(0)
    B, L = 6, 50
    x_t = torch.randint(0, 8, (B, L), generator=g)  # masked and unmasked positions
    logits = torch.randn(B, L, 7, generator=g) * 4
    logits[0, 0, 3] = 60.0  # p rounds to 1 in float32
    logits.requires_grad_(grad)
    # t = 1, s = t, t near 0, s = 0, a_t = a_s + tiny
    t = torch.tensor([1.0, 0.5, 1e-6, 0.3, 1.0, 0.2], dtype=torch.float64)
    s = torch.tensor([0.0, 0.5, 0.0, 0.29, 0.999, 0.0], dtype=torch.float64)
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    ratio = schedule.alpha_ratio(s, t)
    fast = p._mean_log(x_t, logits, a_s, a_t, ratio)
    ref = MixingProcess._mean_log(p, x_t, logits, a_s, a_t, ratio)
    assert torch.equal(torch.isfinite(fast), torch.isfinite(ref))
    fin = torch.isfinite(ref)
    torch.testing.assert_close(fast[fin], ref[fin], atol=5e-6, rtol=0)
    # a mask at t = 0 (a_t = 1: no x_0 explains it) stays put, as in the mixing form
    at0 = p._mean_log(
        torch.full((1, 1), 7), logits[:1, :1], a_s[:1] * 0 + 1, a_t[:1] * 0 + 1, ratio[:1]
    )
    assert at0[0, 0].argmax() == 7 and at0[0, 0, 7] == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: dd.Uniform(5, dd.LogLinear()),
        lambda: dd.Marginal(torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]), dd.CosineAlpha()),
    ],
)
@pytest.mark.parametrize("s, t", [(0.3, 0.3), (0.0, 1e-4), (0.0, 1.0), (0.999, 1.0), (0.2, 0.6)])
def test_mixture_draw_of_the_posterior_at_the_ends_of_time(make, s, t):
    """The three-part draw against posterior() where the parts degenerate: no time passing
    (stay), s = 0, t -> 0 and t = 1, a class of the limit with mass 0, and rows whose p(z)
    rounds to 1 in float32 (right and wrong)."""
    proc = make()
    S, N = proc.num_states, 20000
    g = torch.Generator().manual_seed(3)
    x_t = torch.arange(S).repeat(2)  # (2S,)
    logits = torch.randn(2 * S, 5, generator=g)
    logits[:S] = -20.0
    logits[torch.arange(S), torch.arange(S)] = 20.0  # p(z) = 1 - 4e-18: rounds to 1
    logits[S:, 0] = 30.0  # confident in class 0, whatever z is
    want = proc.posterior(x_t, logits, s, t).double()  # (2S, S)
    draws = proc.sample_posterior(x_t.repeat(N, 1), logits.expand(N, 2 * S, 5), s, t, g)
    freq = torch.nn.functional.one_hot(draws, S).double().mean(0)
    se = (want * (1 - want) / N).sqrt()
    assert ((freq - want).abs() <= 5 * se + 1e-9).all(), (freq - want).abs().max()
    assert (freq[want == 0] == 0).all()
