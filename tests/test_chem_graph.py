"""RDKit <-> categorical graph conversion, dense triangle fields and PyG batching."""

from __future__ import annotations

import json
import random

import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from discdiff.chem.graph import (
    GraphVocab,
    canonical_smiles,
    dense_fields_to_graphs,
    dense_to_triu,
    encode_smiles,
    from_pyg_batch,
    graph_to_mol,
    graph_to_smiles,
    mol_to_graph,
    node_count_histogram,
    num_edges,
    sample_node_counts,
    to_dense_fields,
    to_pyg,
    triu_to_dense,
)
from discdiff.datasets.qm9 import load_qm9


def _random_graph(n: int, g: torch.Generator, ka: int = 4, kb: int = 4):
    atoms = torch.randint(0, ka, (n,), generator=g)
    upper = torch.randint(0, kb, (n, n), generator=g).triu(1)
    return atoms, upper + upper.T


def test_vocab_json_round_trip_and_presets():
    for vocab in [GraphVocab.qm9(), GraphVocab.qm9(explicit_h=True), GraphVocab.moses(False)]:
        back = GraphVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
        assert back == vocab
    assert GraphVocab.qm9().num_bond_classes == 4
    assert GraphVocab.moses(kekulize=False).num_bond_classes == 5
    assert GraphVocab.qm9().atom_index("N", 1) == 4
    assert GraphVocab.qm9().atom_index("S", 0) is None


def test_vocab_from_smiles_orders_by_frequency_neutral_first():
    vocab = GraphVocab.from_smiles(["CCO", "CC[NH3+]", "not a smiles", "CCCCF"])
    assert vocab.atoms == (("C", 0), ("F", 0), ("O", 0), ("N", 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"atoms": ()},
        {"atoms": (("Xx", 0),)},
        {"atoms": (("C", 0), ("C", 0))},
        {"atoms": (("C", 0),), "explicit_h": True},
    ],
)
def test_vocab_rejects_bad_atoms(kwargs):
    with pytest.raises(ValueError):
        GraphVocab(**kwargs)


def test_mol_to_graph_known_molecules():
    vocab = GraphVocab.qm9()
    atoms, bonds = mol_to_graph("C=O", vocab)
    assert atoms.tolist() == [0, 2]
    assert bonds.tolist() == [[0, 2], [2, 0]]
    atoms, bonds = mol_to_graph("c1ccccc1", vocab)  # kekulized: 3 single + 3 double
    assert sorted(bonds.triu(1)[bonds.triu(1) > 0].tolist()) == [1, 1, 1, 2, 2, 2]
    _, bonds = mol_to_graph("c1ccccc1", GraphVocab.qm9(kekulize=False))
    assert bonds.triu(1)[bonds.triu(1) > 0].tolist() == [4] * 6
    atoms, bonds = mol_to_graph("C", GraphVocab.qm9(explicit_h=True))
    assert atoms.tolist() == [0, 4, 4, 4, 4] and int((bonds > 0).sum()) == 8


def test_bad_inputs_raise_or_are_counted():
    vocab = GraphVocab.qm9()
    with pytest.raises(ValueError):
        mol_to_graph("C1CC", vocab)  # unclosed ring
    with pytest.raises(ValueError):
        mol_to_graph("CCS", vocab)  # S is not a QM9 atom
    with pytest.raises(ValueError):
        mol_to_graph("[CH3]", vocab)  # radical
    with pytest.raises(TypeError):
        mol_to_graph(3, vocab)
    graphs, skipped = encode_smiles(["CCO", "C1CC", "CCS", "xyz", "c1cc[nH]c1"], vocab)
    assert (len(graphs), skipped) == (2, 3)
    # an aromatic [nH] is read back from its ring; the round-trip check still drops the rest
    graphs, skipped = encode_smiles(
        ["c1cc[nH]c1", "c1ccccc1", "CCS"], GraphVocab.qm9(kekulize=False)
    )
    assert (len(graphs), skipped) == (2, 1)


