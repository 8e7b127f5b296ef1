"""TransformerDenoiser: shapes, masking, causality, labels, positions, configs, FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from discdiff.nn import (
    TransformerConfig,
    TransformerDenoiser,
    apply_rotary,
    count_parameters,
    denoiser_config,
    denoiser_from_config,
    flops_per_token,
    rotary_tables_1d,
    rotary_tables_2d,
)
from discdiff.nn.embeddings import modulate

K = 10  # classes; ids in [0, K] with the mask K


def tiny(**kw) -> TransformerConfig:
    base = dict(num_states=K + 1, num_classes=K, num_layers=2, d_model=32, num_heads=2, max_len=16)
    base.update(kw)
    return TransformerConfig(**base)


def randomized(cfg: TransformerConfig, seed: int = 0) -> TransformerDenoiser:
    """A model with all weights random (the default init zeroes gates and head, which would
    make every output constant and every dependence test vacuous)."""
    model = TransformerDenoiser(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def ids(B: int, L: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K + 1, (B, L), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_dtype():
    model = randomized(tiny())
    x, t = ids(3, 16), torch.rand(3, generator=torch.Generator().manual_seed(0))
    out = model(x, t)
    assert out.shape == (3, 16, K) and out.dtype == torch.float32
    assert model(x[:, :7], t).shape == (3, 7, K)  # shorter than max_len is fine
    assert model(x, 0.5).shape == (3, 16, K)  # scalar time broadcasts
    with pytest.raises(ValueError, match="exceeds"):
        model(ids(3, 17), t)
    with pytest.raises(ValueError, match="t must have shape"):
        model(x, torch.rand(2))
    with pytest.raises(TypeError, match="integer ids"):
        model(x.float(), t)
    with pytest.raises(ValueError, match="unknown cond"):
        model(x, t, {"labels": torch.zeros(3, dtype=torch.long)})


def test_zero_init_predicts_uniform_and_head_gets_gradient():
    model = TransformerDenoiser(tiny())
    x, t = ids(2, 16), torch.full((2,), 0.3)
    out = model(x, t)
    assert torch.equal(out, torch.zeros_like(out))
    loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), x.clamp(max=K - 1).flatten())
    loss.backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_time_changes_output():
    model = randomized(tiny())
    x = ids(2, 16)
    a, b = model(x, torch.full((2,), 0.1)), model(x, torch.full((2,), 0.9))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_padding_mask_invariance(causal):
    model = randomized(tiny(causal=causal))
    x, t = ids(2, 16), torch.rand(2, generator=torch.Generator().manual_seed(3))
    real = torch.ones(2, 16, dtype=torch.bool)
    real[0, 10:] = False
    real[1, 5:] = False
    real[1, 0] = False  # a hole at the front too
    x2 = torch.where(real, x, (x + 3) % (K + 1))  # change every padded token
    a = model(x, t, {"padding_mask": real})
    b = model(x2, t, padding_mask=real)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    # without the mask the same change is visible at real positions (the check can fail)
    assert (model(x, t)[real] - model(x2, t)[real]).abs().max() > 1e-4


def test_fully_padded_row_is_finite():
    model = randomized(tiny())
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[1, :3] = True
    assert torch.isfinite(model(ids(2, 16), torch.rand(2), padding_mask=mask)).all()


def test_causal_output_ignores_future_tokens_and_time():
    model = randomized(tiny(causal=True))
    x = ids(2, 16)
    base = model(x, None)
    for j in (0, 7, 15):
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % (K + 1)
        out = model(x2, None)
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-5, rtol=1e-5)
        assert (out[:, j:] - base[:, j:]).abs().amax(dim=-1).min() > 1e-5  # every i >= j moves
    torch.testing.assert_close(model(x, torch.full((2,), 0.2)), base)  # t is ignored


def test_bidirectional_output_depends_on_future_tokens():
    model = randomized(tiny())
    x, t = ids(2, 16), torch.full((2,), 0.5)
    x2 = x.clone()
    x2[:, 15] = (x2[:, 15] + 1) % (K + 1)
    assert (model(x2, t)[:, :15] - model(x, t)[:, :15]).abs().amax(dim=-1).min() > 1e-6


def test_label_conditioning_and_null_label():
    model = randomized(tiny(num_labels=3))
    x, t = ids(4, 16), torch.full((4,), 0.4)
    null = torch.full((4,), model.null_label)
    assert model.null_label == 3
    a = model(x, t, {"label": torch.tensor([0, 1, 2, 0])})
    b = model(x, t, {"label": torch.tensor([1, 2, 0, 0])})
    assert (a[:3] - b[:3]).abs().amax(dim=(1, 2)).min() > 1e-4
    torch.testing.assert_close(a[3], b[3])
    torch.testing.assert_close(model(x, t), model(x, t, label=null))  # missing label = null
    torch.testing.assert_close(model(x, t, {"label": None}), model(x, t, {"label": null}))
    assert (model(x, t, label=null) - a).abs().max() > 1e-4
    with pytest.raises(ValueError, match="num_labels = 0"):
        randomized(tiny())(x, t, label=null)
    with pytest.raises(ValueError, match="num_labels = 0"):
        _ = randomized(tiny()).null_label


@pytest.mark.parametrize(
    "kw",
    [{}, {"grid": (4, 4), "num_labels": 2}, {"causal": True}, {"grid": (4, 4), "patch": 2}],
)
def test_config_json_round_trip_rebuilds_identical_model(kw):
    model = randomized(tiny(**kw))
    blob = json.dumps(denoiser_config(model))
    rebuilt = denoiser_from_config(json.loads(blob))
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x, t = ids(2, 16), torch.rand(2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(rebuilt(x, t), model(x, t), rtol=0, atol=0)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="head_dim % 4"):
        tiny(d_model=12, num_heads=2, grid=(2, 2))
    with pytest.raises(ValueError, match="num_classes"):
        tiny(num_classes=K + 2)
    with pytest.raises(ValueError, match="unknown TransformerConfig keys"):
        TransformerConfig.from_dict({**tiny().to_dict(), "n_layer": 3})
    with pytest.raises(ValueError, match="unknown denoiser type"):
        denoiser_from_config({"type": "mlp", "config": {}})
    with pytest.raises(TypeError, match="not a registered"):
        denoiser_config(torch.nn.Linear(2, 2))


def _scores(q, k, cos, sin, sections):
    """q.k after rotation, for every pair of positions: (L, L)."""
    return apply_rotary(q, cos, sin, sections) @ apply_rotary(k, cos, sin, sections).T


def test_rotary_1d_depends_only_on_offset():
    g = torch.Generator().manual_seed(0)
    hd, L = 8, 12
    v = torch.randn(hd, generator=g, dtype=torch.float64)
    w = torch.randn(hd, generator=g, dtype=torch.float64)
    cos, sin = (a.double() for a in rotary_tables_1d(L, hd))
    s = _scores(v.expand(L, hd), w.expand(L, hd), cos, sin, 1)  # (L, L)
    for i in range(L - 1):
        for j in range(L - 1):
            assert abs(s[i, j] - s[i + 1, j + 1]) < 1e-6
    assert abs(s[0, 1] - s[0, 3]) > 1e-3  # but it does depend on the offset
    # rotation keeps norms
    torch.testing.assert_close(
        apply_rotary(v.expand(L, hd), cos, sin).norm(dim=-1), v.norm().expand(L)
    )


def test_rotary_2d_depends_only_on_row_and_column_offsets():
    g = torch.Generator().manual_seed(1)
    hd, H, W = 8, 3, 4
    v = torch.randn(hd, generator=g, dtype=torch.float64)
    w = torch.randn(hd, generator=g, dtype=torch.float64)
    cos, sin = (a.double() for a in rotary_tables_2d(H, W, hd))
    s = _scores(v.expand(H * W, hd), w.expand(H * W, hd), cos, sin, 2)
    pos = [(r, c) for r in range(H) for c in range(W)]
    by_offset: dict[tuple[int, int], float] = {}
    for a, (ra, ca) in enumerate(pos):
        for b, (rb, cb) in enumerate(pos):
            key = (rb - ra, cb - ca)
            if key in by_offset:
                assert abs(by_offset[key] - s[a, b]) < 1e-6
            by_offset[key] = float(s[a, b])
    # pixels (0, 3) and (1, 0) are adjacent in the flat order but far apart on the grid
    cos1, sin1 = (a.double() for a in rotary_tables_1d(H * W, hd))
    s1 = _scores(v.expand(H * W, hd), w.expand(H * W, hd), cos1, sin1, 1)
    assert abs(s[3, 4] - s[0, 1]) > 1e-3 and abs(s1[3, 4] - s1[0, 1]) < 1e-6


def test_2d_rotary_model_differs_from_1d():
    flat = randomized(tiny())
    grid = TransformerDenoiser(tiny(grid=(4, 4)))
    grid.load_state_dict(flat.state_dict())  # same weights: only the positions differ
    grid.eval()
    x, t = ids(2, 16), torch.full((2,), 0.5)
    assert (grid(x, t) - flat(x, t)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="exceeds"):
        grid(ids(2, 17), t)


def test_gradients_flow_to_every_parameter():
    model = randomized(tiny(num_labels=2)).train()
    x, t = ids(2, 16), torch.rand(2, generator=torch.Generator().manual_seed(2))
    out = model(x, t, label=torch.tensor([0, 2]))
    loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), x.clamp(max=K - 1).flatten())
    loss.backward()
    for name, p in model.named_parameters():
        if name == "label.table.weight":  # only the used rows get gradient
            assert p.grad[[0, 2]].abs().sum() > 0 and p.grad[1].abs().sum() == 0
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kw", [{}, {"causal": True}, {"grid": (4, 4)}])
def test_bf16_autocast_on_cpu(kw):
    model = randomized(tiny(**kw))
    x, t = ids(2, 16), torch.full((2,), 0.5)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[0, 12:] = False
    ref = model(x, t, padding_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, padding_mask=mask)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.1, rel


def test_flops_per_token_matches_flop_counter():
    for kw in ({}, {"num_labels": 2, "mlp_ratio": 2.0}):
        cfg = tiny(**kw)
        model = TransformerDenoiser(cfg).eval()
        B, L = 2, 12
        counter = FlopCounterMode(display=False)
        # the math backend decomposes attention into matmuls the counter sees
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(ids(B, L), torch.full((B,), 0.5))
        assert counter.get_total_flops() / (B * L) == pytest.approx(
            flops_per_token(cfg, L), rel=1e-9
        )
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(tiny(), 0)


# ---- patches -------------------------------------------------------------------------------
def _patched_by_loops(model: TransformerDenoiser, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The patched forward written with explicit pixel loops (the reference for the reshapes)."""
    cfg = model.config
    (H, W), p, S = cfg.grid, cfg.patch, cfg.num_states
    gh, gw = H // p, W // p
    B = x.shape[0]
    img = x.reshape(B, H, W)
    h = torch.zeros(B, gh * gw, cfg.d_model)
    for b in range(B):
        for i in range(gh):
            for j in range(gw):
                for a in range(p):
                    for c in range(p):
                        state = int(img[b, i * p + a, j * p + c])
                        h[b, i * gw + j] += model.embed.weight[(a * p + c) * S + state]
    cvec = model.time(t)
    cos, sin = model.rope_cos, model.rope_sin
    for blk in model.blocks:
        h = blk(h, cvec, cos, sin, None, False)
    shift, scale = model.ada_out(cvec).chunk(2, dim=-1)
    tok = model.head(modulate(model.norm_out(h), shift, scale))  # (B, gh*gw, p*p*K)
    out = torch.zeros(B, H * W, cfg.num_classes)
    for b in range(B):
        for r in range(H):
            for c in range(W):
                i, a, j, cc = r // p, r % p, c // p, c % p
                k0 = (a * p + cc) * cfg.num_classes
                out[b, r * W + c] = tok[b, i * gw + j, k0 : k0 + cfg.num_classes]
    return out


