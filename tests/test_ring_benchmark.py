"""benchmarks/molecule_rings.py: its ring kinds name what a chemist would (aromatic by size, the
other rings by size and double bonds)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from rdkit import Chem

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "molecule_rings.py"


@pytest.fixture(scope="module")
def rings():
    sys.path.insert(0, str(SCRIPT.parent))  # it imports its neighbour molecule_metrics.py
    spec = importlib.util.spec_from_file_location("molecule_rings", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "smiles,kinds",
    [
        ("c1ccccc1", {"aromatic6", "any aromatic ring"}),
        ("C1=CCC=CC1", {"ring6 + 2 C=C"}),
        ("C1=CC=CC1", {"ring5 + 2 C=C"}),
        ("C1CCCCC1", {"ring6, saturated"}),
        ("c1ccoc1", {"aromatic5", "any aromatic ring"}),
        ("C1CC1c1ccccc1", {"ring3, saturated", "aromatic6", "any aromatic ring"}),
        ("CCO", set()),
    ],
)
def test_ring_kinds(rings, smiles, kinds) -> None:
    assert rings.ring_kinds(Chem.MolFromSmiles(smiles)) == kinds


def test_profile_is_a_percentage_of_molecules(rings) -> None:
    mols = [Chem.MolFromSmiles(s) for s in ("c1ccccc1", "c1ccccc1C1CC1", "CCO", "C1CC1")]
    got, n = rings.profile(mols)
    assert n == 4
    assert got == {"aromatic6": 50.0, "any aromatic ring": 50.0, "ring3, saturated": 50.0}
