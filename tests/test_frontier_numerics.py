"""The frontier losses at their edges: score entropy from log scores (finite for every float32
input, equal to float64 brute force where exact), the Tweedie inversion at huge scores, DFM at
t = 0 and near kappa = 1 with and without its boundary terms, and the claims the docs make
(Tweedie's step is exact per position, not in the joint law), each against an exact oracle."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import discdiff as dd
from discdiff.losses import _dfm_generalized_kl, dfm_loss
from discdiff.processes.scores import (
    LOG_SCORE_CAP,
    _general_rows,
    score_entropy,
    scores_from_x0,
    x0_from_scores,
)

K = 5
BELOW_ONE = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))


def _processes():
    prior = torch.tensor([0.5, 0.2, 0.2, 0.05, 0.05])
    gappy = torch.tensor([0.6, 0.0, 0.3, 0.1, 0.0])  # a limit with zeros: the general path
    return {
        "uniform": dd.Uniform(K, dd.LogLinear()),
        "absorbing": dd.Absorbing(K, dd.LogLinear()),
        "marginal": dd.Marginal(prior, dd.LogLinear()),
        "gappy": dd.Marginal(gappy, dd.CosineAlpha()),
    }


def _brute64(proc, x_t, x0, ls, t):
    """SEDD's integrand and its gradient in float64, class by class, as the paper writes it:
    beta m(z) sum_{y != z} [s_y - r_y log s_y + r_y (log r_y - 1)] (s_y where r_y = 0)."""
    a = proc.schedule.alpha(t).double().view(-1, 1)
    beta = proc.schedule.rate(t).double().view(-1, 1)
    m = proc.limit_on(torch.device("cpu")).double()
    ls = ls.detach().double().requires_grad_(True)
    z, v = x_t.long(), x0.long()
    q_z = (z == v).double() * a + (1 - a) * m[z]
    out = torch.zeros(z.shape, dtype=torch.float64)
    size = torch.zeros(z.shape, dtype=torch.float64)  # the parts' magnitude (float32 rounding)
    for y in range(proc.num_classes):
        r = ((1 - a) * m[y] + a * (v == y).double()) / q_z
        s = ls[..., y].exp()
        safe = torch.where(r > 0, r, torch.ones_like(r))
        term = torch.where(r > 0, s - r * ls[..., y] + r * (torch.log(safe) - 1), s)
        out = out + torch.where(z == y, torch.zeros_like(term), term)
        part = s + r * (1 + ls[..., y].abs() + torch.log(safe).abs())
        size = size + torch.where(z == y, torch.zeros_like(part), part).detach()
    out = beta * m[z] * out
    out.sum().backward()
    return out.detach(), ls.grad, (beta * m[z] * size)


def _case(proc, spread, seed, B=48, L=6):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(B, generator=g) * 0.998 + 1e-3
    x0 = torch.randint(0, K, (B, L), generator=g)
    x_t = proc.sample_marginal(x0, t, generator=g)
    exact = scores_from_x0(proc, x_t, torch.randn(B, L, K, generator=g), t)
    exact = torch.where(torch.isfinite(exact), exact, torch.zeros_like(exact))
    ls = exact + spread * torch.randn(B, L, K, generator=g)
    return x_t, x0, ls.clamp(-1e4, 1e4), t


def test_the_issues_case_is_finite_with_its_float64_value_and_gradient():
    p = dd.Uniform(3, dd.LogLinear())
    ls = torch.zeros(1, 1, 3, requires_grad=True)
    with torch.no_grad():
        ls[0, 0, 1] = -110.0
    v = score_entropy(p, torch.tensor([[0]]), torch.tensor([[1]]), ls, torch.tensor([0.5]))
    v.sum().backward()
    assert math.isclose(v.item(), 294.36, rel_tol=1e-4)  # float64: 294.36, gradient -2.667
    assert math.isclose(ls.grad[0, 0, 1].item(), -8 / 3, rel_tol=1e-5)


@pytest.mark.parametrize("name", ["uniform", "absorbing", "marginal", "gappy"])
@pytest.mark.parametrize("spread", [0.0, 0.3, 3.0, 40.0, 1e4])
def test_score_entropy_equals_float64_and_is_finite_for_every_float32_log_score(name, spread):
    """Values and gradients finite for log scores in [-1e4, 1e4]; where every log score of a
    position is at most the cap (exp exact), equal to the float64 brute force (values within
    float32 rounding of the value and its parts, gradients to 1e-5 of the position's largest);
    spread 0: the scores of a model's x_0 prediction, read exactly."""
    proc = _processes()[name]
    x_t, x0, ls, t = _case(proc, spread, seed=int(spread) + len(name))
    ls = ls.requires_grad_(True)
    v = score_entropy(proc, x_t, x0, ls, t)
    v.sum().backward()
    assert bool(torch.isfinite(v).all()) and bool(torch.isfinite(ls.grad).all())
    want, want_g, size = _brute64(proc, x_t, x0, ls, t)
    ok = (ls.detach() <= LOG_SCORE_CAP).all(-1) & torch.isfinite(want)
    assert int(ok.sum()) > 0
    err = (v.double() - want).abs()  # float32: a few ulps of the value and of its parts
    tol = 2e-6 * want.abs() + 3e-7 * size + 1e-12
    assert bool((err <= tol)[ok].all()), (err / tol)[ok].max()
    scale = want_g.abs().amax(-1, keepdim=True)
    gerr = (ls.grad.double() - want_g).abs()
    assert bool((gerr <= 1e-5 * scale + 1e-9)[ok].all()), gerr[ok].max()
    if spread >= 40.0:  # past the cap: still finite, increasing, pushing the scores down
        assert bool((ls.grad[~ok[..., None].expand_as(ls)] >= -1e30).all())


def test_the_fast_cpu_passes_equal_the_general_path():
    """The CPU path (a few passes per row, the x0 and z columns corrected) against the
    general one (every class through the stable terms), values and gradients."""
    from discdiff.processes.scores import _fast_rows, _Rows

    for name in ("uniform", "absorbing", "marginal"):
        proc = _processes()[name]
        x_t, x0, ls, t = _case(proc, 2.0, seed=7)
        a = proc.schedule.alpha(t).float().view(-1, 1, 1).expand(*x_t.shape, 1).reshape(-1, 1)
        oma = 1 - a
        m = proc.limit_on(torch.device("cpu")).float()
        z, v = x_t.reshape(-1).long(), x0.reshape(-1).long()
        q = torch.where(z == v, a.squeeze(-1), torch.zeros_like(z, dtype=torch.float32))
        q = (q + oma.squeeze(-1) * m[z]).clamp_min(1e-30)[:, None]
        w = torch.ones(z.shape)
        flat = ls.reshape(-1, K).contiguous()
        kind = {"uniform": "flat", "absorbing": "mask", "marginal": "full"}[name]
        rows = _Rows(flat, oma / q, a / q, v, z, w)
        got, redo, g1 = _fast_rows(rows, m[:K], True, kind)
        g2 = torch.empty_like(flat)
        want = _general_rows(rows, m[:K], g2)
        keep = ~redo
        assert torch.allclose(got[keep], want[keep], rtol=2e-6, atol=1e-6)
        assert torch.allclose(g1[keep], g2[keep], rtol=1e-5, atol=1e-6)


def test_score_entropy_memory_is_one_gradient_buffer_not_a_table_per_term():
    """The autograd graph keeps one logits-sized tensor (the gradient), not the dozen that
    the elementwise formula left behind."""
    proc = _processes()["uniform"]
    x_t, x0, ls, t = _case(proc, 1.0, seed=3)
    ls = ls.requires_grad_(True)
    saved = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        score_entropy(proc, x_t, x0, ls, t).sum()
    assert sum(n for n in saved if n == ls.numel()) <= ls.numel()


@pytest.mark.parametrize("name", ["uniform", "absorbing"])
def test_scores_as_x0_and_its_samplers_take_any_log_score(name):
    """Log scores of +-1e4 (a score network early in training) give finite x_0 logits, and the
    Tweedie and tau-leaping samplers on a raw score network sample without a NaN."""
    proc = _processes()[name]
    g = torch.Generator().manual_seed(0)
    for val in (1e4, -1e4, 85.0):
        t = torch.rand(16, generator=g)
        x = proc.sample_marginal(torch.randint(0, K, (16, 6), generator=g), t, generator=g)
        ls = torch.randn(16, 6, K, generator=g)
        ls[:, :3, 2] = val
        assert bool(torch.isfinite(x0_from_scores(proc, x, ls, t)).all())

    def wild(x, t, cond=None):
        n = torch.Generator().manual_seed(int(t[0].item() * 1e6))
        return torch.where(torch.rand(*x.shape, K, generator=n) > 0.5, 1e4, -1e4)

    for sampler in ("tweedie", "tau-leaping"):
        res = dd.make_sampler(sampler, steps=6, output="scores").sample(
            wild, proc, (4, 6), generator=torch.Generator().manual_seed(1)
        )
        assert res.samples.shape == (4, 6)


SCHEDULES = {
    "kappa-1": dd.PolynomialKappa(1.0),
    "kappa-2": dd.PolynomialKappa(2.0),
    "kappa-0.5": dd.PolynomialKappa(0.5),
    "kappa-cosine": dd.CosineKappa(),
    "cosine": dd.CosineAlpha(),
    "loglinear": dd.LogLinear(),
}


@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("path", ["absorbing", "uniform"])
def test_dfm_is_finite_from_t_zero_to_the_last_float32_below_one(sched, path):
    schedule = SCHEDULES[sched]
    proc = (dd.Absorbing if path == "absorbing" else dd.Uniform)(K, schedule)
    times = torch.tensor([0.0, 1e-30, 1e-12, 6e-9, 1e-7, 1e-3, 0.5, 0.999, BELOW_ONE])
    g = torch.Generator().manual_seed(2)
    B = times.numel()
    x1 = torch.randint(0, K, (B, 8), generator=g)
    x_t = proc.sample_marginal(x1, times, generator=g)
    x_t[0] = x1[0]  # at t = 0 nothing is corrupted
    logits = torch.randn(B, 8, K, generator=g)
    if path == "absorbing":  # a mask path: 0 where x_t = x1, whatever the weight
        per = _dfm_generalized_kl(proc, x_t, x1, logits, times)
        assert not bool(torch.isnan(per).any()) and bool(torch.isfinite(per[1:]).all())
        assert bool((per[0] == 0).all())
    else:  # uniform source: infinite only at t = 0 itself, never NaN
        per = _dfm_generalized_kl(proc, x_t, x1, logits, times)
        assert not bool(torch.isnan(per).any()) and bool(torch.isfinite(per[1:]).all())
    den = lambda x, t, c=None: logits[: x.shape[0]]  # noqa: E731
    for t_min in (0.0, 1e-3):
        v = dfm_loss(proc, den, x1, t_min=t_min, generator=torch.Generator().manual_seed(3))
        assert not bool(torch.isnan(v).any())


def test_dfm_one_minus_p_is_the_other_classes_mass_not_a_cancellation():
    """Where p(x_t) rounds near 1 (a confident model at small t), 1 - p(x_t) is read as the
    mass of the other classes: relative error at float32 level, not 1e-2."""
    proc = dd.Uniform(K, dd.PolynomialKappa(1.0))
    x1 = torch.zeros(1, 1, dtype=torch.long)
    logits = torch.tensor([[[18.0, 0.5, 0.2, -0.3, 0.1]]])
    t = torch.tensor([1e-7])
    per = _dfm_generalized_kl(proc, x1, x1, logits, t)
    p = torch.softmax(logits.double(), -1)[0, 0]
    want = float(1.0 / 1e-7 * (1 - p[0]))  # kappa' / (1 - kappa) = 1 / t for kappa = tau
    assert math.isclose(per.item(), want, rel_tol=1e-5), (per.item(), want)


def test_dfm_with_its_boundary_terms_is_a_bound_and_without_them_falls_short():
    """One token, p_data = (0.9, 0.1), the exact denoiser of the mask path (kappa = tau),
    t_min = 0.05: E[loss] is 0.95 x the NLL without the boundary terms and the NLL with them
    (Monte-Carlo, 5 standard errors)."""
    pd = torch.tensor([0.9, 0.1])
    proc = dd.Absorbing(2, dd.PolynomialKappa(1.0))

    def exact(x, t, cond=None):
        out = torch.log(pd).expand(*x.shape, 2).clone()
        known = x < 2
        out[known] = torch.log(torch.nn.functional.one_hot(x[known], 2).float().clamp_min(1e-30))
        return out

    nll = float(-(pd * pd.log()).sum())
    B = 200_000
    x1 = torch.multinomial(pd, B, replacement=True, generator=torch.Generator().manual_seed(0))
    x1 = x1[:, None]
    for boundary, factor in ((False, 0.95), (True, 1.0)):
        v = dfm_loss(proc, exact, x1, t_min=0.05, boundary=boundary,
                     generator=torch.Generator().manual_seed(1)).double()  # fmt: skip
        se = float(v.std() / math.sqrt(B))
        assert abs(float(v.mean()) - factor * nll) < 5 * se + 1e-4, (boundary, v.mean(), nll)
    with pytest.raises(ValueError, match="generalized KL only"):
        dfm_loss(proc, exact, x1[:4], kind="cross_entropy", boundary=True)


def test_tweedie_steps_are_exact_per_position_but_not_in_the_joint_law():
    """p(00) = p(11) = 1/2 on an absorbing process with the exact x_0 law: one Tweedie step
    from the all-masked prior draws each position right (1/2, 1/2), the pair independently
    (P(x0 != x1) = 1/2); many small steps recover the joint (P(x0 != x1) -> 0)."""
    proc = dd.Absorbing(2, dd.LogLinear())
    joint = {(0, 0): 0.5, (1, 1): 0.5}

    def exact(x, t, cond=None):  # p(x0 | x_t) of the two-point law, per position
        out = torch.zeros(*x.shape, 2)
        for b in range(x.shape[0]):
            pair = x[b].tolist()
            w = torch.zeros(2)
            for (a0, a1), p in joint.items():
                if all(z == 2 or z == c for z, c in zip(pair, (a0, a1), strict=True)):
                    w[a0] += p  # a0 = a1 for this law
            w = w if w.sum() > 0 else torch.ones(2)  # a pair the law rules out (0, 1)
            out[b] = torch.log((w / w.sum()).clamp_min(1e-30)).expand(2, 2)
        return out

    B = 4000
    for steps, lo, hi in ((1, 0.45, 0.55), (64, 0.0, 0.06)):
        s = dd.make_sampler("tweedie", steps=steps)
        res = s.sample(exact, proc, (B, 2), generator=torch.Generator().manual_seed(4))
        x = res.samples
        differ = float((x[:, 0] != x[:, 1]).double().mean())
        assert lo <= differ <= hi, (steps, differ)
        for i in range(2):  # each position exact: 1/2 within 5 standard errors
            assert abs(float(x[:, i].double().mean()) - 0.5) < 5 * math.sqrt(0.25 / B)


def test_x0_from_scores_precision_falls_with_alpha_as_its_docstring_says():
    """The inversion of exact scores, float32, against the truth: within 1e-4 absolute down
    to alpha = 1e-3 (what ScoresAsX0 asks), and visibly worse near alpha = 0."""
    proc = dd.Uniform(K, dd.LogLinear())
    g = torch.Generator().manual_seed(5)
    x0_logits = torch.randn(256, 1, K, generator=g)
    truth = torch.softmax(x0_logits, -1)
    errs = {}
    for alpha in (0.5, 1e-3, 2.0**-24):
        t = torch.full((256,), 1.0 - alpha, dtype=torch.float64).float()
        x_t = torch.randint(0, K, (256, 1), generator=g)
        ls = scores_from_x0(proc, x_t, x0_logits, t)
        got = x0_from_scores(proc, x_t, ls, t).exp()
        errs[alpha] = float((got - truth).abs().max())
    assert errs[0.5] < 1e-5 and errs[1e-3] < 1e-3
    assert errs[2.0**-24] > 10 * errs[1e-3]


def test_all_losses_have_no_nan_over_t_at_every_schedule():
    """The continuous ELBO, score entropy and DFM integrands at t from 0 to the last float32
    below 1 for each schedule: no NaN anywhere."""
    from discdiff.processes.rates import rate_kl_mean

    times = torch.tensor([0.0, 1e-9, 1e-4, 0.5, 0.9999, BELOW_ONE])
    g = torch.Generator().manual_seed(6)
    for sched, make in itertools.product(SCHEDULES.values(), (dd.Uniform, dd.Absorbing)):
        proc = make(K, sched)
        x0 = torch.randint(0, K, (times.numel(), 4), generator=g)
        x_t = proc.sample_marginal(x0, times, generator=g)
        logits = torch.randn(times.numel(), 4, K, generator=g)
        for fn in (rate_kl_mean, score_entropy, _dfm_generalized_kl):
            out = fn(proc, x_t, x0, logits, times)
            assert not bool(torch.isnan(out).any()), (fn.__name__, sched, make.__name__)


@pytest.mark.parametrize("name", ["uniform", "absorbing", "marginal"])
@pytest.mark.parametrize("K2", [7, 300])
def test_the_fused_kernel_equals_the_torch_passes(name, K2):
    """The C kernel (discdiff.native) against the torch passes, values and gradients, with rows
    it hands back (a log score past the cap), weightless rows and x0 = z; K not a multiple of
    the kernel's block. The kernel is built here (a machine without a C compiler fails)."""
    from discdiff import native

    assert native.library() is not None, native.reason()
    prior = torch.softmax(torch.randn(K2, generator=torch.Generator().manual_seed(1)), -1)
    proc = {
        "uniform": dd.Uniform(K2, dd.LogLinear()),
        "absorbing": dd.Absorbing(K2, dd.LogLinear()),
        "marginal": dd.Marginal(prior, dd.CosineAlpha()),
    }[name]
    g = torch.Generator().manual_seed(K2)
    B, L = 24, 9
    t = torch.rand(B, generator=g) * 0.998 + 1e-3
    x0 = torch.randint(0, K2, (B, L), generator=g)
    x_t = proc.sample_marginal(x0, t, generator=g)
    ls = torch.randn(B, L, K2, generator=g) * 3
    ls[0, 0, 1] = 60.0  # past the cap: redone on the general path
    ls[1, 1] = 1e4
    results = []
    for flag in (True, False):
        x = ls.clone().requires_grad_(True)
        v = score_entropy(proc, x_t, x0, x, t, native=flag)
        v.sum().backward()
        results.append((v.detach(), x.grad))
    (v1, g1), (v2, g2) = results
    assert torch.allclose(v1, v2, rtol=3e-6, atol=1e-6), (v1 - v2).abs().max()
    assert torch.allclose(g1, g2, rtol=3e-5, atol=1e-6), (g1 - g2).abs().max()
