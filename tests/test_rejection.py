"""Rejection of flawed samples: each check names exactly the molecules it should, and a rejecting
run redraws those samples alone (same node counts), keeps every first draw that passed, stops
after its rounds and counts what it did."""

from __future__ import annotations

import pytest
import torch

from discdiff.chem.filters import MOTIFS
from discdiff.chem.graph import GraphVocab, contains_scaffold, graph_to_mol, mol_to_graph
from discdiff.chem.rejection import REJECTABLE, Rejection, RejectionStats
from discdiff.tasks.molecules import load_pretrained, shipped_checkpoint

VOCAB = GraphVocab.qm9()

#: one molecule per motif of the filters, each flagged by that motif first
MOTIF_EXAMPLES = {
    "alkene_3ring": "CC1=CC1",
    "alkene_4ring": "C1=CCC1",
    "triple_in_ring": "C1#CCCCCCC1",
    "allene": "CC=C=CC",
    "enol": "CC(O)=CC",
    "acyl_fluoride": "CC(F)=O",
    "vinyl_fluoride": "CC(F)=CC",
    "peroxide": "COOC",
}


@pytest.fixture(scope="module")
def shipped():
    return load_pretrained(shipped_checkpoint())


def test_every_motif_has_its_example() -> None:
    assert set(MOTIF_EXAMPLES) == set(MOTIFS)
    assert REJECTABLE == ("invalid", "disconnected", *MOTIFS)


@pytest.mark.parametrize("name,smiles", sorted(MOTIF_EXAMPLES.items()))
def test_each_motif_check_flags_its_example_and_only_when_asked(name, smiles) -> None:
    graph = mol_to_graph(smiles, VOCAB)
    assert Rejection().flaw(graph, VOCAB) == name
    assert Rejection(checks=(name,)).flaw(graph, VOCAB) == name
    others = tuple(c for c in REJECTABLE if c != name)
    assert Rejection(checks=others).flaw(graph, VOCAB) is None


@pytest.mark.parametrize(
    "smiles", ["CCO", "Oc1ccccc1", "CC(=O)C", "C1CC1", "N#CC#N", "OCC(O)CO", "c1ccoc1", "CC=CC"]
)
def test_clean_molecules_pass(smiles) -> None:
    """Phenol's O-H sits on a kekulized ring C=C in the graph: aromatic, so not an enol."""
    assert Rejection().flaw(mol_to_graph(smiles, VOCAB), VOCAB) is None


def test_pieces_and_invalid_graphs() -> None:
    pieces = mol_to_graph("CC.O", VOCAB)
    assert Rejection().flaw(pieces, VOCAB) == "disconnected"
    assert Rejection(checks=("enol",)).flaw(pieces, VOCAB) is None
    atoms, bonds = mol_to_graph("CC(C)(C)C", VOCAB)
    bonds = bonds.clone()
    bonds[0, 1] = bonds[1, 0] = 2  # a pentavalent carbon: RDKit refuses it
    assert Rejection().flaw((atoms, bonds), VOCAB) == "invalid"
    assert Rejection(checks=("disconnected",)).flaw((atoms, bonds), VOCAB) is None
    # the first failed check is named, in REJECTABLE's order: pieces before a motif
    assert Rejection().flaw(mol_to_graph("OC=C.C", VOCAB), VOCAB) == "disconnected"


@pytest.mark.parametrize(
    "kw", [{"checks": ("nope",)}, {"checks": ()}, {"rounds": 0}, {"rounds": True}, {"rounds": 1.5}]
)
def test_bad_settings_are_one_line_errors(kw) -> None:
    with pytest.raises(ValueError, match="rejection"):
        Rejection(**kw)


def test_a_rejecting_run_redraws_the_flawed_samples_alone(shipped) -> None:
    """Few steps, so that first draws are often flawed: with the same seed, every sample that
    passed on its first draw is the plain run's sample, the others are redrawn with their node
    count, and what is returned is flawed only as often as the stats say."""
    model, task = shipped
    n, steps = 120, 6
    kw = dict(steps=steps, batch_size=50, motif_guard=False)
    plain = task.sample_graphs(model, n, generator=torch.Generator().manual_seed(3), **kw)
    rej = Rejection()
    first = rej.flawed(plain, VOCAB, range(n))
    assert len(first) >= 3, f"too few flawed first draws to test with: {first}"
    stats = RejectionStats()
    got = task.sample_graphs(
        model, n, generator=torch.Generator().manual_seed(3), reject=rej, stats=stats, **kw
    )
    assert len(got) == n
    for i in range(n):
        assert got[i][0].shape == plain[i][0].shape  # node counts kept
        if i not in first:
            assert torch.equal(got[i][0], plain[i][0]) and torch.equal(got[i][1], plain[i][1])
    assert stats.redrawn >= len(first) and 1 <= stats.rounds <= rej.rounds
    assert sum(stats.by_check.values()) == stats.redrawn
    assert sorted(stats.by_check) == sorted(set(stats.by_check) & set(REJECTABLE))
    assert len(rej.flawed(got, VOCAB, range(n))) == stats.kept_flawed
    assert stats.kept_flawed < len(first)
    again = task.sample_graphs(
        model, n, generator=torch.Generator().manual_seed(3), reject=rej, **kw
    )  # same seed, same samples
    assert all(torch.equal(a[1], b[1]) for a, b in zip(got, again, strict=True))


class _Never(Rejection):
    """A check nothing passes: every round redraws everything."""

    def flaw(self, graph, vocab):  # type: ignore[override]
        return "enol"


def test_rounds_end_and_the_last_draw_is_kept(shipped) -> None:
    model, task = shipped
    stats = RejectionStats()
    gen = torch.Generator().manual_seed(0)
    got = task.sample_graphs(model, 7, steps=2, generator=gen, reject=_Never(rounds=2), stats=stats)
    assert len(got) == 7
    assert (stats.redrawn, stats.rounds, stats.kept_flawed) == (14, 2, 7)
    assert stats.by_check == {"enol": 14}
    assert "14 (enol 14) in 2 round(s); 7 kept with a flaw" in stats.summary()
    # added to over calls (the benchmark samples in two calls)
    task.sample_graphs(model, 3, steps=2, generator=gen, reject=_Never(rounds=1), stats=stats)
    assert (stats.redrawn, stats.rounds, stats.kept_flawed) == (17, 2, 10)
    assert RejectionStats().summary().startswith("rejected: none")


def test_a_scaffold_survives_rejection(shipped) -> None:
    """Redraws keep the scaffold: every sample (valid by the valence guard) contains it."""
    model, task = shipped
    got = task.sample_graphs(
        model, 12, steps=4, scaffold="c1ccoc1", generator=torch.Generator().manual_seed(1),
        reject=Rejection(), stats=(stats := RejectionStats()),
    )  # fmt: skip
    mols = [graph_to_mol(a, b, VOCAB) for a, b in got]
    assert all(m is not None for m in mols)
    assert all(contains_scaffold(m, "c1ccoc1") for m in mols)
    assert stats.rounds <= Rejection().rounds
