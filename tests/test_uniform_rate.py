"""The uniform process's closed-form rate KL against a float64 brute force and the general
mixing form: values and gradients, near t = 0 and t = 1, confident and wrong models."""

from __future__ import annotations

import pytest
import torch

import discdiff as dd
from discdiff.processes.rates import rate_kl_mean, rate_kl_uniform


def brute(p, x_t, x0, logits, t):
    """sum_{y != z} u_q phi(u_p / u_q) in float64, straight from the definitions."""
    K = p.num_classes
    a = p.schedule.alpha(t).double().view(-1, *[1] * x_t.dim())
    beta = p.schedule.rate(t).double().view(-1, *[1] * (x_t.dim() - 1))
    pr = torch.softmax(logits.double(), -1)
    c0, c1 = (1 - a) / K, (1 - a) / K + a
    oh0 = torch.nn.functional.one_hot(x0, K).double()
    ohz = torch.nn.functional.one_hot(x_t, K).double()
    mq_z = torch.where((x_t == x0).unsqueeze(-1), c1, c0)
    uq = (a * oh0 + (1 - a) / K) / mq_z
    pz = pr.gather(-1, x_t.unsqueeze(-1))
    up = a * pr / torch.where(ohz > 0, c1, c0) + (1 - a) / K * ((1 - pz) / c0 + pz / c1)
    r = up / uq
    return beta / K * (uq * (r - 1 - torch.log(r)) * (1 - ohz)).sum(-1)


def _case(K, seed, shape=(8, 40)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, K, shape, generator=g)
    noise = torch.randint(0, K, shape, generator=g)
    x_t = torch.where(torch.rand(shape, generator=g) < 0.5, x0, noise)
    logits = torch.randn(*shape, K, generator=g) * 3
    flat = logits.view(-1, K)
    flat[:6] = 0.0
    flat[:3, 0] = 40.0  # p rounds to 1 in float32 on class 0 (right or wrong)
    zf, x0f = x_t.view(-1), x0.view(-1)
    zf[0], zf[1], x0f[1] = 0, 0, 0  # ... and at z, with x0 elsewhere and at z: 1 - p(z) cancels
    flat[3:6] = -torch.inf
    flat[3:6, 1] = 0.0  # exactly one class possible
    return x_t, x0, logits


NATIVE = pytest.mark.parametrize("native", [True, False], ids=["fused", "torch"])


@NATIVE
@pytest.mark.parametrize("K", [2, 7, 256])
@pytest.mark.parametrize("schedule", [dd.LogLinear(), dd.CosineAlpha()])
def test_closed_form_matches_brute_force_and_the_mixing_form(K, schedule, native):
    p = dd.Uniform(K, schedule)
    x_t, x0, logits = _case(K, K)
    t = torch.tensor([0.5, 1e-3, 0.99, 0.3, 1e-2, 0.95, 0.1, 0.7], dtype=torch.float64)
    l0 = logits.double().requires_grad_(True)
    l1 = logits.clone().requires_grad_(True)
    l2 = logits.clone().requires_grad_(True)
    ref = brute(p, x_t, x0, l0, t)
    mix = rate_kl_mean(p, x_t, x0, l1, t)
    got = rate_kl_uniform(p, x_t, x0, l2, t, native=native)
    assert torch.isfinite(got).all() and (got >= 0).all()
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(got, mix, rtol=2e-5, atol=1e-7)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ref * w).sum().backward()
    (mix * w.float()).sum().backward()
    (got * w.float()).sum().backward()
    assert torch.isfinite(l2.grad).all()
    scale = l0.grad.abs().max()
    assert (l2.grad.double() - l0.grad).abs().max() <= 2e-5 * scale
    assert (l2.grad - l1.grad).abs().max() <= 2e-5 * scale


@NATIVE
def test_closed_form_at_the_ends_of_time_and_on_other_shapes(native):
    p = dd.Uniform(5, dd.LogLinear())
    x_t, x0, logits = _case(5, 3, shape=(4, 3, 6))  # (B, H, W) fields
    for tv in (1e-7, 1e-5, 0.99999, 1.0 - 1e-7):
        t = torch.full((4,), tv, dtype=torch.float64)
        got = rate_kl_uniform(p, x_t, x0, logits, t, native=native)
        ref = brute(p, x_t, x0, logits, t)
        assert got.shape == (4, 3, 6) and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6)
    # bf16 logits (autocast) give a gradient of their own dtype
    lb = logits.bfloat16().requires_grad_(True)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    rate_kl_uniform(p, x_t, x0, lb, t, native=native).sum().backward()
    assert lb.grad.dtype == torch.bfloat16 and torch.isfinite(lb.grad.float()).all()


