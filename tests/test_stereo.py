"""Stereochemistry on request: unassigned elements counted, one isomer drawn per sample with
the run's seed, or every isomer written as its own record; the command line's --stereo."""

from __future__ import annotations

import pytest
from rdkit import Chem

from discdiff.chem.export import decode_samples, write_molecules
from discdiff.chem.stereo import assign_stereo, stereoisomers, unassigned_stereo


def _records(*smiles):
    return decode_samples([Chem.MolFromSmiles(s, sanitize=False) for s in smiles])


@pytest.mark.parametrize(
    "smiles,n",
    [("CC(O)CC", 1), ("C/C=C/C", 0), ("CC=CC", 1), ("CC(O)C(O)CC", 2), ("C[C@H](O)CC", 0),
     ("CCO", 0)],
)  # fmt: skip
def test_unassigned_elements_are_counted(smiles, n):
    assert unassigned_stereo(Chem.MolFromSmiles(smiles)) == n


def test_random_draws_one_isomer_per_sample_with_the_seed_and_enumerate_writes_them_all(
    tmp_path,
):
    recs = _records("CC(O)C(O)CC", "CCO", "C(C)(C)(C)(C)C")  # two centres, none, invalid
    a = assign_stereo(recs, "random", seed=3)
    b = assign_stereo(recs, "random", seed=3)
    assert [r.smiles for r in a] == [r.smiles for r in b] and len(a) == 3
    assert "@" in a[0].smiles and a[1].smiles == "CCO" and not a[2].valid
    seen = {assign_stereo(recs, "random", seed=s)[0].smiles for s in range(40)}
    assert len(seen) == 4  # every isomer can be drawn
    every = assign_stereo(recs, "enumerate")
    assert [r.name for r in every] == [
        "sample_0.0",
        "sample_0.1",
        "sample_0.2",
        "sample_0.3",
        "sample_1",
        "sample_2",
    ]
    assert len({r.smiles for r in every[:4]}) == 4
    assert {r.smiles for r in every[:4]} == {Chem.MolToSmiles(m) for m in
                                             stereoisomers(Chem.MolFromSmiles("CC(O)C(O)CC"))}  # fmt: skip
    out = tmp_path / "s.sdf"
    assert write_molecules(out, every) == 5  # the invalid one left out
    names = [m.GetProp("_Name") for m in Chem.SDMolSupplier(str(out))]
    assert names[:4] == ["sample_0.0", "sample_0.1", "sample_0.2", "sample_0.3"]
    assert assign_stereo(recs, "none") == list(recs)
    with pytest.raises(ValueError, match="stereo must be one of"):
        assign_stereo(recs, "all")


def test_the_command_line_writes_isomeric_smiles_when_asked(tmp_path, capsys):
    from discdiff.cli.main import main

    out = tmp_path / "m.smi"
    base = ["molecules", "sample", "-n", "20", "--steps", "6", "--no-novelty", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main([*base, "--stereo", "random"]) == 0
    text = capsys.readouterr().out
    assert "stereo: " in text and "one stereoisomer drawn for each" in text
    assert "@" in out.read_text()
    assert main([*base, "--stereo", "both"]) == 2
    assert "--stereo 'both' is not one of" in capsys.readouterr().err