def test_graph_to_mol_validates_shapes_and_values():
    vocab = GraphVocab.qm9()
    atoms = torch.tensor([0, 0])
    with pytest.raises(ValueError):
        graph_to_mol(atoms, torch.zeros(3, 3, dtype=torch.long), vocab)
    with pytest.raises(ValueError):
        graph_to_mol(atoms[None], torch.zeros(2, 2, dtype=torch.long), vocab)
    with pytest.raises(ValueError):
        graph_to_mol(atoms, torch.tensor([[0, 1], [0, 0]]), vocab)  # not symmetric
    with pytest.raises(ValueError):
        graph_to_mol(atoms, torch.tensor([[0, 4], [4, 0]]), vocab)  # aromatic, kekulized vocab
    with pytest.raises(ValueError):
        graph_to_mol(torch.tensor([0, 99]), torch.zeros(2, 2, dtype=torch.long), vocab)


def test_invalid_valence_gives_none():
    vocab = GraphVocab.qm9()
    atoms = torch.zeros(6, dtype=torch.long)  # six carbons, the first bonded to all others
    bonds = torch.zeros(6, 6, dtype=torch.long)
    bonds[0, 1:] = bonds[1:, 0] = 1
    assert graph_to_mol(atoms, bonds, vocab) is None
    assert graph_to_smiles(atoms, bonds, vocab) is None
    assert graph_to_mol(atoms, bonds, vocab, sanitize=False) is not None


def test_qm9_round_trip_on_1000_molecules():
    """SMILES -> graph -> SMILES is the identity (canonical) on a fixed QM9 sample."""
    smiles = random.Random(0).sample(load_qm9("train"), 1000)
    for vocab, subset in [
        (GraphVocab.qm9(), smiles),
        (GraphVocab.qm9(explicit_h=True), smiles[:300]),
    ]:
        for s in subset:
            atoms, bonds = mol_to_graph(s, vocab)
            assert graph_to_smiles(atoms, bonds, vocab) == canonical_smiles(s), s
    graphs, skipped = encode_smiles(smiles[:200], GraphVocab.qm9())
    assert (len(graphs), skipped) == (200, 0)
    assert Chem.MolFromSmiles(graph_to_smiles(*graphs[0], GraphVocab.qm9())) is not None


def test_triu_dense_round_trip_and_symmetry():
    g = torch.Generator().manual_seed(0)
    for n in [1, 2, 5, 9]:
        triu = torch.randint(0, 5, (3, num_edges(n)), generator=g)
        dense = triu_to_dense(triu, n)
        assert dense.shape == (3, n, n)
        assert torch.equal(dense, dense.transpose(1, 2))
        assert torch.equal(
            torch.diagonal(dense, dim1=1, dim2=2), torch.zeros(3, n, dtype=dense.dtype)
        )
        assert torch.equal(dense_to_triu(dense), triu)
        # brute force: the k-th stored edge is the k-th (i < j) pair in row-major order
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        for k, (i, j) in enumerate(pairs):
            assert torch.equal(dense[:, i, j], triu[:, k])
    logits = torch.randn(2, num_edges(4), 5, generator=g)  # trailing class dimension
    assert torch.equal(dense_to_triu(triu_to_dense(logits, 4)), logits)
    with pytest.raises(ValueError):
        triu_to_dense(torch.zeros(2, 5), 4)
    with pytest.raises(ValueError):
        dense_to_triu(torch.zeros(2, 3, 4))


def test_dense_fields_padding_masks_and_inverse():
    g = torch.Generator().manual_seed(1)
    graphs = [_random_graph(n, g) for n in [3, 1, 5, 4]]
    f = to_dense_fields(graphs, max_nodes=6)
    assert f["atoms"].shape == (4, 6) and f["bonds"].shape == (4, num_edges(6))
    assert f["node_mask"].sum(1).tolist() == [3, 1, 5, 4]
    dense = triu_to_dense(f["bonds"], 6)
    for k, (a, b) in enumerate(graphs):
        n = len(a)
        assert torch.equal(f["atoms"][k, :n], a) and int(f["atoms"][k, n:].abs().sum()) == 0
        assert torch.equal(dense[k, :n, :n], b) and int(dense[k].abs().sum()) == int(b.abs().sum())
        m = triu_to_dense(f["edge_mask"].long(), 6)[k].bool()
        assert int(m.sum()) == n * (n - 1) and bool(m[:n, :n].sum() == n * (n - 1))
    back = dense_fields_to_graphs(f["atoms"], f["bonds"], f["node_mask"])
    for (a, b), (a2, b2) in zip(graphs, back, strict=True):
        assert torch.equal(a, a2) and torch.equal(b, b2)
    with pytest.raises(ValueError):
        to_dense_fields(graphs, max_nodes=4)
    with pytest.raises(ValueError):
        to_dense_fields([(torch.zeros(3, dtype=torch.long), torch.zeros(2, 2))], max_nodes=4)


