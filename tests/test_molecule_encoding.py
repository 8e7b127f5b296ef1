"""Encoding training SMILES: the parallel and cached paths give exactly the serial result."""

from __future__ import annotations

import pytest
import torch

from discdiff.chem.graph import GraphVocab
from discdiff.tasks.molecules import encoding as me
from discdiff.tasks.molecules.data import load_training_smiles, prepare_molecule_data

BAD = ["C1CC", "not a smiles", "[Na+].[Cl-]", "C[C@H](N)C(=O)O"]  # ring open, junk, Na, 6 atoms


def _smiles(n: int = 240) -> list[str]:
    good = load_training_smiles("qm9", "train")[:n]
    return good[:50] + BAD + good[50:]


def _same(a, b) -> None:
    graphs_a, skipped_a, shown_a = a
    graphs_b, skipped_b, shown_b = b
    assert skipped_a == skipped_b and shown_a == shown_b
    assert len(graphs_a) == len(graphs_b)
    for (xa, ea), (xb, eb) in zip(graphs_a, graphs_b, strict=True):
        assert xa.dtype == xb.dtype == torch.long and torch.equal(xa, xb) and torch.equal(ea, eb)


def test_serial_parallel_and_cached_agree(tmp_path, monkeypatch):
    vocab, smiles = GraphVocab.qm9(), _smiles()
    want = me.encode_with_reasons(smiles, vocab, max_nodes=8)
    assert want[1] >= 3 and len(want[0]) > 0  # the bad lines and the >8-atom ones are skipped
    assert any(line.startswith("line 51 'C1CC'") for line in me.encode_with_reasons(
        smiles, vocab, max_nodes=8, show=1000)[2])  # fmt: skip
    seen = []
    serial = me.encode_smiles(smiles, vocab, 8, cache=False, progress=lambda d, t: seen.append(d))
    _same(serial, want)
    assert seen[-1] == len(smiles)
    monkeypatch.setattr(me, "PARALLEL_FROM", 10)
    monkeypatch.setattr(me, "_CHUNK", 50)
    _same(me.encode_smiles(smiles, vocab, 8, workers=2, cache=False), want)
    _same(me.encode_smiles(smiles, vocab, 8, cache=tmp_path), want)  # writes the cache
    files = list((tmp_path / "graphs").glob("*.safetensors"))
    assert len(files) == 1

    def boom(args):
        raise AssertionError("encoded again although the cache holds it")

    monkeypatch.setattr(me, "_encode_chunk", boom)
    _same(me.encode_smiles(smiles, vocab, 8, cache=tmp_path), want)  # read back
    with pytest.raises(AssertionError, match="encoded again"):  # another max_nodes: another key
        me.encode_smiles(smiles, vocab, 9, cache=tmp_path)
    files[0].write_bytes(b"garbage")  # a damaged cache is encoded again, not trusted
    with pytest.raises(AssertionError, match="encoded again"):
        me.encode_smiles(smiles, vocab, 8, cache=tmp_path)


def test_prepare_uses_the_cache(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("\n".join(_smiles(60)) + "\n")
    first = prepare_molecule_data(str(path), cache=tmp_path / "c")
    again = prepare_molecule_data(str(path), cache=tmp_path / "c")
    assert first.report() == again.report()
    _same((first.graphs, first.skipped, first.skipped_examples),
          (again.graphs, again.skipped, again.skipped_examples))  # fmt: skip
