"""The chemist's generator: property conditioning (bins, CFG plumbing, fine-tuning from a
trained model), scaffold-constrained sampling, filters, sample records and their files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import QED, Crippen

from discdiff.chem.export import decode_samples, write_grid, write_molecules
from discdiff.chem.filters import FILTERS, filter_counts, flag_molecule
from discdiff.chem.graph import GraphVocab, contains_scaffold, encode_smiles, graph_to_mol
from discdiff.chem.metrics import molecule_metrics, reference_stats, wasserstein_1
from discdiff.chem.properties import (
    PROPERTIES,
    bin_labels,
    parse_targets,
    property_values,
    quantile_edges,
)
from discdiff.chem.valence import atom_capacities, bond_orders, guarded_bonds
from discdiff.tasks.molecules import MoleculeTask, shipped_checkpoint
from discdiff.tasks.molecules.conditioning import graph_properties
from discdiff.tasks.runs import from_pretrained, warm_start

SMILES = ["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O", "C1CC1N", "COC=O"]
TINY = dict(num_layers=1, node_dim=16, edge_dim=8, global_dim=8, num_heads=2, node_ff_dim=16,
            edge_ff_dim=8, global_ff_dim=8, time_freq_dim=8)  # fmt: skip


@pytest.fixture(scope="module")
def shipped():
    task, model = from_pretrained("qm9")
    return model, task


# ---- properties and bins ------------------------------------------------------------------
def test_registered_properties_are_rdkits() -> None:
    mols = [Chem.MolFromSmiles(s) for s in SMILES]
    v = property_values(SMILES + ["not a smiles"], ["qed", "logp", "mw", "tpsa", "sa"])
    assert v.shape == (len(SMILES) + 1, 5)
    assert torch.isnan(v[-1]).all()  # an unparseable molecule: NaN, not an error
    for i, m in enumerate(mols):
        assert v[i, 0] == pytest.approx(QED.qed(m), abs=1e-12)
        assert v[i, 1] == pytest.approx(Crippen.MolLogP(m), abs=1e-12)
    assert ((v[:-1, 4] >= 1) & (v[:-1, 4] <= 10)).all()  # SA score range
    assert {"qed", "logp", "mw", "tpsa", "sa"} <= set(PROPERTIES.names())
    with pytest.raises(ValueError, match="qedd"):
        property_values(SMILES, ["qedd"])


def test_quantile_bins_hold_equal_mass_and_nan_is_null() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, generator=g, dtype=torch.float64)
    edges = quantile_edges(x, 8)
    assert len(edges) == 7 and all(b > a for a, b in zip(edges, edges[1:], strict=False))
    ids = bin_labels(x[:, None], [edges])[:, 0]
    counts = torch.bincount(ids, minlength=8)
    assert (counts - 1250).abs().max() <= 2  # equal mass up to ties at the edges
    lab = bin_labels(torch.tensor([[math.nan], [edges[0] - 1], [edges[-1] + 1]]), [edges])
    assert lab[:, 0].tolist() == [8, 0, 7]  # NaN -> the null id (= number of bins)
    # a discrete property (many ties) still gets strictly increasing edges
    ties = quantile_edges(torch.tensor([0.0] * 90 + [1.0] * 10, dtype=torch.float64), 4)
    assert all(b > a for a, b in zip(ties, ties[1:], strict=False))


@pytest.mark.parametrize(
    "items,fragment",
    [(["qed"], "NAME=VALUE"), (["logp=1"], "conditioned on qed"), (["qed=x"], "not a number"),
     (["qed=1", "qed=2"], "twice"), (["qed=nan"], "finite")],
)  # fmt: skip
def test_parse_targets_errors(items, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_targets(items, ["qed"])
    assert parse_targets(["QED=0.7"], ["qed"]) == {"qed": 0.7}


# ---- the conditioned task -----------------------------------------------------------------
def _task_and_data(props=("qed", "logp")):
    vocab = GraphVocab.qm9()
    graphs, _ = encode_smiles(SMILES, vocab)
    base = MoleculeTask.from_graphs(graphs, vocab)
    values = graph_properties(graphs, vocab, props)
    task = base.conditioned(list(props), values, bins=4, label_dropout=0.25)
    data = task.graph_dataset(graphs).with_properties(values)
    return base, task, graphs, data


def test_conditioned_task_round_trips_and_bins_its_data() -> None:
    base, task, graphs, data = _task_and_data()
    again = MoleculeTask.from_config(task.config.to_dict())
    assert again.config == task.config and again.config.property_bins == 4
    assert base.config.property_bins == 0 and base.config.properties == ()
    _, _, cond = task.fields(data.fields)
    assert cond["label"].shape == (len(graphs), 2) and int(cond["label"].max()) < 4
    with pytest.raises(ValueError, match="no property values"):
        task.fields(task.graph_dataset(graphs).fields)
    with pytest.raises(ValueError, match="conditioned on"):
        task.target_labels({"tpsa": 1.0}, 2)
    assert task.target_labels({"qed": 1.0}, 3).tolist() == [[3, 4]] * 3  # logp: null


def test_a_target_between_bin_centres_mixes_the_two_bins_in_proportion() -> None:
    """A continuous target: at a bin's centre every sample aims at that bin; a quarter of the
    way to the next centre, a quarter of them at the next (within 5 standard errors over 4,000
    seeded draws); the plain bin without interpolation; the line says so."""
    _, task, _, _ = _task_and_data()
    c = task.bin_centres(0)  # qed
    assert len(c) == 4 and all(a < b for a, b in zip(c, c[1:], strict=False))
    g = torch.Generator().manual_seed(0)
    assert set(task.target_labels({"qed": c[1]}, 500, g, interpolate=True)[:, 0].tolist()) == {1}
    v = c[1] + 0.25 * (c[2] - c[1])
    got = task.target_labels({"qed": v}, 4000, g, interpolate=True)[:, 0]
    assert set(got.tolist()) == {1, 2}
    share = float((got == 2).double().mean())
    assert abs(share - 0.25) < 5 * (0.25 * 0.75 / 4000) ** 0.5
    plain = task.target_labels({"qed": v}, 3, interpolate=False)[:, 0].tolist()
    assert plain == [int(torch.bucketize(torch.tensor([v]), torch.tensor(
        task.config.property_edges[0]), right=True))] * 3  # fmt: skip
    assert "75% / 25%" in task.describe_target("qed", v)
    draw = lambda: task.target_labels({"qed": v}, 50, torch.Generator().manual_seed(7), True)  # noqa: E731
    assert torch.equal(draw(), draw())


def test_label_dropout_rates_and_reproducibility() -> None:
    _, task, _, _ = _task_and_data()
    label = torch.zeros(20_000, 2, dtype=torch.long)
    a = task._drop_labels(label, torch.Generator().manual_seed(1))
    b = task._drop_labels(label, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    null = a == task.null_label
    p_all = 0.25
    # all null: p + (1 - p) / 4; a given one null: p + (1 - p) / 2 (se ~ 0.0035)
    assert null.all(1).float().mean() == pytest.approx(p_all + (1 - p_all) / 4, abs=0.015)
    assert null[:, 0].float().mean() == pytest.approx(p_all + (1 - p_all) / 2, abs=0.015)


def test_warm_start_keeps_the_trained_model_exactly(shipped) -> None:
    model0, task0 = shipped
    vocab = task0.vocab
    graphs, _ = encode_smiles(SMILES, vocab)
    values = graph_properties(graphs, vocab, ["qed"])
    task = task0.conditioned(["qed"], values, bins=4)
    sizes = {k: v for k, v in model0.config.to_dict().items() if k in TINY or k == "dropout"}
    model = task.build_denoiser(**sizes)
    fresh = warm_start(model, model0, new=("labels.",))
    assert fresh == ["labels.0.table.weight"]
    data = task.graph_dataset(graphs).with_properties(values)
    x0, mask, cond = task.fields(data.fields)
    t = torch.full((len(graphs),), 0.5)
    with torch.no_grad():
        a = model(x0, t, cond)
        b = model0(x0, t, {"node_mask": cond["node_mask"]})
    for k in a:  # zero-initialised label tables: the fine-tune starts at the trained model
        assert torch.equal(a[k], b[k])
    with pytest.raises(ValueError, match="do not fit"):
        warm_start(task.build_denoiser(**TINY), model0, new=("labels.",))


class _LabelReader(torch.nn.Module):
    """A denoiser whose atoms are all C for property bin 0 and all N for bin 1 (null: 50/50)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x_t, t, cond):
        B, N = x_t["atoms"].shape
        lab = cond["label"][:, 0]
        self.seen.append(lab.clone())
        atoms = torch.full((B, N, 8), -30.0)
        atoms[..., 0] = torch.where(lab == 0, 0.0, torch.where(lab == 1, -30.0, 0.0))[:, None]
        atoms[..., 1] = torch.where(lab == 1, 0.0, torch.where(lab == 0, -30.0, 0.0))[:, None]
        bonds = torch.full((B, x_t["bonds"].shape[1], 4), -30.0)
        bonds[..., 0] = 0.0
        return {"atoms": atoms + self.w, "bonds": bonds}


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_a_target_reaches_the_denoiser_and_guidance_calls_it_unconditioned(guidance) -> None:
    _, task, _, _ = _task_and_data(("qed",))
    centres = task.bin_centres(0)  # a target at a bin's centre: every sample aims at that bin
    model = _LabelReader()
    for goal, element in ((centres[0] - 1.0, "C"), (centres[1], "N")):
        model.seen.clear()
        graphs = task.sample_graphs(model, 6, steps=4, target={"qed": goal}, guidance=guidance,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
        bins = {int(v) for s in model.seen for v in s.unique()}
        want = {0 if element == "C" else 1} | ({task.null_label} if guidance != 1 else set())
        assert bins == want
        for a, b in graphs:
            mol = graph_to_mol(a, b, task.vocab, sanitize=False)
            assert {x.GetSymbol() for x in mol.GetAtoms()} == {element}


def test_conditioned_loss_trains_and_unconditioned_sampling_still_works() -> None:
    _, task, _, data = _task_and_data(("qed",))
    torch.manual_seed(0)
    model = task.build_denoiser(**TINY)
    batch = data.fields
    loss = task.loss(model, batch, torch.Generator().manual_seed(0)).mean()
    loss.backward()
    assert math.isfinite(loss.item()) and model.labels[0].table.weight.grad.abs().sum() > 0
    assert len(task.sample_graphs(model, 3, steps=2)) == 3  # no target: every label null
    with pytest.raises(ValueError, match="guidance needs a target"):
        task.sample_graphs(model, 3, steps=2, guidance=2.0)


# ---- scaffolds ----------------------------------------------------------------------------
@pytest.mark.parametrize("scaffold", ["c1ccoc1", "C1CCC1", "CC(=O)N"])
def test_every_valid_sample_contains_the_scaffold(shipped, scaffold) -> None:
    model, task = shipped
    graphs = task.sample_graphs(model, 24, steps=12, scaffold=scaffold, batch_size=24,
                                generator=torch.Generator().manual_seed(3))  # fmt: skip
    records = decode_samples(task.to_mols(graphs), repair=False)
    query = Chem.MolFromSmiles(scaffold)
    valid = [r for r in records if r.valid]
    assert len(valid) >= 20  # the guard keeps them valid; the scaffold is never lost
    assert all(contains_scaffold(r.mol, query) for r in valid)
    k = query.GetNumAtoms()
    assert all(a.shape[0] >= k for a, _ in graphs)
    exact = task.sample_graphs(model, 4, steps=4, scaffold=scaffold, num_atoms=k + 1)
    assert all(a.shape[0] == k + 1 for a, _ in exact)


def test_guarded_bonds_count_the_given_bonds() -> None:
    vocab = GraphVocab.qm9()
    caps, orders = atom_capacities(vocab), bond_orders(vocab)
    g = torch.Generator().manual_seed(0)
    B, N = 64, 5
    E = N * (N - 1) // 2
    atoms = torch.randint(0, 4, (B, N), generator=g)
    logp = torch.log_softmax(torch.randn(B, E, 4, generator=g) * 3, -1)
    given_mask = torch.zeros(B, E, dtype=torch.bool)
    given_mask[:, 0] = True  # edge (0, 1) fixed to a single bond
    given = (torch.ones(B, E, dtype=torch.long), given_mask)
    bonds = guarded_bonds(atoms, logp, ~given_mask, caps, orders, g, given)
    assert (bonds[:, 0] == 1).all()
    ii, jj = torch.triu_indices(N, N, 1)
    load = torch.zeros(B, N)
    load.index_add_(1, ii, orders[bonds])
    load.index_add_(1, jj, orders[bonds])
    assert (load <= caps[atoms] + 1e-6).all()


# ---- filters, profiles, records and files -------------------------------------------------
def test_filters_flag_what_they_name() -> None:
    cases = {"C1=CCC1": "alkene_4ring", "C1=CC1": "alkene_3ring", "C1CCC#CCCC1": "triple_in_ring",
             "C=C=C": "allene", "OC=C": "enol", "O=CF": "acyl_fluoride", "FC=C": "vinyl_fluoride",
             "COOC": "peroxide", "[NH4+]": "net_charged",
             "O=C1C(=Cc2ccccc2)SC(=S)N1": "pains"}  # fmt: skip
    for smi, name in cases.items():
        flags = flag_molecule(Chem.MolFromSmiles(smi))
        assert flags[name], (smi, name)
    for smi in ("c1ccccc1", "Oc1ccccc1", "Fc1ccccc1", "CC(=O)O", "O=C=O", "CCO"):
        assert not any(flag_molecule(Chem.MolFromSmiles(smi)).values()), smi
    counts = filter_counts([Chem.MolFromSmiles(s) for s in ("C1=CC1", "CCO", "OC=C")])
    assert counts["checked"] == 3 and counts["any"] == 2 and counts["enol"] == 1
    assert set(FILTERS) <= set(counts)


def test_profile_metrics_against_a_reference() -> None:
    assert wasserstein_1([0.0], [1.0]) == pytest.approx(1.0)
    assert wasserstein_1([0.0, 1.0, 2.0], [0.5, 1.5, 2.5]) == pytest.approx(0.5)
    ref = reference_stats(SMILES, profile=True)
    m = molecule_metrics(SMILES, reference=ref, profile=True, whole={"CCO"})
    assert m["aromatic"] == pytest.approx(1 / 8) and m["rate_enol"] == 0.0
    assert m["qed_w1"] == pytest.approx(0.0) and m["mw_w1"] == pytest.approx(0.0)
    assert m["novelty_whole"] == pytest.approx(7 / 8)
    m2 = molecule_metrics(["C1=CC1", "OC=C"], reference=ref, profile=True)
    assert m2["rate_alkene_3ring"] == 0.5 and m2["mw_w1"] > 0


def test_records_say_what_was_done_and_files_carry_it(tmp_path) -> None:
    vocab = GraphVocab.qm9()
    raw = [Chem.MolFromSmiles("CCO", sanitize=False),
           Chem.MolFromSmiles("CC.O", sanitize=False),  # two fragments
           Chem.MolFromSmiles("CN(C)(C)C", sanitize=False),  # tetravalent N: repaired to N+
           Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)]  # fmt: skip  # invalid
    recs = decode_samples(raw)
    assert [r.status for r in recs] == ["strict", "fragments_dropped", "repaired", "invalid"]
    assert recs[1].smiles == "CC"
    plain = decode_samples(raw, repair=False)
    assert [r.status for r in plain] == ["strict", "strict", "invalid", "invalid"]
    assert plain[1].smiles == "CC.O"  # what the model made, whole
    smi = tmp_path / "m.smi"
    assert write_molecules(smi, recs) == 3
    lines = smi.read_text().splitlines()
    assert [ln.split("\t")[2] for ln in lines] == ["strict", "fragments_dropped", "repaired"]
    assert "None" not in smi.read_text()
    assert write_molecules(smi, recs, keep_invalid=True) == 4
    assert smi.read_text().splitlines()[-1].endswith("\tsample_3\tinvalid")
    sdf = tmp_path / "m.sdf"
    assert write_molecules(sdf, recs, conformers=True, seed=1) == 3  # no record for the invalid
    mols = list(Chem.SDMolSupplier(str(sdf), removeHs=False))
    assert len(mols) == 3 and all(m is not None and m.GetNumAtoms() > 0 for m in mols)
    assert [m.GetProp("_Name") for m in mols] == ["sample_0", "sample_1", "sample_2"]
    assert mols[0].GetProp("status") == "strict" and float(mols[0].GetProp("qed")) > 0
    assert mols[0].GetNumAtoms() == 9 and mols[0].GetConformer().Is3D()  # CCO + 6 H
    assert mols[0].GetProp("conformer") == "etkdg+mmff"
    assert mols[2].GetProp("net_charged") == "1"  # the repair product is a bare cation
    write_molecules(sdf, recs, hydrogens=True)
    assert next(iter(Chem.SDMolSupplier(str(sdf), removeHs=False))).GetNumAtoms() == 9
    table = tmp_path / "m.csv"
    write_molecules(table, recs)
    rows = list(csv.DictReader(table.open()))
    assert [r["status"] for r in rows] == [r.status for r in recs] and rows[3]["qed"] == ""
    png = tmp_path / "g.png"
    assert write_grid(png, recs, 4) == 4 and png.stat().st_size > 0
    from PIL import Image

    gray = np.asarray(Image.open(png).convert("L"))  # 4 cells of 240 x 220: the invalid one drawn
    assert (gray[:220, 3 * 240 : 4 * 240] < 200).sum() > 200  # its graph and INVALID label
    assert vocab.num_atom_classes == 8