def test_the_uniform_process_uses_the_closed_form_in_its_elbo():
    p = dd.Uniform(6, dd.LogLinear())
    x_t, x0, logits = _case(6, 5)
    t = torch.full((8,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(
        p.rate_kl(x_t, x0, logits, t), rate_kl_uniform(p, x_t, x0, logits, t)
    )
    d3pm = dd.Uniform(6, dd.LogLinear(), parameterization="d3pm")
    assert not torch.allclose(d3pm.rate_kl(x_t, x0, logits, t), p.rate_kl(x_t, x0, logits, t))


@NATIVE
@pytest.mark.parametrize("K", [8192, 50257])
def test_closed_form_at_large_vocabularies(K, native):
    """The per-position sums run over K classes in float32: at GPT-2's vocabulary the value and
    gradient still match float64 brute force, confident rows included."""
    p = dd.Uniform(K, dd.CosineAlpha())
    x_t, x0, logits = _case(K, 1, shape=(8, 6))
    t = torch.tensor([0.5, 1e-3, 0.99, 0.3, 1e-2, 0.95, 0.1, 0.7], dtype=torch.float64)
    l0 = logits.double().requires_grad_(True)
    l2 = logits.clone().requires_grad_(True)
    ref = brute(p, x_t, x0, l0, t)
    got = rate_kl_uniform(p, x_t, x0, l2, t, native=native)
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=1e-7)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (ref * w).sum().backward()
    (got * w.float()).sum().backward()
    assert (l2.grad.double() - l0.grad).abs().max() <= 2e-5 * l0.grad.abs().max()


@NATIVE
def test_closed_form_near_a_perfect_model(native):
    """Where the model's rates almost equal the truth's (p(x0) -> 1) the KL is tiny and the
    per-class sums cancel: the error stays a small fraction of the value."""
    K = 256
    p = dd.Uniform(K, dd.LogLinear())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K, (8, 6), generator=g)
    noise = torch.randint(0, K, (8, 6), generator=g)
    x_t = torch.where(torch.rand(8, 6, generator=g) < 0.5, x0, noise)
    logits = torch.randn(8, 6, K, generator=g) * 0.1
    logits.scatter_add_(-1, x0.unsqueeze(-1), torch.full((8, 6, 1), 10.0))
    t = torch.tensor([0.5, 1e-3, 0.99, 0.3, 1e-2, 0.95, 0.1, 0.7], dtype=torch.float64)
    ref = brute(p, x_t, x0, logits, t)
    got = rate_kl_uniform(p, x_t, x0, logits, t, native=native).double()
    assert ref.min() < 1e-4  # the regime this test is about
    assert ((got - ref).abs() <= 1e-4 * ref + 1e-9).all()


def test_row_blocks_only_on_a_cpu():
    """The backward's cache-sized row blocks are a CPU measure; elsewhere one block (a launch
    per block would cost more than the passes)."""
    from discdiff.processes.rates import _CHUNK, _block_rows

    assert _block_rows(torch.empty(4096, 8192), 4096) == _CHUNK // 8192
    assert _block_rows(torch.empty(3, 10**6), 3) == 1
    assert _block_rows(torch.empty(4096, 8192, device="meta"), 4096) == 4096


def test_the_fused_kernel_is_built_here():
    """CI and this machine have gcc on x86-64 Linux: the fused kernel must be what runs there,
    so its absence is a failure naming the reason, not a silent fall-back to the torch path."""
    from discdiff import native

    assert native.library() is not None, native.reason()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("grad", [True, False])
def test_fused_kernel_equals_the_torch_path_in_threads_and_without_a_gradient(threads, grad):
    """Rows split across threads (ctypes drops the GIL) and the no-gradient scratch path give
    the torch path's values; the gradient too, with a per-position upstream weight."""
    K = 256
    p = dd.Uniform(K, dd.LogLinear())
    x_t, x0, logits = _case(K, 4, shape=(16, 64))
    t = torch.rand(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        lf = logits.clone().requires_grad_(grad)
        lt = logits.clone().requires_grad_(grad)
        got = rate_kl_uniform(p, x_t, x0, lf, t, native=True)
        ref = rate_kl_uniform(p, x_t, x0, lt, t, native=False)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-8)
    if grad:
        w = torch.randn(got.shape, generator=torch.Generator().manual_seed(5))
        (got * w).sum().backward()
        (ref * w).sum().backward()
        assert (lf.grad - lt.grad).abs().max() <= 1e-5 * lt.grad.abs().max()


def test_fused_kernel_refuses_class_ids_outside_the_vocabulary():
    """The kernel indexes rows by x_t and x0: an id outside [0, K) is a ValueError naming
    them, never an out-of-bounds read."""
    p = dd.Uniform(5, dd.LogLinear())
    x_t, x0, logits = _case(5, 3, shape=(4, 3))
    t = torch.full((4,), 0.5, dtype=torch.float64)
    for bad_t, bad_0, name in ((x_t + 5, x0, "x_t"), (x_t, x0 - 6, "x0")):
        with pytest.raises(ValueError, match=name):
            rate_kl_uniform(p, bad_t, bad_0, logits, t, native=True)


