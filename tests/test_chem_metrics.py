"""Molecule metrics on small hand-made lists with known answers, plus the DiGress anchors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from discdiff.chem.graph import GraphVocab, graph_to_mol
from discdiff.chem.metrics import (
    canonical_set,
    format_metrics_table,
    frechet_chemnet_distance,
    largest_fragment,
    molecule_metrics,
    reference_stats,
    repair_mol,
    sanitize_or_none,
    total_variation,
)

ANCHORS = Path(os.environ.get("DIGRESS_ANCHORS", "/work/shared/anchors/digress"))


def test_validity_uniqueness_novelty_known_answers():
    samples = ["CCO", "OCC", "c1ccccc1", "C(C)(C)(C)(C)C", None, "None", "C1CC"]
    m = molecule_metrics(samples, train=["OCC"])
    assert m["num_samples"] == 7
    assert m["validity"] == pytest.approx(3 / 7)  # pentavalent C, failures, unclosed ring
    assert m["validity_repaired"] == pytest.approx(3 / 7)  # C cannot be repaired
    assert m["uniqueness"] == pytest.approx(2 / 3)  # CCO == OCC after canonicalisation
    assert m["novelty"] == pytest.approx(1 / 2)  # benzene is new, ethanol is not
    assert m["frac_connected"] == 1.0
    assert "atom_tv" not in m


def test_repair_charges_overvalent_n_and_o():
    samples = ["C[NH3]", "C[OH2]", "CN(C)(C)(C)C", "CCO"]  # N valence 4, O valence 3, N valence 5
    m = molecule_metrics(samples)
    assert m["validity"] == pytest.approx(1 / 4)
    assert m["validity_repaired"] == pytest.approx(3 / 4)
    fixed = repair_mol(Chem.MolFromSmiles("C[NH3]", sanitize=False))
    assert Chem.MolToSmiles(fixed) == "C[NH3+]"
    assert repair_mol(None) is None
    # the same repair on a graph decoded without sanitisation: N bonded to four carbons
    vocab = GraphVocab(atoms=(("C", 0), ("N", 0)))
    atoms = torch.tensor([1, 0, 0, 0, 0])
    bonds = torch.zeros(5, 5, dtype=torch.long)
    bonds[0, 1:] = bonds[1:, 0] = 1
    raw = graph_to_mol(atoms, bonds, vocab, sanitize=False)
    assert sanitize_or_none(raw) is None
    assert Chem.MolToSmiles(repair_mol(raw)) == "C[N+](C)(C)C"
    assert molecule_metrics([raw])["validity_repaired"] == 1.0


def test_disconnected_counts_valid_and_uses_largest_fragment():
    m = molecule_metrics(["CCO.C", "CCO", "CC.CC"])
    assert m["validity"] == 1.0
    assert m["validity_connected"] == pytest.approx(1 / 3)
    assert m["frac_connected"] == pytest.approx(1 / 3)
    assert m["uniqueness"] == pytest.approx(2 / 3)  # CCO.C -> CCO duplicates CCO
    assert Chem.MolToSmiles(largest_fragment(Chem.MolFromSmiles("C.CCN.O"))) == "CCN"


def test_total_variation_and_distribution_distances():
    assert total_variation({"a": 1, "b": 1}, {"a": 5}) == pytest.approx(0.5)
    assert total_variation({"a": 2}, {"a": 7}) == 0.0
    assert total_variation({}, {"a": 1}) == 1.0
    ref = ["CCO", "c1ccccc1", "C1CC1"]
    m = molecule_metrics(ref, reference=ref)
    assert (m["atom_tv"], m["bond_tv"], m["ring_tv"]) == (0.0, 0.0, 0.0)
    stats = reference_stats(["CC=O", "C1CCC1"])
    assert stats.atoms == {"C": 6, "O": 1}
    assert stats.bonds == {"SINGLE": 5, "DOUBLE": 1}
    assert stats.rings == {4: 1}
    m = molecule_metrics(["C1CC1", "CC[NH3+]"], reference=stats)
    # rings {3: 1} vs {4: 1} -> 1; atoms C 5/6, N+ 1/6 vs C 6/7, O 1/7 -> (1/42 + 7/42 + 6/42) / 2
    assert m["ring_tv"] == pytest.approx(1.0)
    assert m["atom_tv"] == pytest.approx(1 / 6)
    assert m["bond_tv"] == pytest.approx(1 / 6)  # all single vs 5/6 single
    with pytest.raises(ValueError):
        reference_stats(["None", "xyz"])


def test_canonical_set_and_bad_inputs():
    assert canonical_set(["OCC", "CCO", "bad"]) == {"CCO"}
    assert canonical_set(["OCC", ""], canonicalize=False) == {"OCC"}
    with pytest.raises(ValueError):
        molecule_metrics([])
    with pytest.raises(TypeError):
        molecule_metrics([3.5])
    with pytest.raises(ValueError):
        molecule_metrics(["CCO"], fcd=True)


def test_fcd_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "fcd", None)  # import fcd now raises ImportError
    with pytest.raises(ImportError, match="fcd==1.2.2"):
        frechet_chemnet_distance(["CCO", "CCN"], ["CCC", "CCCl"])


def test_format_metrics_table():
    text = format_metrics_table(
        {"ours": {"validity": 0.5, "fcd": 1.23456}, "paper": {"validity": 0.99, "fcd": None}}
    )
    lines = text.splitlines()
    assert lines[0].split() == ["validity", "fcd"]
    assert lines[2].split() == ["ours", "50.00", "1.2346"]
    assert lines[3].split() == ["paper", "99.00", "-"]


def test_digress_qm9_anchor_reproduces_sample_file_counts():
    """DiGress's QM9 (no H) samples: 79 'None' in 10,000 -> validity 99.21 %; 9,611 distinct."""
    path = ANCHORS / "final_smiles_qm9_noH.txt"
    if not path.exists():
        raise FileNotFoundError(f"DiGress anchor file {path} is missing (set DIGRESS_ANCHORS)")
    lines = path.read_text().splitlines()
    m = molecule_metrics(lines[:2000])
    n_none = sum(s == "None" for s in lines[:2000])
    assert m["validity"] == pytest.approx(1 - n_none / 2000)
    distinct = {s for s in lines[:2000] if s != "None"}
    assert m["uniqueness"] == pytest.approx(len(distinct) / (2000 - n_none))
