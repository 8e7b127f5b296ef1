"""Samplers against an exact oracle denoiser on a known joint over V^L sequences (V = 3, L = 3).

Distribution tests compare empirical frequencies with a reference law by total variation (TV).
The bound is E[TV] <= 0.5 sum_x sqrt(p(x)(1 - p(x)) / n) plus McDiarmid's deviation
sqrt(log(1 / delta) / (2 n)) with delta = 1e-6 (one sample moves the TV by at most 1 / n), so a
correct sampler fails with probability < 1e-6; every test also checks that a wrong law (the
product of the marginals) lies outside the bound, so the tests can fail.
For ancestral sampling the reference law is the sampler's own exact output law, computed by
propagating the S^L-state Markov chain of its reverse steps; its distance to the joint (the
factorisation error of drawing positions independently) is checked separately.
"""

from __future__ import annotations

import math

import pytest
import torch

from discdiff import Absorbing, Dense, LogLinear, Marginal, Uniform, absorbing_schedule, d3pm_cosine
from discdiff.categorical import apply_temperature, process_logits, sample_categorical, top_p_filter
from discdiff.samplers import (
    AncestralSampler,
    CachingSampler,
    ConfidenceSampler,
    FirstHittingSampler,
    SampleResult,
    SundaeSampler,
    time_grid,
)
from discdiff.samplers.base import SamplingRun
from tests.oracle import ExactOracle, all_sequences, random_joint

V, L = 3, 3


@pytest.fixture(scope="module")
def joint() -> torch.Tensor:
    return random_joint(V, L, torch.Generator().manual_seed(0))


def seq_index(x: torch.Tensor, vocab: int = V) -> torch.Tensor:
    """Row-major index of each sequence (B, L) -> (B,)."""
    idx = torch.zeros(x.shape[0], dtype=torch.long)
    for i in range(x.shape[1]):
        idx = idx * vocab + x[:, i].cpu()
    return idx


def empirical(x: torch.Tensor, vocab: int = V) -> torch.Tensor:
    n_states = vocab ** x.shape[1]
    return torch.bincount(seq_index(x, vocab), minlength=n_states).double() / x.shape[0]


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p.flatten().double() - q.flatten().double()).abs().sum())


def tv_bound(p: torch.Tensor, n: int, delta: float = 1e-6) -> float:
    p = p.flatten().double()
    return 0.5 * float((p * (1 - p) / n).sqrt().sum()) + math.sqrt(math.log(1 / delta) / (2 * n))


def product_of_marginals(joint: torch.Tensor) -> torch.Tensor:
    m = [joint.sum(dim=tuple(j for j in range(L) if j != i)) for i in range(L)]
    return m[0][:, None, None] * m[1][None, :, None] * m[2][None, None, :]


def assert_matches(samples: torch.Tensor, law: torch.Tensor, joint: torch.Tensor) -> None:
    n = samples.shape[0]
    bound = tv_bound(law, n)
    assert tv(product_of_marginals(joint), law) > bound, "test too weak to see a wrong law"
    assert tv(empirical(samples), law) < bound


def exact_ancestral_law(
    oracle: ExactOracle, process, steps: int, power: float = 1.0
) -> torch.Tensor:
    """The exact law of AncestralSampler's output with this oracle, by enumerating x_t (S^L)."""
    S = process.num_states
    states = all_sequences(S, L)  # (S^L, L)
    prior = process.prior_log_probs().exp()
    dist = prior[states].prod(-1)  # (S^L,)
    grid = time_grid(process, steps, power)
    for i in range(grid.numel() - 1):
        t = torch.full((states.shape[0],), float(grid[i]), dtype=torch.float64)
        s = torch.full_like(t, float(grid[i + 1]))
        post = process.posterior(states, oracle(states, t), s, t).double()  # (S^L, L, S)
        post = post / post.sum(-1, keepdim=True)  # float32 rounding
        trans = torch.ones(states.shape[0], states.shape[0], dtype=torch.float64)
        for j in range(L):
            trans = trans * post[:, j, :][:, states[:, j]]  # (from, to)
        dist = dist @ trans
    keep = (states < V).all(1)  # at s = 0 every position holds a class
    assert abs(float(dist[keep].sum()) - 1) < 1e-9
    return dist[keep].reshape((V,) * L)


