"""discdiff.tasks.molecules: processes, fields, loss, sampling, padding and config round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch

from discdiff.chem.graph import GraphVocab, encode_smiles, sample_node_counts, triu_to_dense
from discdiff.processes import Absorbing, Marginal, Uniform
from discdiff.tasks.molecules import (
    GraphDataset,
    MoleculeTask,
    MoleculeTaskConfig,
)
from discdiff.tasks.runs import export, from_pretrained

SMILES = [
    "CCO",
    "CC(=O)O",
    "c1ccoc1",
    "CC#N",
    "OCC(O)CO",
    "CC(C)O",
    "C1CC1N",
    "COC=O",
    "NC(=O)CF",
    "CC1=CC=CN1",
    "O=C1CCC1",
    "CN(C)C",
]
TINY = {
    "num_layers": 1,
    "node_dim": 16,
    "edge_dim": 8,
    "global_dim": 8,
    "num_heads": 2,
    "node_ff_dim": 16,
    "edge_ff_dim": 8,
    "global_ff_dim": 8,
    "time_freq_dim": 8,
}


@pytest.fixture(scope="module")
def graphs() -> list:
    g, skipped = encode_smiles(SMILES, GraphVocab.qm9())
    assert skipped == 0
    return g


def make(graphs: list, process: str = "marginal", **kw) -> tuple[MoleculeTask, torch.nn.Module]:
    task = MoleculeTask.from_graphs(graphs, GraphVocab.qm9(), process=process, **kw)
    torch.manual_seed(0)
    model = task.build_model({"denoiser": task.denoiser_config(**TINY).to_dict()})
    return task, model


@pytest.mark.parametrize("kind", ["marginal", "uniform", "absorbing"])
def test_processes_and_fields_shapes(graphs: list, kind: str) -> None:
    task, model = make(graphs, kind)
    vocab = GraphVocab.qm9()
    family = {"marginal": Marginal, "uniform": Uniform, "absorbing": Absorbing}[kind]
    extra = 1 if kind == "absorbing" else 0
    assert set(task.processes) == {"atoms", "bonds"}
    for name, k in (("atoms", vocab.num_atom_classes), ("bonds", vocab.num_bond_classes)):
        proc = task.processes[name]
        assert isinstance(proc, family)
        assert proc.num_classes == k and proc.num_states == k + extra
    n = task.config.max_nodes
    assert n == max(a.shape[0] for a, _ in graphs)
    batch = torch.utils.data.default_collate([task.dataset(graphs)[i] for i in range(5)])
    x0, mask, cond = task.fields(batch)
    assert x0["atoms"].shape == (5, n) and x0["bonds"].shape == (5, n * (n - 1) // 2)
    assert mask["atoms"].dtype == torch.bool and mask["bonds"].shape == x0["bonds"].shape
    assert torch.equal(cond["node_mask"], mask["atoms"])
    logits = model(x0, torch.rand(5), cond)
    assert logits["atoms"].shape == (5, n, vocab.num_atom_classes)
    assert logits["bonds"].shape == (5, n * (n - 1) // 2, vocab.num_bond_classes)
    assert task.loss_fn(model, batch, torch.Generator().manual_seed(0)).shape == (5,)


def test_marginal_priors_are_training_frequencies(graphs: list) -> None:
    task, _ = make(graphs)
    vocab = GraphVocab.qm9()
    atoms = torch.zeros(vocab.num_atom_classes)
    bonds = torch.zeros(vocab.num_bond_classes)
    for a, b in graphs:  # brute force over every real node and unordered real pair
        for k in a.tolist():
            atoms[k] += 1
        n = a.shape[0]
        for i in range(n):
            for j in range(i + 1, n):
                bonds[int(b[i, j])] += 1
    want_a = (atoms + 1) / (atoms + 1).sum()  # one pseudo-count per class
    want_b = (bonds + 1) / (bonds + 1).sum()
    got_a = task.processes["atoms"].prior_log_probs().exp().float()
    got_b = task.processes["bonds"].prior_log_probs().exp().float()
    torch.testing.assert_close(got_a, want_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_b, want_b, atol=1e-6, rtol=0)
    hist = torch.tensor(task.config.node_hist, dtype=torch.float64)
    sizes = torch.bincount(torch.tensor([a.shape[0] for a, _ in graphs]), minlength=len(hist))
    torch.testing.assert_close(hist, sizes.double() / len(graphs))


@pytest.mark.parametrize("kind", ["marginal", "absorbing"])
def test_training_steps_reduce_the_loss(graphs: list, kind: str) -> None:
    task, model = make(graphs, kind)
    batch = torch.utils.data.default_collate(list(task.dataset(graphs)))

    def held_loss() -> float:  # same noise every time: differences come from the weights
        with torch.no_grad():
            vals = [task.loss(model, batch, torch.Generator().manual_seed(s)) for s in range(4)]
        return float(torch.stack(vals).mean())

    before = held_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        loss = task.loss_fn(model, batch, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_loss()
    assert math.isfinite(after) and after < 0.8 * before, (before, after)


@pytest.mark.parametrize("kind", ["marginal", "uniform", "absorbing"])
def test_loss_never_noises_padding(graphs: list, kind: str) -> None:
    task, model = make(graphs, kind)
    batch = torch.utils.data.default_collate(list(task.dataset(graphs)))
    seen = []

    def spy(x_t, t, cond=None):
        seen.append({k: v.clone() for k, v in x_t.items()})
        return model(x_t, t, cond)

    for seed in range(3):
        task.loss(spy, batch, torch.Generator().manual_seed(seed), boundary=True)
    pad_a, pad_b = ~batch["node_mask"], ~batch["edge_mask"]
    assert pad_a.any() and pad_b.any()
    noised_real = 0
    for x in seen:
        assert torch.equal(x["atoms"][pad_a], batch["atoms"][pad_a])
        assert torch.equal(x["bonds"][pad_b], batch["bonds"][pad_b])
        noised_real += int((x["bonds"][~pad_b] != batch["bonds"][~pad_b]).sum())
    assert noised_real > 0  # the real positions are noised, so the check above can fail


@pytest.mark.parametrize(
    "kind,sampler",
    [("marginal", "ancestral"), ("uniform", "ancestral"), ("absorbing", "first_hitting")],
)
def test_sampling_shapes_symmetry_and_node_counts(graphs: list, kind: str, sampler: str) -> None:
    task, model = make(graphs, kind)
    vocab = GraphVocab.qm9()
    calls = []

    def spy(x_t, t, cond=None):  # padded positions must always be seen as given (class 0)
        nm = cond["node_mask"]
        ii, jj = torch.triu_indices(nm.shape[1], nm.shape[1], 1)
        em = nm[:, ii] & nm[:, jj]
        assert bool((x_t["atoms"][~nm] == 0).all()) and bool((x_t["bonds"][~em] == 0).all())
        calls.append(1)
        return model(x_t, t, cond)

    n = 40
    out = task.sample_graphs(
        spy, n, steps=4, sampler=sampler, batch_size=16, generator=torch.Generator().manual_seed(3),
        valence_guard=sampler == "ancestral",  # the guard is the ancestral sampler's
    )  # fmt: skip
    assert calls
    hist = torch.tensor(task.config.node_hist, dtype=torch.float64)
    want_counts = sample_node_counts(hist, n, torch.Generator().manual_seed(3))
    assert [a.shape[0] for a, _ in out] == want_counts.tolist()
    for a, b in out:
        m = a.shape[0]
        assert hist[m] > 0
        assert b.shape == (m, m) and torch.equal(b, b.T) and bool((b.diagonal() == 0).all())
        assert int(a.min()) >= 0 and int(a.max()) < vocab.num_atom_classes
        assert int(b.min()) >= 0 and int(b.max()) < vocab.num_bond_classes
    mols = task.to_mols(out)
    assert len(mols) == n
    metrics = task.metrics(out, SMILES)
    assert 0 <= metrics["validity"] <= 1 and "novelty" in metrics


def test_sample_fields_layout(graphs: list) -> None:
    task, model = make(graphs)
    f = task.sample_fields(model, torch.tensor([2, 4, 3]), steps=2)
    assert f["atoms"].shape == (3, 4) and f["bonds"].shape == (3, 6)
    assert f["node_mask"].sum(1).tolist() == [2, 4, 3]
    dense = triu_to_dense(f["bonds"], 4)
    assert torch.equal(dense, dense.transpose(1, 2))
    assert bool((f["bonds"][~f["edge_mask"]] == 0).all())
    with pytest.raises(ValueError, match="node counts"):
        task.sample_fields(model, torch.tensor([0, 2]), steps=2)


def test_node_count_histogram_is_followed(graphs: list) -> None:
    task, model = make(graphs)
    hist = torch.tensor(task.config.node_hist, dtype=torch.float64)
    n = 600
    out = task.sample_graphs(model, n, steps=1, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(torch.tensor([a.shape[0] for a, _ in out]), minlength=len(hist)) / n
    se = torch.sqrt(hist * (1 - hist) / n)
    assert bool(((freq - hist).abs() <= 5 * se + 1e-12).all()), (freq, hist)


def test_config_json_round_trip_and_checkpoint(graphs: list, tmp_path) -> None:
    task, model = make(graphs, "absorbing", schedule="cosine", edge_weight=2.5, dataset="x.smi")
    d = json.loads(json.dumps(task.config.to_dict()))
    assert MoleculeTaskConfig.from_dict(d) == task.config
    path, cfg_path = export(task, model, tmp_path / "m_model.safetensors")
    assert cfg_path.name == "m_config.json"
    task2, model2 = from_pretrained(path, expect="molecules")
    assert task2.config == task.config
    batch = torch.utils.data.default_collate([task.dataset(graphs)[i] for i in range(3)])
    x0, _, cond = task.fields(batch)
    t = torch.full((3,), 0.5)
    model.eval()
    with torch.no_grad():
        a, b = model(x0, t, cond), model2(x0, t, cond)
    for k in a:
        assert torch.equal(a[k], b[k])
    ds = task.dataset(graphs)
    ds.save(tmp_path / "d.safetensors")
    back = GraphDataset.load(tmp_path / "d.safetensors")
    for k in ds.fields:
        assert torch.equal(back.fields[k], ds.fields[k])


def test_bad_config_and_arguments(graphs: list, tmp_path) -> None:
    task, model = make(graphs)
    d = task.config.to_dict()
    for key, value, msg in [
        ("process", "gaussian", "unknown process"),
        ("schedule", "linear", "is not one of"),
        ("node_hist", [1.0] + [0.0] * task.config.max_nodes, "0 nodes"),
        ("atom_prior", [1.0, 2.0], "atom_prior"),
        ("edge_weight", 0.0, "edge_weight"),
    ]:
        with pytest.raises(ValueError, match=msg):
            MoleculeTaskConfig.from_dict({**d, key: value})
    with pytest.raises(ValueError, match="unknown MoleculeTaskConfig keys"):
        MoleculeTaskConfig.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="absorbing"):
        task.make_sampler("first_hitting", steps=3, valence_guard=False)
    with pytest.raises(ValueError, match="unknown sampler"):
        task.make_sampler("magic", steps=3)
    with pytest.raises(ValueError, match="num_samples"):
        task.sample_graphs(model, 0)
    absorbing, _ = make(graphs, "absorbing")
    with pytest.raises(ValueError, match="does not fit"):
        absorbing.build_model({"denoiser": task.denoiser_config(**TINY).to_dict()})
    with pytest.raises(FileNotFoundError):
        from_pretrained(tmp_path / "missing.safetensors", expect="molecules")
    bad = tmp_path / "bad_model.safetensors"
    bad.write_bytes(b"not a safetensors file")
    (tmp_path / "bad_config.json").write_text(
        json.dumps({"task": d, "denoiser": task.denoiser_config(**TINY).to_dict()})
    )
    with pytest.raises(ValueError, match="cannot read checkpoint weights"):
        from_pretrained(bad, expect="molecules")


def test_the_elbo_objective_is_the_weighted_training_loss_and_the_unweighted_bound(graphs):
    """The molecule loss through the objective registry is, draw for draw, continuous_elbo
    with the bonds weighted by edge_weight and ce_weight's cross-entropy in training, and the
    unweighted ELBO with boundary terms as the bound."""
    from discdiff.losses import continuous_elbo

    task, model = make(graphs, "marginal", edge_weight=3.0, ce_weight=0.5)
    batch = torch.utils.data.default_collate(list(task.dataset(graphs)))
    x0, mask, cond = task.fields(batch)

    def gen():
        return torch.Generator().manual_seed(7)

    got = task.loss(model, batch, gen())
    want = continuous_elbo(task.processes, model, x0, mask, cond=cond, generator=gen(),
                           weights={"bonds": 3.0}, ce_weight=0.5, boundary=False)  # fmt: skip
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    got = task.nll_fn(model, batch, gen())
    want = continuous_elbo(task.processes, model, x0, mask, cond=cond, generator=gen(),
                           boundary=True)  # fmt: skip
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert torch.allclose(task.loss(model, batch, gen(), boundary=True), want, rtol=1e-6)


@pytest.mark.parametrize("process,objective", [("marginal", "score_entropy"), ("absorbing", "dfm")])
def test_molecules_train_and_sample_on_other_objectives(graphs, process, objective):
    """score entropy (a score model, converted exactly for the samplers) and DFM train the
    two-field task; the loss is that objective's, and samples come out as graphs."""
    from discdiff.losses import dfm_loss, score_entropy_loss

    task, model = make(graphs, process, objective=objective)
    batch = torch.utils.data.default_collate(list(task.dataset(graphs)))
    x0, mask, cond = task.fields(batch)
    fn = {"score_entropy": score_entropy_loss, "dfm": dfm_loss}[objective]
    got = task.loss(model, batch, torch.Generator().manual_seed(3))
    want = fn(task.processes, model, x0, mask, cond=cond, weights={"bonds": 5.0},
              boundary=False, generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    task.loss(model, batch, torch.Generator().manual_seed(0)).mean().backward()
    opt.step()
    counts = torch.tensor([3, 4, 5])
    f = task.sample_fields(model, counts, steps=4, generator=torch.Generator().manual_seed(0))
    assert f["atoms"].shape[0] == 3 and bool((f["atoms"][f["node_mask"]] >= 0).all())


def test_an_objective_that_cannot_serve_the_molecule_task_is_refused(graphs):
    with pytest.raises(ValueError, match="objective='sundae' needs process='uniform'"):
        make(graphs, "marginal", objective="sundae")
    with pytest.raises(ValueError, match="adds no x_0 cross-entropy"):
        make(graphs, "marginal", objective="dfm", ce_weight=0.1)
    with pytest.raises(ValueError, match="objective='nope' is not one of"):
        make(graphs, "marginal", objective="nope")