def test_patched_forward_matches_pixel_loops():
    model = randomized(tiny(grid=(4, 6), patch=2, max_len=24))
    x, t = ids(2, 24), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        out = model(x, t)
        assert out.shape == (2, 24, K) and out.dtype == torch.float32
        torch.testing.assert_close(out, _patched_by_loops(model, x, t), rtol=1e-5, atol=1e-5)


def test_patch_blocks_start_as_identity_so_outputs_stay_in_their_patch():
    """At init the blocks are the identity: a pixel may only move the logits of its own patch."""
    model = TransformerDenoiser(tiny(grid=(4, 4), patch=2, max_len=16))
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
        x, t = ids(1, 16), torch.full((1,), 0.5)
        base = model(x, t)
        y = x.clone()
        y[0, 5] = (y[0, 5] + 1) % (K + 1)  # pixel (row 1, col 1): patch (0, 0) = pixels 0, 1, 4, 5
        changed = (model(y, t) - base).abs().amax(-1)[0] > 1e-6  # (16,)
    assert changed.nonzero().flatten().tolist() == [0, 1, 4, 5]


def test_patch_cuts_flops_and_is_validated():
    plain, patched = tiny(grid=(8, 8), max_len=64), tiny(grid=(8, 8), patch=2, max_len=64)
    assert flops_per_token(patched) < flops_per_token(plain) / 3
    model = TransformerDenoiser(patched).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(ids(2, 64), torch.full((2,), 0.5))
    assert counter.get_total_flops() / (2 * 64) == pytest.approx(flops_per_token(patched), rel=1e-9)
    with pytest.raises(ValueError, match="needs a grid"):
        tiny(patch=2)
    with pytest.raises(ValueError, match="needs a grid"):
        tiny(grid=(4, 4), patch=2, causal=True)
    with pytest.raises(ValueError, match="does not divide"):
        tiny(grid=(4, 6), patch=4)
    with pytest.raises(ValueError, match="whole"):
        model(ids(2, 60), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="padding_mask"):
        model(ids(2, 64), torch.full((2,), 0.5), padding_mask=torch.ones(2, 64, dtype=torch.bool))


