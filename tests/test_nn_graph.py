"""GraphTransformerDenoiser: shapes, equivariance, padding, symmetry, features, configs."""

from __future__ import annotations

import json

import pytest
import torch

from discdiff.nn import (
    GraphTransformerConfig,
    GraphTransformerDenoiser,
    denoiser_config,
    denoiser_from_config,
    dense_bonds,
    triu_bonds,
)

KA, KB = 4, 5  # atom / bond classes; +1 state each for an absorbing mask
N = 7


def tiny(**kw) -> GraphTransformerConfig:
    base = dict(
        atom_num_states=KA + 1,
        atom_num_classes=KA,
        bond_num_states=KB + 1,
        bond_num_classes=KB,
        max_nodes=9,
        num_layers=2,
        node_dim=16,
        edge_dim=8,
        global_dim=8,
        num_heads=4,
        node_ff_dim=16,
        edge_ff_dim=8,
        global_ff_dim=8,
    )
    base.update(kw)
    return GraphTransformerConfig(**base)


def model_for(seed: int = 0, **kw) -> GraphTransformerDenoiser:
    """A model with weights drawn from an explicit generator (matrices ~ N(0, 1/fan_in),
    vectors ~ N(0, 0.1^2), LayerNorm gains around 1)."""
    model = GraphTransformerDenoiser(tiny(**kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(r / p.shape[1] ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r)
    return model.eval()


def graph(B: int = 3, n: int = N, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randint(0, KA + 1, (B, n), generator=g)
    # sparse-ish bonds: mostly "no bond" (0) so walk features vary
    bonds = torch.randint(0, KB + 1, (B, n * (n - 1) // 2), generator=g)
    bonds = torch.where(torch.rand(bonds.shape, generator=g) < 0.6, 0, bonds)
    return {"atoms": atoms, "bonds": bonds}


def permute(x: dict[str, torch.Tensor], perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Relabel nodes: new node a is old node perm[a]."""
    n = x["atoms"].shape[1]
    dense = dense_bonds(x["bonds"], n, diagonal=-1)[:, perm][:, :, perm]
    return {"atoms": x["atoms"][:, perm], "bonds": triu_bonds(dense)}


def dense_logits(bond_logits: torch.Tensor, n: int) -> torch.Tensor:
    """(B, E, K) -> (B, N, N, K) symmetric, zeros on the diagonal."""
    B, _, k = bond_logits.shape
    iu, ju = torch.triu_indices(n, n, 1)
    out = torch.zeros(B, n, n, k)
    out[:, iu, ju] = bond_logits
    out[:, ju, iu] = bond_logits
    return out


def test_shapes_and_bad_input():
    model = model_for()
    x, t = graph(), torch.rand(3, generator=torch.Generator().manual_seed(0))
    out = model(x, t)
    assert out["atoms"].shape == (3, N, KA) and out["bonds"].shape == (3, N * (N - 1) // 2, KB)
    assert out["atoms"].dtype == torch.float32 and torch.isfinite(out["bonds"]).all()
    with pytest.raises(ValueError, match="upper triangle"):
        model({"atoms": x["atoms"], "bonds": x["bonds"][:, :-1]}, t)
    with pytest.raises(ValueError, match="max_nodes"):
        model(graph(n=10), t)
    with pytest.raises(ValueError, match="keys 'atoms' and 'bonds'"):
        model({"atoms": x["atoms"]}, t)
    with pytest.raises(ValueError, match="node_mask"):
        model(x, t, {"node_mask": torch.ones(3, N)})


def test_dense_and_triangle_round_trip():
    x = graph()
    dense = dense_bonds(x["bonds"], N, diagonal=-1)
    assert torch.equal(dense, dense.transpose(1, 2))
    assert (torch.diagonal(dense, dim1=1, dim2=2) == -1).all()
    assert torch.equal(triu_bonds(dense), x["bonds"])
    iu, ju = torch.triu_indices(N, N, 1)
    for e in (0, 5, len(iu) - 1):  # row-major order of triu_indices
        assert dense[1, iu[e], ju[e]] == x["bonds"][1, e]


@pytest.mark.parametrize("structural", [True, False])
def test_permutation_equivariance(structural):
    model = model_for(structural_features=structural)
    x, t = graph(), torch.rand(3, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, N, dtype=torch.bool)
    mask[1, 5:] = False
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    out = model(x, t, {"node_mask": mask})
    out_p = model(permute(x, perm), t, {"node_mask": mask[:, perm]})
    real = mask[:, perm]
    torch.testing.assert_close(
        out_p["atoms"][real], out["atoms"][:, perm][real], atol=1e-5, rtol=1e-4
    )
    pair = real[:, :, None] & real[:, None, :]
    d, dp = dense_logits(out["bonds"], N), dense_logits(out_p["bonds"], N)
    torch.testing.assert_close(dp[pair], d[:, perm][:, :, perm][pair], atol=1e-5, rtol=1e-4)


def test_bond_logits_are_symmetrised():
    """Reversing the node order turns every upper-triangle pair into a lower-triangle one, so
    equivariance of the returned triangle holds only if (i, j) and (j, i) agree."""
    model = model_for(seed=4)
    captured = {}
    model.e_head.register_forward_hook(lambda m, i, o: captured.update(raw=o))
    x, t = graph(), torch.full((3,), 0.3)
    out = model(x, t)
    raw = captured["raw"]  # (B, N, N, Kb) before symmetrisation
    assert (raw - raw.transpose(1, 2)).abs().max() > 1e-4  # the layers are not symmetric
    torch.testing.assert_close(out["bonds"], triu_bonds(0.5 * (raw + raw.transpose(1, 2))))
    rev = torch.arange(N - 1, -1, -1)
    out_r = model(permute(x, rev), t)
    d, dr = dense_logits(out["bonds"], N), dense_logits(out_r["bonds"], N)
    torch.testing.assert_close(dr, d[:, rev][:, :, rev], atol=1e-5, rtol=1e-4)


def test_padded_nodes_do_not_affect_real_outputs():
    model = model_for(seed=5)
    x, t = graph(), torch.rand(3, generator=torch.Generator().manual_seed(6))
    mask = torch.ones(3, N, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 6:] = False
    pad = ~mask
    dense = dense_bonds(x["bonds"], N, diagonal=0)
    touches_pad = pad[:, :, None] | pad[:, None, :]  # (B, N, N)
    dense2 = torch.where(touches_pad, (dense + 2) % (KB + 1), dense)
    x2 = {
        "atoms": torch.where(pad, (x["atoms"] + 1) % (KA + 1), x["atoms"]),
        "bonds": triu_bonds(dense2),
    }
    assert not torch.equal(x2["bonds"], x["bonds"])
    a, b = model(x, t, {"node_mask": mask}), model(x2, t, node_mask=mask)
    torch.testing.assert_close(a["atoms"][mask], b["atoms"][mask], atol=1e-5, rtol=1e-5)
    real_pairs = triu_bonds(~touches_pad)  # (B, E)
    torch.testing.assert_close(a["bonds"][real_pairs], b["bonds"][real_pairs], atol=1e-5, rtol=1e-5)
    # without the mask the padded nodes are real and do change the outputs (the check can fail)
    assert (model(x, t)["atoms"][mask] - model(x2, t)["atoms"][mask]).abs().max() > 1e-4


def test_empty_graph_is_finite():
    model = model_for()
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[1, 0] = True  # a single node: no pairs at all
    out = model(graph(B=2), torch.rand(2), node_mask=mask)
    assert all(torch.isfinite(v).all() for v in out.values())
    one = model(
        {
            "atoms": torch.zeros(2, 1, dtype=torch.long),
            "bonds": torch.zeros(2, 0, dtype=torch.long),
        },
        0.5,
    )
    assert one["atoms"].shape == (2, 1, KA) and one["bonds"].shape == (2, 0, KB)


def test_structural_features_are_walk_counts():
    """Brute force with integer matrix powers on a small graph with a padded node."""
    model = model_for()
    n = 6
    A = torch.zeros(n, n, dtype=torch.long)
    for i, j in [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 5)]:
        A[i, j] = A[j, i] = 1
    ids = torch.where(A.bool(), 2, 0)  # bond class 2 present, 0 absent
    ids[3, 4] = ids[4, 3] = KB  # the mask state counts as absent
    ids.fill_diagonal_(KB + 1)
    node_mask = torch.tensor([[True] * 5 + [False]])  # node 5 padded
    pair = node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    node, edge, glob = model._structure(ids[None], node_mask, pair)
    A_eff = A.clone()
    A_eff[3, 4] = A_eff[4, 3] = 0
    A_eff[5, :] = A_eff[:, 5] = 0
    pw = [torch.linalg.matrix_power(A_eff, k) for k in range(2, 7)]
    expect_node = torch.stack([p.diagonal() for p in pw], -1).float()  # (n, 5)
    expect_node[5] = 0
    torch.testing.assert_close(node[0].expm1(), expect_node, atol=1e-4, rtol=1e-5)
    assert node[0, 0, 1].expm1().round() == 2  # a triangle: two closed 3-walks per vertex
    expect_edge = torch.stack(pw[:2], -1).float() * pair[0, :, :, None]
    torch.testing.assert_close(edge[0].expm1(), expect_edge, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(glob[0, 0], torch.tensor(5 / 9))
    torch.testing.assert_close(glob[0, 1:], node[0, :5].mean(0))


def test_time_changes_output_and_gradients_flow():
    model = model_for(seed=7).train()
    x = graph()
    a = model(x, torch.full((3,), 0.1))
    b = model(x, torch.full((3,), 0.9))
    assert (a["atoms"] - b["atoms"]).abs().max() > 1e-4
    loss = torch.nn.functional.cross_entropy(
        a["atoms"].flatten(0, 1), x["atoms"].clamp(max=KA - 1).flatten()
    )
    loss = loss + torch.nn.functional.cross_entropy(
        a["bonds"].flatten(0, 1), x["bonds"].clamp(max=KB - 1).flatten()
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_config_json_round_trip_and_validation():
    model = model_for(seed=8, structural_features=False)
    rebuilt = denoiser_from_config(json.loads(json.dumps(denoiser_config(model))))
    assert isinstance(rebuilt, GraphTransformerDenoiser) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x, t = graph(), torch.full((3,), 0.6)
    for k, v in model(x, t).items():
        torch.testing.assert_close(rebuilt(x, t)[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny(node_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="no_bond_id"):
        tiny(no_bond_id=KB)
    with pytest.raises(ValueError, match="unknown GraphTransformerConfig keys"):
        GraphTransformerConfig.from_dict({**tiny().to_dict(), "n_layers": 2})


def test_bf16_autocast_on_cpu():
    model = model_for(seed=9)
    x, t = graph(), torch.full((3,), 0.5)
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    for k in ref:
        assert out[k].dtype == torch.float32 and torch.isfinite(out[k]).all()
        assert (out[k] - ref[k]).norm() / ref[k].norm() < 0.1


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    model = model_for(seed=10)
    compiled = torch.compile(model, fullgraph=True)
    x, t = graph(), torch.rand(3, generator=torch.Generator().manual_seed(11))
    mask = torch.ones(3, N, dtype=torch.bool)
    mask[0, 5:] = False
    out, ref = compiled(x, t, {"node_mask": mask}), model(x, t, {"node_mask": mask})
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], atol=1e-4, rtol=1e-4)


def _literal_layer(layer, X, E, y, node_mask, pair_mask, attend):
    """The layer's equations written out term by term (as DiGress's XEy layer), the reference
    for the fused implementation."""
    import math

    from discdiff.nn.graph_transformer import _masked_pool

    B, n, dx = X.shape
    H, dh = layer.num_heads, layer.head_dim
    xm = node_mask[..., None].float()
    pm = ((pair_mask | torch.eye(n, dtype=torch.bool)) & node_mask[:, :, None])[..., None].float()
    q = layer.q(X).view(B, n, 1, H, dh)
    k = layer.k(X).view(B, 1, n, H, dh)
    s = q * k / math.sqrt(dh)
    s = s * (1 + layer.e_mul(E).view(B, n, n, H, dh)) + layer.e_add(E).view(B, n, n, H, dh)
    new_e = s.flatten(-2)
    new_e = layer.ye_add(y)[:, None, None] + (1 + layer.ye_mul(y)[:, None, None]) * new_e
    new_e = layer.e_out(new_e) * pm
    a = torch.softmax(s.masked_fill(~attend[..., None, None], float("-inf")), dim=2)
    wv = (a * layer.v(X).view(B, 1, n, H, dh)).sum(dim=2).flatten(-2)
    new_x = layer.x_out(layer.yx_add(y)[:, None] + (1 + layer.yx_mul(y)[:, None]) * wv) * xm
    if layer.update_global:
        new_y = (
            layer.y_y(y)
            + layer.x_y(_masked_pool(X, node_mask, (1,)))
            + layer.e_y(_masked_pool(E, pair_mask, (1, 2)))
        )
        y = layer.norm_y1(y + layer.y_out(new_y))
        y = layer.norm_y2(y + layer.ff_y(y))
    X = layer.norm_x1(X + new_x)
    E = layer.norm_e1(E + new_e)
    X = layer.norm_x2(X + layer.ff_x(X)) * xm
    E = layer.norm_e2(E + layer.ff_e(E)) * pm
    return X, E, y


@pytest.mark.parametrize("grad", [False, True])
def test_fused_layer_matches_its_equations(grad):
    """The fused layer (bias folding, FiLM folded into e_out, in place without autograd)
    computes the literal equations: values, and with autograd the same gradients."""
    model = model_for(seed=3)
    layer = model.layers[0]
    g = torch.Generator().manual_seed(5)
    B, n = 4, 6
    X = torch.randn(B, n, 16, generator=g)
    E = torch.randn(B, n, n, 8, generator=g)
    y = torch.randn(B, 8, generator=g)
    node_mask = torch.ones(B, n, dtype=torch.bool)
    node_mask[1, 4:] = False
    node_mask[2, 1:] = False
    eye = torch.eye(n, dtype=torch.bool)
    pair_mask = node_mask[:, :, None] & node_mask[:, None, :] & ~eye
    attend = node_mask[:, None, :] | eye
    E = E * ((pair_mask | eye) & node_mask[:, :, None])[..., None]
    E_before = E.clone()
    with torch.set_grad_enabled(grad):
        got = layer(X, E, y, node_mask, pair_mask, attend)
    want = _literal_layer(layer, X, E, y, node_mask, pair_mask, attend)
    assert torch.equal(E, E_before)  # the caller's tensors are never written
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if grad:
        w = [torch.randn(t.shape, generator=g) for t in want]
        gg = torch.autograd.grad(sum((a * c).sum() for a, c in zip(got, w, strict=True)),
                                 list(layer.parameters()))  # fmt: skip
        gw = torch.autograd.grad(sum((a * c).sum() for a, c in zip(want, w, strict=True)),
                                 list(layer.parameters()))  # fmt: skip
        for a, b in zip(gg, gw, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_grown_bond_classes_keep_the_old_outputs():
    """A new bond class starts as the mean of the old ones it is like: on graphs without it the
    grown model gives the old logits and, for the new class, the mean of its sources' logits."""
    from discdiff.nn import grow_bond_classes

    old = model_for(seed=3, bond_num_states=4, bond_num_classes=4)
    grown = grow_bond_classes(old, {4: (1, 2)}).eval()
    assert grown.config.bond_num_classes == grown.config.bond_num_states == 5
    x = graph(B=2, seed=5)
    x["bonds"] = x["bonds"].clamp(max=3)  # no aromatic bond in the input
    x["atoms"] = x["atoms"].clamp(max=KA - 1)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a, b = old(x, t), grown(x, t)
    torch.testing.assert_close(b["atoms"], a["atoms"])
    torch.testing.assert_close(b["bonds"][..., :4], a["bonds"])
    torch.testing.assert_close(b["bonds"][..., 4], a["bonds"][..., 1:3].mean(-1))
    x["bonds"][:, 0] = 4  # an aromatic bond in the input: it is read
    with torch.no_grad():
        assert not torch.allclose(grown(x, t)["bonds"][..., :4], a["bonds"])
    with pytest.raises(ValueError, match="numbered 4"):
        grow_bond_classes(old, {5: (1,)})
    with pytest.raises(ValueError, match="old classes in"):
        grow_bond_classes(old, {4: (7,)})


@pytest.mark.parametrize("grad", [False, True])
def test_unpadded_batches_skip_the_masks_with_the_same_values(grad):
    """With every node real, ``padded=False`` skips the mask passes: bit-identical outputs, and
    the whole denoiser takes that path exactly when its node mask is all True (on a CPU)."""
    model = model_for(seed=4)
    layer = model.layers[0]
    g = torch.Generator().manual_seed(6)
    B, n = 3, 5
    X, E, y = (torch.randn(*s, generator=g) for s in ((B, n, 16), (B, n, n, 8), (B, 8)))
    node_mask = torch.ones(B, n, dtype=torch.bool)
    eye = torch.eye(n, dtype=torch.bool)
    pair_mask = (~eye).expand(B, n, n)
    attend = torch.ones(B, n, n, dtype=torch.bool)
    with torch.set_grad_enabled(grad):
        masked = layer(X, E, y, node_mask, pair_mask, attend, padded=True)
        skipped = layer(X, E, y, node_mask, pair_mask, attend, padded=False)
    for a, b in zip(masked, skipped, strict=True):
        assert torch.equal(a, b)
    seen = []
    original = type(layer).forward

    def spy(self, *args, padded=True):
        seen.append(padded)
        return original(self, *args, padded=padded)

    atoms = torch.randint(0, KA, (B, n), generator=g)
    bonds = torch.randint(0, KB, (B, n * (n - 1) // 2), generator=g)
    t = torch.rand(B, generator=g)
    partial = node_mask.clone()
    partial[0, -1] = False
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(type(layer), "forward", spy)
        model({"atoms": atoms, "bonds": bonds}, t, node_mask=node_mask)
        model({"atoms": atoms, "bonds": bonds}, t, node_mask=partial)
    assert seen == [False] * len(model.layers) + [True] * len(model.layers)
