"""Medicinal-chemistry filters by name: each rule on molecules whose verdict is known, property
bounds, one-line errors, and the counts the sample command prints."""

from __future__ import annotations

import pytest
from rdkit import Chem

from discdiff.chem.medchem import MEDCHEM, medchem_counts, parse_medchem

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"


@pytest.mark.parametrize(
    "name,smiles,flagged",
    [("lipinski", ASPIRIN, False),
     ("lipinski", "C" * 37, True),  # MW 521 and logP 14.5: two violations
     ("lipinski", "C" * 30 + "O", False),  # only logP: one violation is allowed
     ("veber", ASPIRIN, False), ("veber", "C" * 16, True),  # 13 rotatable bonds
     ("reos", ASPIRIN, True),  # MW 180, 13 heavy atoms: under REOS's ranges
     ("reos", IBUPROFEN, False),
     ("brenk", "O=Cc1ccccc1", True), ("brenk", "CCO", False),  # an aldehyde alert
     ("halogen_heteroatom", "ClN1CCCC1", True), ("halogen_heteroatom", "ClC1CCCC1", False)],
)  # fmt: skip
def test_each_rule_on_molecules_whose_verdict_is_known(name, smiles, flagged):
    assert MEDCHEM.get(name)(Chem.MolFromSmiles(smiles)) is flagged


def test_property_bounds_and_counts():
    rules = parse_medchem("lipinski, qed>=0.5,mw<=150")
    assert list(rules) == ["lipinski", "qed>=0.5", "mw<=150"]
    mols = [Chem.MolFromSmiles(s) for s in (ASPIRIN, "CCO", IBUPROFEN)]
    counts = medchem_counts(mols, rules)
    # QED: aspirin 0.55, ethanol 0.41, ibuprofen 0.82; MW 180, 46, 206
    assert counts == {"lipinski": 0, "qed>=0.5": 1, "mw<=150": 2, "any": 3, "checked": 3}


@pytest.mark.parametrize(
    "spec,msg",
    [("lipinksi", "not a filter"), ("sa<4", "NAME<=X or NAME>=X"), ("", "at least one"),
     ("nope<=3", "unknown property")],
)  # fmt: skip
def test_bad_filters_are_one_line_errors(spec, msg):
    with pytest.raises(ValueError, match=msg) as err:
        parse_medchem(spec)
    assert len(str(err.value).splitlines()) == 1


def test_sample_prints_the_counts_and_refuses_a_bad_filter_before_sampling(tmp_path, capsys):
    from discdiff.cli.main import main

    out = tmp_path / "m.smi"
    argv = ["molecules", "sample", "-n", "6", "--steps", "4", "--out", str(out), "--no-progress",
            "--no-novelty", "--filter", "lipinski,reos,sa<=4"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "medchem filters (of 6 valid): lipinski 0, reos 6, sa<=4" in text  # QM9-sized
    assert main([*argv[:-1], "lipinksi"]) == 2
    assert "not a filter" in capsys.readouterr().err