class TimeAgnostic(ExactOracle):
    """The exact oracle of an absorbing process, evaluated at t = 1/2 whatever t is asked.

    For absorbing processes p(x0 | x_t) does not depend on t in (0, 1) (which positions are masked
    says nothing about the values), but at t = 1 a state with unmasked (fixed) tokens has
    probability 0 under the forward process, so the plain oracle is undefined there.
    """

    def __call__(self, x_t, t, cond=None):
        return super().__call__(x_t, torch.full_like(t, 0.5), cond)


def oracle_for(joint, proc) -> ExactOracle:
    return TimeAgnostic(joint, proc) if isinstance(proc, Absorbing) else ExactOracle(joint, proc)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- exactness ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule", [LogLinear(), absorbing_schedule(10)], ids=["continuous", "discrete"]
)
def test_first_hitting_samples_the_joint(joint, schedule):
    proc = Absorbing(V, schedule)
    res = FirstHittingSampler().sample(ExactOracle(joint, proc), proc, (3000, L), generator=gen(1))
    assert res.num_calls == L  # one call per token
    assert_matches(res.samples, joint, joint)


def test_first_hitting_with_fixed_prefix_samples_the_conditional(joint):
    proc = Absorbing(V, LogLinear())
    n = 3000
    values = torch.zeros(n, L, dtype=torch.long)
    values[:, 0] = 1
    mask = torch.zeros(n, L, dtype=torch.bool)
    mask[:, 0] = True
    res = FirstHittingSampler().sample(
        TimeAgnostic(joint, proc), proc, (n, L), fixed=(values, mask), generator=gen(2)
    )
    assert res.num_calls == L - 1
    assert bool((res.samples[:, 0] == 1).all())
    cond = torch.zeros_like(joint)
    cond[1] = joint[1] / joint[1].sum()
    assert tv(empirical(res.samples), cond) < tv_bound(cond, n)
    assert tv(empirical(res.samples), joint) > tv_bound(cond, n)  # the prefix did matter


@pytest.mark.parametrize(
    "make, steps",
    [
        (lambda: Absorbing(V, LogLinear()), 40),
        (lambda: Absorbing(V, absorbing_schedule(20)), 7),  # skipping grid steps
        (lambda: Uniform(V, LogLinear()), 40),
        (lambda: Uniform(V, d3pm_cosine(30)), 30),
        (lambda: Marginal([0.2, 0.3, 0.5], LogLinear()), 40),
    ],
    ids=["absorbing", "absorbing-skip", "uniform", "uniform-d3pm-cosine", "marginal"],
)
def test_ancestral_follows_its_exact_law(joint, make, steps):
    proc = make()
    oracle = oracle_for(joint, proc)
    law = exact_ancestral_law(oracle, proc, steps)
    res = AncestralSampler(steps).sample(oracle, proc, (2000, L), generator=gen(3))
    assert res.num_calls == steps
    assert_matches(res.samples, law, joint)


def test_ancestral_on_a_warped_grid_follows_its_exact_law(joint):
    """grid_power moves the steps (here towards t = 0) and the sampler follows that grid's law."""
    proc = Uniform(V, LogLinear())
    oracle = oracle_for(joint, proc)
    law = exact_ancestral_law(oracle, proc, 6, power=2.0)
    even = exact_ancestral_law(oracle, proc, 6)
    res = AncestralSampler(6, grid_power=2.0).sample(oracle, proc, (4000, L), generator=gen(3))
    assert res.num_calls == 6
    n = res.samples.shape[0]
    assert tv(empirical(res.samples), law) < tv_bound(law, n)
    assert tv(law, even) > 0.01, "the two grids must give different laws for this test to bite"


