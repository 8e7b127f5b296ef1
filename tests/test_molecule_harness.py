"""benchmarks/count_molecules.py (the independent RDKit count) and benchmarks/molecule_harness.py
(the library's metric code beside it): known answers, and the two paths agreeing on real QM9
molecules where they count the same thing."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from discdiff.datasets.qm9 import load_qm9

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCH))  # the harness imports its neighbour count_molecules.py
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cm():
    return _module("count_molecules")


@pytest.fixture(scope="module")
def harness():
    return _module("molecule_harness")


def test_counts_on_a_hand_made_set(cm, tmp_path) -> None:
    f = tmp_path / "s.smi"
    f.write_text(
        "CCO\ts0\tstrict\nOCC\ts1\tstrict\nc1ccccc1\ts2\tstrict\nC.CC\ts3\tstrict\n"
        "C(C)(C)(C)(C)C\ts4\tinvalid\nCC(C)(C)(C)(C)C\ts5\tstrict\nNone\n\n"
    )
    samples = cm.read_samples(f)
    assert samples == ["CCO", "OCC", "c1ccccc1", "C.CC", None, "CC(C)(C)(C)(C)C", None]
    out = cm.count(samples, {"train": {"CCO"}, "test": {"c1ccccc1", "CCCC"}})
    assert out["samples"] == 7 and out["valid_molecules"] == 4  # a pentavalent C is not valid
    assert out["valid"][0] == pytest.approx(4 / 7)
    assert out["valid"][1] == pytest.approx(math.sqrt(4 / 7 * 3 / 7 / 7))
    assert out["connected"][0] == pytest.approx(3 / 7)
    assert out["aromatic"][0] == pytest.approx(1 / 4)
    assert out["unique"][0] == pytest.approx(3 / 4)  # CCO twice
    assert out["novel_vs_train"][0] == pytest.approx(2 / 3)
    assert out["novel_vs_test"][0] == pytest.approx(2 / 3)
    assert out["novel_vs_all"][0] == pytest.approx(1 / 3)  # only C.CC is new to both
    assert out["ring_kinds"] == {
        "any aromatic ring": pytest.approx((1 / 4, math.sqrt(3 / 16 / 4))),
        "aromatic6": pytest.approx((1 / 4, math.sqrt(3 / 16 / 4))),
    }
    assert "atom_tv" not in out  # no reference given


def test_wasserstein_1_against_sorted_pairs(cm) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.4, 2.0, size=300)
    # equal sizes: W1 is the mean distance between the sorted samples
    assert cm.wasserstein_1(a, b) == pytest.approx(np.abs(np.sort(a) - np.sort(b)).mean())
    assert cm.wasserstein_1(np.array([0.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert math.isnan(cm.wasserstein_1(np.array([]), b))


def test_distances_are_zero_to_itself_and_known_for_a_shift(cm) -> None:
    ref = cm.reference_profile(["CCO", "CCN", "c1ccccc1"])
    same = cm.distances(cm.reference_profile(["CCO", "CCN", "c1ccccc1"]), ref, 20, 0)
    assert all(v == pytest.approx(0.0) for v, _ in same.values())
    # ethanol against propanol: MW differs by one CH2; atom shares C 2/3 vs 3/4
    far = cm.distances(cm.reference_profile(["CCCO"]), cm.reference_profile(["CCO"]), 1, 0)
    assert far["mw_w1"][0] == pytest.approx(14.027, abs=1e-3)
    assert far["atom_tv"][0] == pytest.approx(3 / 4 - 2 / 3)
    assert far["ring_tv"][0] == 0.0 and math.isnan(far["ring_tv"][1])  # one draw: no SE


@pytest.fixture(scope="module")
def small(harness):
    """A small QM9 stand-in: 400 / 100 / 100 molecules and 150 samples made of training, test
    and new molecules, failures and a disconnected pair."""
    train, val, test = load_qm9("train")[:400], load_qm9("val")[:100], load_qm9("test")[:200]
    data = harness.Data("qm9", {"train": train, "val": val, "test": test[:100]}, test[100:])
    rng = random.Random(0)
    samples = train[:60] + test[:40] + load_qm9("train")[5000:5040] + [None] * 8 + ["CCO.CC"]
    samples += ["CCO"]
    rng.shuffle(samples)
    return data, samples


def test_library_and_independent_count_agree_on_qm9_molecules(harness, small) -> None:
    data, samples = small
    row = harness.score(samples, data, bootstrap=20, fcd=False)
    lib, ind = row["library"], row["independent"]
    for lib_key, ind_key, label, _ in harness.PAIRS:
        assert lib[lib_key] == pytest.approx(ind[ind_key][0], abs=1e-9), label
        assert not harness.differs(lib[lib_key], ind[ind_key])
    assert ind["valid"][0] == pytest.approx(142 / 150)
    assert ind["novel_vs_train"][0] < ind["novel_vs_val"][0]  # 60 of the samples are training ones
    assert all(math.isfinite(ind[k][1]) and ind[k][1] > 0 for k in ("atom_tv", "mw_w1"))
    text = harness.report({"ours default": row | {"targets": []}}, data)
    assert "!" not in text.split("each cell")[0] and "aromatic6" in text


def test_differs_marks_gaps_beyond_three_standard_errors(harness) -> None:
    assert not harness.differs(0.50, (0.52, 0.01))
    assert harness.differs(0.50, (0.54, 0.01))
    assert harness.differs(0.5, (0.5 + 1e-6, float("nan")))  # no SE: exact agreement asked


def test_targets_follow_the_row_kind(harness, small) -> None:
    data, samples = small
    row = harness.score(samples, data, bootstrap=5, fcd=False)
    raw = harness.targets("m raw", row, data)
    assert raw == [("strict validity >= 99%", False)]  # 8 failures in 150
    default = dict(harness.targets("m default", row, data))
    assert set(default) == {
        "aromatic 14-19%", "atom TV <= 0.0023", "bond TV <= 0.0035", "uniqueness >= 97%",
        "novelty vs all of QM9 >= 35%",
    }  # fmt: skip
    assert default["novelty vs all of QM9 >= 35%"] is False  # 100 of 141 unique are in a split
    assert harness.targets("DiGress qm9", row, data) == []


def test_harness_main_writes_its_table_and_json(harness, small, tmp_path, monkeypatch, capsys):
    data, samples = small
    monkeypatch.setattr(harness.Data, "load", classmethod(lambda cls, name: data))
    f = tmp_path / "ours.smi"
    f.write_text("".join(f"{s or 'None'}\n" for s in samples))
    out = tmp_path / "h.json"
    assert harness.main([f"ours raw={f}", "--no-digress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "valid (strict)" in text and "targets (ours raw): 0 of 1 met" in text
    saved = json.loads(out.read_text())
    assert saved["rows"]["ours raw"]["independent"]["samples"] == 150
    assert saved["reference"]["samples"] == 100
    with pytest.raises(SystemExit):
        harness.main([f"ours={tmp_path / 'missing.smi'}", "--no-digress"])


def test_ring_kinds_of_the_counter(cm) -> None:
    assert cm.ring_kinds(Chem.MolFromSmiles("C1=CCC=CC1")) == {"ring6 + 2 C=C"}
    assert cm.ring_kinds(Chem.MolFromSmiles("c1ccoc1")) == {"aromatic5", "any aromatic ring"}


def test_card_rows_and_their_check(harness, small) -> None:
    data, samples = small
    row = harness.score(samples, data, bootstrap=20, fcd=False)
    rows = harness.card_rows({"m raw": row, "m default": row, "DiGress qm9": row})
    names = [r["metric"] for r in rows]
    assert names[:2] == ["validity, strict (raw)", "validity, connected (raw)"]
    assert len(rows) == 2 + 12 and "MW W1 vs test (default)" in names
    valid = rows[0]
    assert valid["value"] == pytest.approx(142 / 150, abs=1e-6) and valid["n"] == 150
    assert valid["unit"] == "%" and valid["se"] > 0
    assert "unit" not in rows[-1]
    # a card of the same figures reproduces; one three SEs away does not
    assert all(ok for _, ok, _ in harness.check_card(rows, rows))
    moved = [dict(r, value=r["value"] + 5 * r["se"]) for r in rows]
    checks = harness.check_card(rows, moved)
    assert len(checks) == len(rows) and not any(ok for _, ok, _ in checks)
    assert harness.check_card(rows, [{"metric": names[0], "value": 0.5}]) == []  # no SE: no check


def test_moses_splits_are_compared_as_written_and_its_targets(harness) -> None:
    """MOSES's strings are RDKit-canonical: both paths compare them raw (as MOSES does), so a
    non-canonical spelling in a split does not count as known."""
    train = ["c1ccccc1", "CCOC(=O)c1ccccc1", "Cc1ccc(N)cc1"]
    test = ["c1ccc2ccccc2c1", "OC1CCCCC1"]
    ref = ["c1ccccc1", "c1ccc2ccccc2c1", "OC1CCCCC1", "Cc1ccc(N)cc1"]
    data = harness.Data("moses", {"train": train, "test": test, "test_scaffolds": ["C1CCNCC1"]},
                        ref)  # fmt: skip
    assert data.splits["train"] == set(train) and data.lib_train == set(train)
    samples = ["c1ccccc1", "C1CCCCC1O", "Nc1ccc(C)cc1", "CC"]
    row = harness.score(samples, data, bootstrap=5, fcd=False)
    lib, ind = row["library"], row["independent"]
    for lib_key, ind_key, label, _ in harness.PAIRS:
        assert lib[lib_key] == pytest.approx(ind[ind_key][0], abs=1e-9), label
    # benzene is known; cyclohexanol is new to train, known to test; the toluidine is in train
    assert ind["novel_vs_train"][0] == pytest.approx(2 / 4)
    assert ind["novel_vs_all"][0] == pytest.approx(1 / 4)
    checks = dict(harness.targets("m default", row, data))
    assert checks["100% valid"] and checks["100% connected"]
    assert not checks["novelty >= 90%"]
    assert data.reference_row["ring_sizes"] == pytest.approx({"6": 1.0})
    ring_check = next(k for k in checks if k.startswith("ring sizes"))
    assert checks[ring_check] and "(6)" in ring_check  # only 6-rings on both sides