def test_pyg_batch_matches_dense_collate():
    g = torch.Generator().manual_seed(2)
    graphs = [_random_graph(n, g) for n in [4, 2, 7, 1]]
    batch = Batch.from_data_list([to_pyg(a, b) for a, b in graphs])
    ours = from_pyg_batch(batch, max_nodes=8)
    ref = to_dense_fields(graphs, max_nodes=8)
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key
    single = from_pyg_batch(to_pyg(*graphs[2]), max_nodes=7)
    assert torch.equal(single["bonds"][0], to_dense_fields(graphs[2:3], 7)["bonds"][0])
    with pytest.raises(ValueError):
        from_pyg_batch(batch, max_nodes=5)


def test_node_count_histogram_and_sampling():
    g = torch.Generator().manual_seed(3)
    hist = node_count_histogram([2, 3, 3, 5, (torch.zeros(3), torch.zeros(3, 3))], max_nodes=6)
    assert torch.allclose(hist, torch.tensor([0, 0, 1, 3, 0, 1, 0], dtype=torch.float64) / 5)
    draws = sample_node_counts(hist, 20_000, generator=g)
    freq = torch.bincount(draws, minlength=7).double() / 20_000
    se = (hist * (1 - hist) / 20_000).sqrt()
    assert bool(((freq - hist).abs() <= 5 * se + 1e-12).all())
    again = sample_node_counts(hist, 50, torch.Generator().manual_seed(4))
    assert torch.equal(again, sample_node_counts(hist, 50, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError):
        node_count_histogram([7], max_nodes=6)


def test_contains_scaffold_sees_through_aromaticity():
    from rdkit import Chem

    from discdiff.chem.graph import contains_scaffold

    pyridone = Chem.MolFromSmiles("C=Cc1nncc(=O)[nH]1")  # its C(=O)N is aromatic in RDKit
    assert not pyridone.HasSubstructMatch(Chem.MolFromSmiles("CC(=O)N"))
    assert contains_scaffold(pyridone, "CC(=O)N")
    assert contains_scaffold(Chem.MolFromSmiles("Cc1ccoc1"), "c1ccoc1")
    assert contains_scaffold(Chem.MolFromSmiles("CCc1ccccc1"), "c1ccccc1")
    assert not contains_scaffold(Chem.MolFromSmiles("CCCO"), "CC(=O)N")
    assert not contains_scaffold(Chem.MolFromSmiles("C1CCCCC1"), "c1ccccc1")


def test_aromatic_bonds_read_back_pyrroles_and_tautomers():
    """With an aromatic bond class a ring N's hydrogen is not in the graph: the reading puts it
    on as few nitrogens as make the ring kekulize, and an azole whose H lands on the other
    nitrogen counts as the same molecule (one standard InChI); kekulized graphs are exact."""
    from discdiff.chem.graph import decodes_to

    arom = GraphVocab.qm9(kekulize=False)
    for s in ["c1cc[nH]c1", "O=c1cccc[nH]1", "Cc1ncc[nH]1", "c1ccc2ccccc2c1", "O=c1ccocc1"]:
        atoms, bonds = mol_to_graph(s, arom)
        assert int((bonds == 4).sum()) > 0
        assert graph_to_smiles(atoms, bonds, arom) == canonical_smiles(s), s
    # the unsanitised molecule (what metrics and repair start from) is read the same way
    raw = graph_to_mol(*mol_to_graph("Cc1ncc[nH]1", arom), arom, sanitize=False)
    Chem.SanitizeMol(raw)
    assert canonical_smiles(raw) == canonical_smiles("Cc1ncc[nH]1")
    s = "Cc1nc(OC=O)c[nH]1"  # reads back as its tautomer Cc1ncc(OC=O)[nH]1
    atoms, bonds = mol_to_graph(s, arom)
    assert graph_to_smiles(atoms, bonds, arom) != canonical_smiles(s)
    assert decodes_to(atoms, bonds, arom, s)
    atoms, bonds = mol_to_graph("c1ccccc1", arom)
    assert not decodes_to(atoms, bonds, arom, "c1ccncc1")  # another molecule is not a tautomer
    smiles = random.Random(1).sample(load_qm9("train"), 400)
    _, skipped = encode_smiles(smiles, arom)
    assert skipped <= 4  # the kekulized vocabulary skips none; the aromatic about 0.3%