@pytest.mark.parametrize(
    "make", [lambda: Absorbing(V, LogLinear()), lambda: Uniform(V, LogLinear())]
)
def test_ancestral_factorisation_error_vanishes_with_steps(joint, make):
    """Drawing positions independently costs O(1 / steps) in TV; absorbing: <= P(two unmask together)."""
    proc = make()
    oracle = oracle_for(joint, proc)
    errs = [tv(exact_ancestral_law(oracle, proc, n), joint) for n in (4, 16, 64)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02
    if isinstance(proc, Absorbing):  # unmask times are uniform: P(a pair shares a step) = 1 / n
        for n, e in zip((4, 16, 64), errs, strict=True):
            assert e <= 3 / n


def test_ancestral_on_dense_process(joint):
    proc = Dense.from_process(Uniform(V, d3pm_cosine(8)))
    oracle = ExactOracle(joint, proc)
    res = AncestralSampler(8).sample(oracle, proc, (16, L), generator=gen(4))
    assert res.samples.shape == (16, L) and int(res.samples.max()) < V


# ---- caching ------------------------------------------------------------------------------
class Tempered(ExactOracle):
    """The (time-agnostic) exact oracle's log-probabilities after temperature and top-p: the
    law a plain sampler with those settings follows, for :func:`exact_ancestral_law`."""

    def __init__(self, joint, proc, temperature, top_p):
        super().__init__(joint, proc)
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, x_t, t, cond=None):
        lp = super().__call__(x_t, torch.full_like(t, 0.5), cond)
        return process_logits(lp, self.temperature, self.top_p)


@pytest.mark.parametrize("schedule, steps", [(LogLinear(), 3), (absorbing_schedule(40), 2)])
@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_caching_has_the_ancestral_law_with_fewer_calls(joint, schedule, steps, temperature, top_p):
    """Few steps, so that the ancestral law is far from the joint (the factorisation error):
    the cached sampler must follow that law, not merely the data."""
    proc = Absorbing(V, schedule)
    oracle = TimeAgnostic(joint, proc)
    law = exact_ancestral_law(Tempered(joint, proc, temperature, top_p), proc, steps)
    kw = {"temperature": temperature, "top_p": top_p}
    n = 6000
    cached = CachingSampler(steps, **kw).sample(oracle, proc, (n, L), generator=gen(5))
    bound = tv_bound(law, n)
    assert tv(law, joint) > bound or tv(product_of_marginals(joint), law) > bound
    assert tv(empirical(cached.samples), law) < bound
    plain = AncestralSampler(steps, **kw).sample(oracle, proc, (n, L), generator=gen(6))
    assert tv(empirical(plain.samples), law) < bound  # the reference law is the plain one's


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_unmasking_steps_follow_the_per_step_coins(power):
    """The step drawn up front has the law of one coin per step: unmasked at step i with
    probability (alpha_{i+1} - alpha_i) / (1 - alpha_i) given still masked, all by the last
    step; evenly spaced uniforms give the exact law to 1 / N."""
    from discdiff.samplers.caching import unmasking_steps

    grid = torch.linspace(1.0, 0.0, 8, dtype=torch.float64) ** power
    alpha = LogLinear(alpha_min=0.02).alpha(grid)  # alpha(1) > 0
    N = 20000
    v = (torch.arange(N, dtype=torch.float64) + 0.5) / N
    got = torch.bincount(unmasking_steps(alpha, v), minlength=7).double() / N
    still, want = 1.0, []
    for i in range(7):
        p = (alpha[i + 1] - alpha[i]) / (1 - alpha[i])
        want.append(still * float(p))
        still *= 1 - float(p)
    assert got.shape == (7,) and abs(still) < 1e-12
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=2 / N, rtol=0)