# ---- torch-geometric data -----------------------------------------------------------------
def test_pyg_dataset_trains_and_scores_like_the_padded_one(tmp_path) -> None:
    from discdiff.chem.pyg import MoleculeGraphDataset, densify
    from discdiff.tasks import runs
    from discdiff.training import TrainConfig

    _, task, graphs, data = _task_and_data(("qed",))
    values = data.fields["props"]
    pyg = MoleculeGraphDataset(graphs, values)
    assert len(pyg) == len(graphs)
    for (a, b), (a2, b2) in zip(graphs, pyg.graphs(), strict=True):
        assert torch.equal(a, a2) and torch.equal(b, b2)
    batch = task.collate()([pyg[i] for i in range(len(pyg))])
    dense = densify(batch, task.config.max_nodes)
    for k, v in data.fields.items():  # to_dense_batch / to_dense_adj == our padding
        assert torch.equal(dense[k], v), k
    torch.manual_seed(0)
    model = task.build_denoiser(**TINY)
    a = task.loss(model, batch, torch.Generator().manual_seed(5))
    b = task.loss(model, data.fields, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert task.count_tokens(batch) == task.count_tokens(data.fields)
    # the shared trainer runs on PyG batches; the run dir keeps padded files
    task.attach_data(pyg, MoleculeGraphDataset(graphs[:3], values[:3]))
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, eval_every=3,
                      eval_batches=1, ckpt_every=3, log_every=1)  # fmt: skip
    runs.train(task, model, cfg, tmp_path / "run", device="cpu", progress=False)
    again, _ = runs.load_run(tmp_path / "run")
    saved = again.dataset("train").fields
    assert torch.equal(saved["props"], values.float()) and torch.equal(
        saved["atoms"], data.fields["atoms"]
    )