def test_parameter_count_matches_layout():
    cfg = tiny()
    d, m, c = cfg.d_model, cfg.mlp_dim, cfg.cond_dim
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * m + m + m * d + d) + (c * 6 * d + 6 * d)
    time = 256 * c + c + c * c + c
    out = c * 2 * d + 2 * d + d * K + K
    assert count_parameters(TransformerDenoiser(cfg)) == (K + 1) * d + time + 2 * block + out


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    model = randomized(tiny(num_labels=2))
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break is an error
    x, t = ids(2, 16), torch.rand(2, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 9:] = False
    out = compiled(x, t, {"padding_mask": mask, "label": torch.tensor([0, 2])})
    ref = model(x, t, {"padding_mask": mask, "label": torch.tensor([0, 2])})
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_time_free_model_ignores_t_and_caches_exactly() -> None:
    import discdiff as dd

    cfg = TransformerConfig(
        num_states=7,
        num_classes=6,
        num_layers=1,
        d_model=32,
        num_heads=2,
        max_len=12,
        time_conditioning=False,
    )
    model = TransformerDenoiser(cfg)
    for p in model.parameters():  # leave the zero init so outputs are not trivially equal
        torch.nn.init.normal_(p, std=0.2)
    assert model.time_conditioned is False
    x = torch.randint(0, 7, (3, 12))
    torch.testing.assert_close(model(x, torch.full((3,), 0.1)), model(x, torch.full((3,), 0.9)))
    assert TransformerDenoiser(TransformerConfig.from_dict(cfg.to_dict())).time_conditioned is False
    proc = dd.Absorbing(6, dd.LogLinear())
    plain = dd.AncestralSampler(40).sample(
        model, proc, (3, 12), generator=torch.Generator().manual_seed(0)
    )
    cached = dd.CachingSampler(40).sample(
        model, proc, (3, 12), generator=torch.Generator().manual_seed(0)
    )
    assert cached.rows_evaluated < plain.rows_evaluated
    assert cached.samples.shape == plain.samples.shape and int(cached.samples.max()) < 6
    timed = TransformerDenoiser(
        TransformerConfig(
            num_states=7, num_classes=6, num_layers=1, d_model=32, num_heads=2, max_len=12
        )
    )
    with pytest.raises(ValueError, match="time_conditioned"):
        dd.CachingSampler(10).sample(timed, proc, (1, 12))


def test_grad_checkpointing_gives_the_same_gradients():
    """Recomputing the blocks in the backward pass changes memory, not the maths: the same
    loss and gradients, dropout included (its masks are replayed)."""
    cfg = TransformerConfig(
        num_states=9,
        num_classes=8,
        num_layers=3,
        d_model=32,
        num_heads=4,
        dropout=0.2,
        cond_dim=16,
        max_len=12,
    )
    x = torch.randint(9, (3, 12), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.5, 0.9])
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = TransformerDenoiser(cfg).train()
        for p in model.parameters():  # non-zero everywhere, so every gradient flows
            torch.nn.init.normal_(p, std=0.1)
        model.set_grad_checkpointing(on)
        assert model.config.grad_checkpointing is on
        torch.manual_seed(1)
        loss = model(x, t).logsumexp(-1).sum()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="grad_checkpointing"):
        TransformerConfig(num_states=9, num_classes=8, grad_checkpointing="yes")