def test_caching_visits_only_busy_steps_and_a_trajectory_changes_nothing(joint):
    """Without a trajectory the loop skips the steps that unmask nothing; with one it walks
    every step (steps + 1 states): the same samples either way, and the walk over every step
    makes at most one more call (re-evaluating after the last unmasking, never used)."""
    proc = Absorbing(V, LogLinear())
    oracle = ExactOracle(joint, proc)
    plain = CachingSampler(200).sample(oracle, proc, (4, L), generator=gen(8))
    traced = CachingSampler(200).sample(
        oracle, proc, (4, L), generator=gen(8), return_trajectory=True
    )
    assert torch.equal(plain.samples, traced.samples)
    assert plain.num_calls <= traced.num_calls <= plain.num_calls + 1 <= 4 * L + 2
    assert plain.rows_evaluated <= traced.rows_evaluated <= plain.rows_evaluated + 4
    assert len(traced.trajectory) == 201 and torch.equal(traced.trajectory[-1], traced.samples)
    assert int((traced.trajectory[0] == proc.mask_id).sum()) == 4 * L


@pytest.mark.parametrize("schedule, steps", [(LogLinear(), 60), (absorbing_schedule(40), 25)])
def test_caching_calls_the_denoiser_only_on_changed_rows(joint, schedule, steps):
    proc = Absorbing(V, schedule)
    oracle = ExactOracle(joint, proc)
    plain = AncestralSampler(steps).sample(oracle, proc, (4, L), generator=gen(5))
    cached = CachingSampler(steps).sample(oracle, proc, (4, L), generator=gen(5))
    assert cached.num_calls < plain.num_calls == steps
    assert cached.rows_evaluated < plain.rows_evaluated
    # with batch 4 and 3 tokens each, at most 12 steps can change anything (+ the first call)
    assert cached.num_calls <= 4 * L + 1
    assert int(cached.samples.max()) < V
    again = CachingSampler(steps).sample(oracle, proc, (4, L), generator=gen(5))
    assert torch.equal(again.samples, cached.samples)  # same seed, same samples


def test_caching_refuses_time_conditioned_denoisers_and_other_processes(joint):
    proc = Absorbing(V, LogLinear())

    class TimeConditioned(ExactOracle):
        time_conditioned = True

    with pytest.raises(ValueError, match="time_conditioned"):
        CachingSampler(10).sample(TimeConditioned(joint, proc), proc, (2, L), generator=gen(0))
    res = CachingSampler(10, allow_time_conditioned=True).sample(
        TimeConditioned(joint, proc), proc, (2, L), generator=gen(0)
    )
    assert int(res.samples.max()) < V
    uni = Uniform(V, LogLinear())
    with pytest.raises(TypeError, match="Absorbing"):
        CachingSampler(10).sample(ExactOracle(joint, uni), uni, (2, L))
    with pytest.raises(TypeError, match="Absorbing"):
        FirstHittingSampler().sample(ExactOracle(joint, uni), uni, (2, L))


# ---- fixed positions ----------------------------------------------------------------------
class Recorder:
    """Wraps a denoiser and checks every input holds the fixed values.

    ``cond["row"]`` names the batch rows fed (samplers slice per-row cond with the rows).
    """

    def __init__(self, inner, values, mask):
        self.inner, self.values, self.mask, self.calls = inner, values, mask, 0

    def __call__(self, x_t, t, cond):
        rows = cond["row"]
        assert rows.shape[0] == x_t.shape[0]
        m = self.mask[rows]
        assert torch.equal(x_t[m], self.values[rows][m])
        self.calls += 1
        return self.inner(x_t, t)


