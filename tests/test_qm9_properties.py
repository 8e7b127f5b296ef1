"""QM9's DFT properties: looked up from the packaged table, NaN outside QM9, usable as labels."""

from __future__ import annotations

import math

import torch

from discdiff.chem.graph import GraphVocab, mol_to_graph
from discdiff.chem.properties import PROPERTIES, property_values
from discdiff.datasets.qm9 import HARTREE_EV, QM9_QUANTUM, load_qm9_quantum
from discdiff.tasks.molecules.conditioning import graph_properties
from discdiff.tasks.molecules.data import load_training_smiles


def test_values_are_the_packaged_ones_in_their_units():
    QM9_PROPERTY_NAMES = tuple(QM9_QUANTUM)
    assert all(name in PROPERTIES for name in QM9_PROPERTY_NAMES)
    smiles, values = load_qm9_quantum()
    assert len(smiles) == 130_831 and smiles[0] == "C"
    # methane, the file's first row: gap 0.5048 Ha, alpha 13.21 bohr^3, mu 0 D
    got = property_values(["C", "O"], ["gap", "alpha", "mu", "homo"])
    assert math.isclose(got[0, 0].item(), 0.5048 * HARTREE_EV, rel_tol=1e-12)
    assert got[0, 1].item() == 13.21 and got[0, 2].item() == 0.0
    row = dict(zip(QM9_PROPERTY_NAMES, values[smiles.index("O")], strict=True))
    assert got[1, 3].item() == row["homo"]
    # outside QM9 (11 heavy atoms): no value, so the label is the null one
    assert torch.isnan(property_values(["CCCCCCCCCCC"], ["gap"])).all()


def test_every_qm9_training_graph_has_its_values():
    vocab = GraphVocab.qm9()
    graphs = [mol_to_graph(s, vocab) for s in load_training_smiles("qm9", "train")[:500]]
    vals = graph_properties(graphs, vocab, ["gap", "mu", "cv"])
    assert torch.isfinite(vals).all()
    assert 3.0 < vals[:, 0].mean().item() < 12.0  # HOMO-LUMO gaps of small organics, eV


def test_cli_trains_on_a_quantum_property_and_refuses_data_outside_qm9(tmp_path, capsys):
    from discdiff.cli.main import main

    from .test_cli_molecules import TINY_MODEL, run_ok

    base = ["molecules", "train", "--batch-size", "8", *TINY_MODEL, "--eval-every", "0"]
    base += ["--no-progress", "--steps", "2", "--property-bins", "4"]
    run = tmp_path / "gap"
    out = run_ok([*base, "--data", "qm9", "--max-train", "64", "--out", str(run),
                  "--properties", "gap,mu"])  # fmt: skip
    assert "computing gap, mu of" in out and "done at step 2" in out
    out = run_ok(["molecules", "sample", "-n", "8", "--steps", "2", "--checkpoint", str(run),
                  "--out", str(tmp_path / "g.smi"), "--target", "gap=6.5"])  # fmt: skip
    assert "gap: target 6.5, samples' mean" in out
    data = tmp_path / "big.smi"  # 10-12 heavy atoms: none of them is a QM9 molecule
    data.write_text("\n".join(["CCCCCCCCCC", "CCCCCCCCCCO", "OCCCCCCCCCO", "CCCCCCCCCCN"]) + "\n")
    code = main([*base, "--data", str(data), "--out", str(tmp_path / "x"), "--properties", "gap"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'gap' has a value for 0 of" in err and "QM9 molecules only" in err
