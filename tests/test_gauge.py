"""The quality gauge: distances to the training data that a broken model cannot hide behind
the guards (validity, uniqueness and novelty stay at 100% for an untrained model there)."""

from __future__ import annotations

import torch

from discdiff.chem.graph import GraphVocab, encode_smiles, graph_to_mol
from discdiff.chem.metrics import GAUGE_LIMITS, gauge_properties, gauge_reference, quality_gauge
from discdiff.chem.rejection import Rejection, RejectionStats
from discdiff.datasets.qm9 import load_qm9
from discdiff.tasks.molecules import MoleculeTask
from discdiff.tasks.runs import from_pretrained

TINY = dict(num_layers=1, node_dim=16, edge_dim=8, global_dim=8, num_heads=2, node_ff_dim=16,
            edge_ff_dim=8, global_ff_dim=8, time_freq_dim=8)  # fmt: skip


def _gauged(task, model, n=200, seed=0):
    stats = RejectionStats()
    graphs = task.sample_graphs(
        model, n, steps=12, generator=torch.Generator().manual_seed(seed),
        reject=Rejection(max_draws=n), stats=stats,
    )  # fmt: skip
    ref = gauge_reference(load_qm9("train")[:20_000])
    metrics = task.metrics(graphs, reference=ref)
    mols = [m for m in (graph_to_mol(a, b, task.vocab) for a, b in graphs) if m is not None]
    metrics.update(gauge_properties(mols, ref))
    return metrics, stats, quality_gauge(metrics, stats.pass_rate)


def test_the_gauge_reads_its_figures_and_warns_past_the_limits():
    ok = quality_gauge({"atom_tv": 0.01, "bond_tv": 0.02, "ring_tv": 0.03}, 0.93)
    assert len(ok) == 1 and "atom_tv 0.010" in ok[0] and "93.0%" in ok[0]
    bad = quality_gauge({"atom_tv": 0.4, "bond_tv": 0.02, "ring_tv": 0.5}, 0.2)
    assert any("atom_tv 0.400 > 0.08" in ln and "ring_tv 0.500" in ln for ln in bad)
    assert any("only 20.0%" in ln for ln in bad)
    assert quality_gauge({}) == []


def test_the_shipped_model_reads_healthy_and_an_untrained_one_broken():
    """The shipped QM9 model stays under every limit; an untrained denoiser of the same task
    family, sampled through the same guards and rejection (every sample valid), is flagged."""
    task, model = from_pretrained("qm9")
    metrics, _, lines = _gauged(task, model)
    assert set(GAUGE_LIMITS) <= set(metrics)
    assert all(metrics[k] <= lim for k, lim in GAUGE_LIMITS.items()), metrics
    assert not any(ln.startswith("warning") for ln in lines), lines

    graphs, _ = encode_smiles(load_qm9("train")[:2000], GraphVocab.qm9())
    fresh = MoleculeTask.from_graphs(graphs, GraphVocab.qm9())
    torch.manual_seed(0)
    untrained = fresh.build_model({"denoiser": fresh.denoiser_config(**TINY).to_dict()}).eval()
    metrics, stats, lines = _gauged(fresh, untrained)
    assert metrics["validity"] >= 0.9  # the guards: validity says nothing here
    assert any(ln.startswith("warning: the samples are far") for ln in lines), (metrics, lines)
    for k in ("atom_tv", "qed_w1", "sa_w1", "mw_w1"):  # each one alone would flag it
        assert metrics[k] > GAUGE_LIMITS[k], (k, metrics[k])


def test_sample_and_eval_write_the_gauge_and_rejection_as_json(tmp_path, capsys):
    import json

    from discdiff.cli.main import main

    report = tmp_path / "r.json"
    argv = ["molecules", "sample", "-n", "30", "--steps", "6", "--no-progress",
            "--out", str(tmp_path / "m.smi"), "--json", str(report)]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(report.read_text())
    assert doc["model"] == "qm9" and doc["num_samples"] == 30
    assert {"atom_tv", "bond_tv", "ring_tv", "warnings", "rejection"} <= set(doc)
    assert doc["rejection"]["first_draws"] == 30
    assert "gauge (distance to the training data)" in capsys.readouterr().out
    assert main([*argv[:-1], str(tmp_path / "r.txt")]) == 2  # --json needs a .json name