def _sampler_cases():
    return [
        (AncestralSampler(12), lambda: Absorbing(V, LogLinear())),
        (AncestralSampler(12), lambda: Uniform(V, LogLinear())),
        (CachingSampler(12), lambda: Absorbing(V, LogLinear())),
        (FirstHittingSampler(), lambda: Absorbing(V, LogLinear())),
        (ConfidenceSampler(2), lambda: Absorbing(V, LogLinear())),
        (
            ConfidenceSampler(3, schedule="linear", temperature=0.5, top_p=0.8, choice_noise=2.0),
            lambda: Absorbing(V, LogLinear()),
        ),
        (SundaeSampler(6), lambda: Uniform(V, LogLinear())),
        (
            SundaeSampler(6, proportion=(0.9, 0.3), temperature=0.5),
            lambda: Uniform(V, d3pm_cosine(10)),
        ),
    ]


@pytest.mark.parametrize("sampler, make", _sampler_cases(), ids=lambda v: repr(v)[:40])
def test_fixed_positions_never_change_and_are_seen(joint, sampler, make):
    proc = make()
    B = 32
    g = gen(6)
    values = torch.randint(0, V, (B, L), generator=g)
    mask = torch.rand(B, L, generator=g) < 0.4
    rec = Recorder(oracle_for(joint, proc), values, mask)
    res = sampler.sample(
        rec,
        proc,
        (B, L),
        cond={"row": torch.arange(B)},
        fixed=(values, mask),
        generator=gen(7),
        return_trajectory=True,
    )
    assert isinstance(res, SampleResult)
    assert res.samples.shape == (B, L) and res.samples.dtype == torch.long
    assert int(res.samples.min()) >= 0 and int(res.samples.max()) < V
    assert torch.equal(res.samples[mask], values[mask])
    assert rec.calls == res.num_calls > 0
    assert all(torch.equal(x[mask], values[mask]) for x in res.trajectory)
    assert torch.equal(res.trajectory[-1], res.samples)


@pytest.mark.parametrize("sampler, make", _sampler_cases(), ids=lambda v: repr(v)[:40])
def test_same_seed_same_samples_other_seed_differs(joint, sampler, make):
    proc = make()
    oracle = ExactOracle(joint, proc)
    a = sampler.sample(oracle, proc, (64, L), generator=gen(8)).samples
    b = sampler.sample(oracle, proc, (64, L), generator=gen(8)).samples
    c = sampler.sample(oracle, proc, (64, L), generator=gen(9)).samples
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---- multi-field --------------------------------------------------------------------------
class TwoFieldOracle:
    """Independent fields: each with its own joint and process."""

    def __init__(self, oracles):
        self.oracles = oracles

    def __call__(self, x_t, t, cond=None):
        return {k: o(x_t[k], t) for k, o in self.oracles.items()}


def test_multi_field_ancestral_matches_each_field(joint):
    other = random_joint(V, L, gen(10))
    procs = {"a": Absorbing(V, LogLinear()), "u": Uniform(V, LogLinear())}
    den = TwoFieldOracle(
        {"a": TimeAgnostic(joint, procs["a"]), "u": ExactOracle(other, procs["u"])}
    )
    n, steps = 2000, 30
    res = AncestralSampler(steps).sample(den, procs, {"a": (n, L), "u": (n, L)}, generator=gen(11))
    assert set(res.samples) == {"a", "u"} and res.num_calls == steps
    assert_matches(
        res.samples["a"], exact_ancestral_law(den.oracles["a"], procs["a"], steps), joint
    )
    assert_matches(
        res.samples["u"], exact_ancestral_law(den.oracles["u"], procs["u"], steps), other
    )