def test_fused_log1p_is_within_a_few_ulp_of_float64():
    """The kernel's own vectorised log1p (u >= 0) against float64, from denormals to 1e8 and
    around the mantissa boundary at sqrt(2): at most 2.5 float32 ulp relative, exact at 0."""
    import ctypes

    from discdiff import native

    lib = native.library()
    u = torch.cat([
        torch.zeros(1), torch.tensor([1e-40, 1e-30, 2.0**-24, 0.41421354, 0.41421357]),
        torch.logspace(-12, 8, 200_001), torch.rand(100_000) * 2,
    ]).float()  # fmt: skip
    out = torch.empty_like(u)
    lib.log1p_pos_array(ctypes.c_void_p(u.data_ptr()), ctypes.c_void_p(out.data_ptr()), u.numel())
    ref = torch.log1p(u.double())
    assert out[0] == 0.0
    rel = (out[1:].double() - ref[1:]).abs() / ref[1:]
    assert rel.max() <= 2.5 * 2.0**-23, rel.max()


def test_a_second_backward_through_the_fused_loss_fails_loudly():
    """The backward scales the saved gradient in place: backward through the same graph twice
    (retain_graph) is an autograd error, not a gradient scaled twice."""
    p = dd.Uniform(7, dd.LogLinear())
    x_t, x0, logits = _case(7, 2, shape=(4, 5))
    lf = logits.clone().requires_grad_(True)
    v = rate_kl_uniform(p, x_t, x0, lf, torch.full((4,), 0.5, dtype=torch.float64), native=True)
    v.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        v.sum().backward()


def test_kernel_loader_caches_its_build_and_says_why_when_it_cannot(tmp_path, monkeypatch):
    """A build lands in $DISCDIFF_CACHE/native by an atomic rename and is reused; without a
    compiler, or with DISCDIFF_NATIVE=0, library() is None with the reason, and the uniform
    loss keeps working on the torch path (``native=True`` then names the reason)."""
    from discdiff import native

    monkeypatch.setenv("DISCDIFF_CACHE", str(tmp_path))
    native.reset()
    try:
        assert native.library() is not None
        built = sorted((tmp_path / "native").iterdir())
        assert len(built) == 1 and built[0].suffix == ".so"  # no temporary file left behind
        stamp = built[0].stat().st_mtime_ns
        native.reset()
        assert native.library() is not None and built[0].stat().st_mtime_ns == stamp

        native.reset()
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
        monkeypatch.setenv("DISCDIFF_CACHE", str(tmp_path / "other"))
        with pytest.warns(RuntimeWarning, match="no C compiler"):
            assert native.library() is None
        assert "no C compiler" in native.reason()
        pr = dd.Uniform(5, dd.LogLinear())
        x_t, x0, logits = _case(5, 3, shape=(4, 3))
        t = torch.full((4,), 0.5, dtype=torch.float64)
        assert torch.isfinite(rate_kl_uniform(pr, x_t, x0, logits, t)).all()
        with pytest.raises(RuntimeError, match="no C compiler"):
            rate_kl_uniform(pr, x_t, x0, logits, t, native=True)

        native.reset()
        monkeypatch.delenv("CC")
        monkeypatch.setenv("DISCDIFF_NATIVE", "0")
        assert native.library() is None and "DISCDIFF_NATIVE=0" in native.reason()
    finally:
        native.reset()


def test_fused_kernel_takes_per_position_scalars_as_well_as_per_example_ones():
    """alpha, c0, c1 and the weight come per example (B, 1, ..) from the process, one value per
    group of rows; given per position (B, L) the kernel reads one value per row: same result."""
    from discdiff.native import uniform_kl as fused
    from discdiff.processes.rates import _uniform_scalars

    p = dd.Uniform(9, dd.CosineAlpha())
    x_t, x0, logits = _case(9, 6, shape=(8, 40))
    t = torch.rand(8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scalars = _uniform_scalars(p, x_t, t)
    grouped = fused.uniform_rate_kl(logits, x_t, x0, *scalars)
    full = fused.uniform_rate_kl(logits, x_t, x0, *(v.expand(x_t.shape) for v in scalars))
    assert fused._per_row_group(scalars[0], x_t)[1] == 40
    assert fused._per_row_group(scalars[0].expand(x_t.shape), x_t)[1] == 1
    torch.testing.assert_close(grouped, full, rtol=0, atol=0)
    torch.testing.assert_close(grouped, rate_kl_uniform(p, x_t, x0, logits, t, native=False))