def test_canonical_sets_are_cached_on_disk_and_missing_data_is_said(tmp_path, monkeypatch):
    import discdiff.chem.metrics as metrics
    from discdiff.tasks.molecules.data import cached_canonical_set, novelty_sets

    smiles = ["OCC", "C(C)O", "c1ccoc1", "not smiles"]
    first = cached_canonical_set(smiles, cache=tmp_path)
    assert first == {"CCO", "c1ccoc1"}
    assert len(list((tmp_path / "canonical").glob("*.txt"))) == 1

    def boom(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(metrics, "canonical_set", boom)
    assert cached_canonical_set(smiles, cache=tmp_path) == first  # read from the file
    with pytest.raises(AssertionError):
        cached_canonical_set(smiles[:2], cache=tmp_path)  # other SMILES: another key
    monkeypatch.undo()
    path = tmp_path / "train.smi"
    path.write_text("CCO\nCCN\n")
    train, whole, why = novelty_sets(str(path))
    assert why is None and train == whole == {"CCO", "CCN"}
    assert (
        novelty_sets(str(tmp_path / "gone.smi"))[2]
        == f"the training file {str(tmp_path / 'gone.smi')!r} is gone"
    )
    assert novelty_sets(None)[2] == "the model names no training data set"


def test_shipped_qm9_sets_load_for_this_rdkit_and_are_refused_for_another(tmp_path) -> None:
    import gzip

    from discdiff.tasks.molecules.data import QM9_SETS, novelty_sets, shipped_qm9_sets

    sets = shipped_qm9_sets()
    assert sets is not None, "the shipped canonical QM9 sets do not load for this RDKit"
    train, whole = sets
    assert len(train) > 99_000 and len(whole) > 130_000 and train <= whole
    assert novelty_sets("qm9")[0] is train or novelty_sets("qm9")[0] == train
    lines = gzip.decompress(QM9_SETS.read_bytes()).decode().splitlines()
    other = tmp_path / "old.txt.gz"
    other.write_bytes(gzip.compress("\n".join(["# rdkit 2001.01.1", *lines[1:]]).encode()))
    assert shipped_qm9_sets(other) is None


@pytest.mark.slow
def test_shipped_qm9_sets_equal_the_data() -> None:
    from discdiff.chem.metrics import canonical_set
    from discdiff.datasets.qm9 import load_qm9
    from discdiff.tasks.molecules.data import shipped_qm9_sets

    train, whole = shipped_qm9_sets()
    assert train == canonical_set(load_qm9("train"))
    assert whole == train | canonical_set(load_qm9("val")) | canonical_set(load_qm9("test"))


def test_shipped_models_are_found_by_name(tmp_path, monkeypatch) -> None:
    from discdiff.tasks.molecules import SHIPPED

    for name in SHIPPED:
        path = shipped_checkpoint(name)
        assert (
            path.is_file()
            and path.with_name(path.name.replace("_model.safetensors", "_config.json")).is_file()
        )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qm9").mkdir()  # a file or folder of that name wins over the shipped model
    with pytest.raises(FileNotFoundError, match="neither a run dir nor a checkpoint dir"):
        from_pretrained("qm9")
    with pytest.raises(ValueError, match="no shipped checkpoint"):
        shipped_checkpoint("zinc")
    task, model = from_pretrained("qm9-qed", expect="molecules")
    assert task.config.properties == ("qed",) and model.config.num_properties == 1
    assert "bin 16 of 16" in task.describe_target("qed", 0.7)
    assert "outside the training molecules' range" in task.describe_target("qed", 0.7)
    assert "outside" not in task.describe_target("qed", 0.45)