def test_multi_field_absorbing_samplers_and_fixed(joint):
    procs = {"a": Absorbing(V, LogLinear()), "b": Absorbing(V, LogLinear())}
    den = TwoFieldOracle({k: TimeAgnostic(joint, p) for k, p in procs.items()})
    shape = {"a": (8, L), "b": (8, L)}
    vals = torch.full((8, L), 2, dtype=torch.long)
    mask = torch.zeros(8, L, dtype=torch.bool)
    mask[:, 1] = True
    for sampler in (FirstHittingSampler(), ConfidenceSampler(3), CachingSampler(10)):
        res = sampler.sample(den, procs, shape, fixed={"b": (vals, mask)}, generator=gen(12))
        assert all(int(v.max()) < V for v in res.samples.values())
        assert bool((res.samples["b"][:, 1] == 2).all())
    res = FirstHittingSampler().sample(den, procs, shape, fixed={"b": (vals, mask)})
    assert res.num_calls == 2 * L - 1  # one token of all masked positions in both fields per call
    with pytest.raises(ValueError, match="shape"):
        AncestralSampler(4).sample(den, procs, (8, L))
    with pytest.raises(ValueError, match="batch"):
        AncestralSampler(4).sample(den, procs, {"a": (8, L), "b": (4, L)})


# ---- confidence and SUNDAE ----------------------------------------------------------------
def test_confidence_unmasks_everything_on_schedule(joint):
    proc = Absorbing(V, LogLinear())
    oracle = TimeAgnostic(joint, proc)
    res = ConfidenceSampler(2).sample(
        oracle, proc, (16, L), generator=gen(13), return_trajectory=True
    )
    masked = [int((x == proc.mask_id).sum(1).max()) for x in res.trajectory]
    # cosine with M = 3 over 2 steps: floor(3 cos(pi/4)) = 2 left after step 1, 0 after step 2
    assert masked == [3, 2, 0] and res.num_calls == 2
    lin = ConfidenceSampler(3, schedule="linear").sample(
        oracle, proc, (16, L), return_trajectory=True
    )
    assert [int((x == proc.mask_id).sum(1).max()) for x in lin.trajectory] == [3, 2, 1, 0]
    # greedy: each unmasked token is the argmax of the prediction given the state before
    greedy = ConfidenceSampler(3, temperature=0.0).sample(
        oracle, proc, (4, L), return_trajectory=True
    )
    for before, after in zip(greedy.trajectory[:-1], greedy.trajectory[1:], strict=True):
        best = oracle(before, torch.full((4,), 1.0)).argmax(-1)
        new = (before == proc.mask_id) & (after != proc.mask_id)
        assert bool(new.any()) and torch.equal(after[new], best[new])


# ---- classifier-free guidance -------------------------------------------------------------
class LabelModel:
    """Logits that depend only on the label: row ``label`` of a fixed table (3 labels, 2 = null)."""

    def __init__(self):
        self.table = torch.randn(3, L, V, generator=gen(15))
        self.calls = 0

    def __call__(self, x_t, t, cond):
        self.calls += 1
        return self.table[cond["label"]]


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_models():
    proc = Absorbing(V, LogLinear())
    B = 64
    label = torch.randint(0, 2, (B,), generator=gen(16))
    cond = {"label": label, "null_label": 2}
    null_cond = {"label": torch.full((B,), 2), "null_label": 2}
    m = LabelModel()
    g0 = AncestralSampler(6, guidance=0.0).sample(m, proc, (B, L), cond=cond, generator=gen(17))
    uncond = AncestralSampler(6).sample(m, proc, (B, L), cond=null_cond, generator=gen(17))
    assert torch.equal(g0.samples, uncond.samples) and g0.num_calls == 2 * uncond.num_calls == 12
    g1 = AncestralSampler(6, guidance=1.0).sample(m, proc, (B, L), cond=cond, generator=gen(17))
    conditional = AncestralSampler(6).sample(m, proc, (B, L), cond=cond, generator=gen(17))
    assert torch.equal(g1.samples, conditional.samples) and g1.num_calls == 6
    # w = 3: log p_u + 3 (log p_c - log p_u), renormalised
    sampler = AncestralSampler(6, guidance=3.0, null_label=2)
    run = SamplingRun(sampler, m, proc, (B, L), {"label": label}, None, None, None, False, False)
    got = run.log_probs({"x": torch.full((B, L), V)}, run.full_time(1.0))["x"]
    lc, lu = m.table[label].log_softmax(-1), m.table[2].log_softmax(-1)
    assert torch.allclose(got, (lu + 3 * (lc - lu)).log_softmax(-1), atol=1e-5)
    with pytest.raises(ValueError, match="null label"):
        AncestralSampler(6, guidance=2.0).sample(m, proc, (B, L), cond={"label": label})
    with pytest.raises(ValueError, match="label"):
        AncestralSampler(6, guidance=2.0).sample(m, proc, (B, L))


# ---- grids, settings and categorical utilities --------------------------------------------
def test_time_grid():
    assert torch.allclose(
        time_grid(Uniform(V, LogLinear()), 4), torch.tensor([1, 0.75, 0.5, 0.25, 0]).double()
    )
    g = time_grid(Absorbing(V, absorbing_schedule(10)), 4)
    k = g * 10
    assert g.numel() == 5 and torch.allclose(k, k.round()) and bool((g[1:] < g[:-1]).all())
    assert g[0] == 1 and g[-1] == 0
    assert time_grid(Absorbing(V, absorbing_schedule(10)), 10).numel() == 11
    with pytest.raises(ValueError, match="exceeds"):
        time_grid(Absorbing(V, absorbing_schedule(10)), 11)
    warped = time_grid(Uniform(V, LogLinear()), 4, power=2.0)
    assert torch.allclose(warped, torch.tensor([1, 0.5625, 0.25, 0.0625, 0]).double())
    with pytest.raises(ValueError, match="continuous-time"):
        time_grid(Absorbing(V, absorbing_schedule(10)), 4, power=2.0)
    with pytest.raises(ValueError, match="grid_power"):
        AncestralSampler(3, grid_power=0.0)
    with pytest.raises(ValueError, match="steps"):
        AncestralSampler(0)
    with pytest.raises(ValueError, match="top_p"):
        AncestralSampler(3, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        ConfidenceSampler(3, temperature=-1.0)
    with pytest.raises(ValueError, match="proportion"):
        SundaeSampler(3, proportion=1.5)


def test_top_p_keeps_the_smallest_nucleus():
    g = gen(18)
    logits = torch.randn(200, 7, generator=g)
    for p in (0.3, 0.6, 0.95):
        kept = torch.isfinite(top_p_filter(logits, p))
        probs = logits.softmax(-1)
        for row in range(logits.shape[0]):  # brute force: sort, take until mass >= p
            order = probs[row].argsort(descending=True)
            n = int((probs[row][order].cumsum(0) < p).sum()) + 1
            want = torch.zeros(7, dtype=torch.bool)
            want[order[:n]] = True
            assert torch.equal(kept[row], want)
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_temperature_and_gumbel_sampling_frequencies():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]])
    greedy = apply_temperature(logits, 0.0)
    assert torch.equal(torch.isfinite(greedy), torch.tensor([[False, False, False, True]]))
    n = 20000
    for temp in (1.0, 0.5):
        lp = process_logits(logits.expand(n, 4), temperature=temp)
        draws = sample_categorical(lp, gen(19))
        freq = torch.bincount(draws, minlength=4).double() / n
        want = (logits[0] / temp).softmax(-1).double()
        assert tv(freq, want) < tv_bound(want, n)
    assert torch.equal(sample_categorical(lp, gen(20)), sample_categorical(lp, gen(20)))


def test_inverse_cdf_draws_follow_the_softmax_and_never_a_ruled_out_class():
    """One uniform per position: frequencies within five standard errors of softmax(logits)
    on rows of unnormalised scores, classes with probability 0 (-inf, or rounding to 0 in
    float32 next to a large logit) never drawn, and the same seed gives the same draws."""
    from discdiff.categorical import sample_inverse_cdf

    n = 40000
    logits = torch.tensor(
        [[0.0, 1.0, -1.0, 2.0, -torch.inf], [-torch.inf, 3.0, -torch.inf, 3.0, 0.5],
         [120.0, 0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]]
    )  # fmt: skip
    draws = sample_inverse_cdf(logits.expand(n, 4, 5), gen(22))  # (n, 4)
    assert draws.shape == (n, 4) and draws.dtype == torch.long
    for row in range(4):
        want = logits[row].double().softmax(-1)
        freq = torch.bincount(draws[:, row], minlength=5).double() / n
        se = (want * (1 - want) / n).sqrt()
        assert ((freq - want).abs() <= 5 * se + 1e-12).all(), (row, freq, want)
        assert (freq[want == 0] == 0).all()
    assert torch.equal(draws, sample_inverse_cdf(logits.expand(n, 4, 5), gen(22)))


@pytest.mark.parametrize(
    "sampler", [AncestralSampler(5), FirstHittingSampler(), ConfidenceSampler(2)]
)
def test_runs_on_the_denoiser_device_and_progress_bar(joint, sampler):
    proc = Absorbing(V, LogLinear())
    net = torch.nn.Linear(1, 1)  # a module with parameters: its device is the default
    oracle = ExactOracle(joint, proc)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = net

        def forward(self, x_t, t, cond=None):
            return oracle(x_t, t)

    res = sampler.sample(Net(), proc, (4, L), generator=gen(21), progress=True)
    assert res.samples.device == next(net.parameters()).device


def test_sampling_loops_skip_value_reading_checks_after_the_boundary():
    from discdiff.checks import check_values, trusted_values
    from discdiff.processes.base import check_ids

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, t, cond=None):
            seen.append(check_values())
            return torch.zeros(*x.shape, 3)

    proc = Absorbing(3, LogLinear())
    AncestralSampler(4).sample(Probe(), proc, (2, 5), generator=torch.Generator().manual_seed(0))
    assert seen == [False] * 4 and check_values()  # inside the loop only
    with pytest.raises(ValueError, match="outside"):
        check_ids(torch.tensor([5]), 3)  # the boundary still checks
    with trusted_values():
        check_ids(torch.tensor([5]), 3)  # not read: no host sync
    with pytest.raises(ValueError, match="fixed values"):  # a sampler's own inputs: checked
        AncestralSampler(2).sample(
            Probe(), proc, (2, 5), fixed=(torch.full((2, 5), 9), torch.ones(2, 5, dtype=torch.bool))
        )


def test_caching_never_writes_into_the_denoisers_output():
    """A denoiser may hand out one buffer every call (CUDA graphs do): the cache copies it."""
    proc = Absorbing(V, LogLinear())
    buffer = torch.randn(4, L, V, generator=gen(1))
    before = buffer.clone()

    def same_buffer(x, t, cond=None):
        return buffer[: x.shape[0]]

    res = CachingSampler(20).sample(same_buffer, proc, (4, L), generator=gen(2))
    assert torch.equal(buffer, before) and int(res.samples.max()) < V


def test_a_temperature_a_sampler_cannot_apply_is_refused_not_dropped(monkeypatch):
    """Common options reach every sampler; one that lacks a temperature drops it at 1.0 (it
    changes nothing) and refuses any other value in one line naming the flag."""
    from discdiff.samplers import AncestralSampler, make_sampler, register_sampler
    from discdiff.samplers.registry import SAMPLERS

    class NoTemperature(AncestralSampler):
        def __init__(self, steps: int = 4) -> None:
            super().__init__(steps)

    monkeypatch.setattr(SAMPLERS, "_items", dict(SAMPLERS._items))  # registered for this test
    register_sampler("no-temperature-test", NoTemperature)
    got = make_sampler("no-temperature-test", steps=3, temperature=1.0, top_p=None, guidance=1.0,
                       grid_power=2.0)  # fmt: skip
    assert isinstance(got, NoTemperature)
    for key, value in (("temperature", 0.5), ("top_p", 0.9), ("guidance", 2.0)):
        with pytest.raises(ValueError, match=f"takes no {key}: --{key.replace('_', '-')}"):
            make_sampler("no-temperature-test", steps=3, **{key: value})
