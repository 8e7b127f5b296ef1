"""Rejection of flawed samples: each check names exactly the molecules it should, and a rejecting
run redraws those samples alone (same node counts), keeps every first draw that passed, stops
after its rounds and counts what it did."""

from __future__ import annotations

import pytest
import torch

from discdiff.chem.filters import MOTIFS, RING_RULES
from discdiff.chem.graph import (
    GraphVocab,
    canonical_smiles,
    contains_scaffold,
    graph_to_mol,
    mol_to_graph,
)
from discdiff.chem.metrics import largest_fragment
from discdiff.chem.rejection import (
    MAX_CANDIDATES,
    REJECTABLE,
    Rejection,
    RejectionStats,
    redraw_flawed,
)
from discdiff.tasks.runs import from_pretrained

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
    "bredt": "CN1C2=NCC1C2=O",  # the samples: bicyclo[2.1.1] with a bridgehead C=N
    "diene_6ring": "C1=CCC=CC1",
}


@pytest.fixture(scope="module")
def shipped():
    task, model = from_pretrained("qm9")
    return model, task


def test_every_motif_has_its_example() -> None:
    assert set(MOTIF_EXAMPLES) == set(MOTIFS) | set(RING_RULES)
    assert REJECTABLE == ("invalid", "disconnected", *MOTIFS, *RING_RULES)


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
    "kw",
    [{"checks": ("nope",)}, {"checks": ()}, {"rounds": 0}, {"rounds": True}, {"rounds": 1.5},
     {"max_draws": -1}, {"max_draws": 2.5}],
)  # fmt: skip
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

    def flaw(self, graph, vocab, seen=None):  # type: ignore[override]
        return "enol"


def test_rounds_end_and_the_last_draw_is_kept(shipped) -> None:
    """Nothing passes: each round draws the most candidates (no pass seen) for every sample,
    all rejected but each sample's last, which is kept; the counts say so exactly."""
    model, task = shipped
    stats = RejectionStats()
    gen = torch.Generator().manual_seed(0)
    got = task.sample_graphs(model, 7, steps=2, generator=gen, reject=_Never(rounds=2), stats=stats)
    assert len(got) == 7
    per_round = 7 * MAX_CANDIDATES  # the flawed sample and all but the last candidate rejected
    assert (stats.redrawn, stats.rounds, stats.kept_flawed) == (2 * per_round, 2, 7)
    assert stats.extra_draws == 2 * per_round
    assert stats.by_check == {"enol": 2 * per_round}
    first = stats.summary().splitlines()[0]
    assert f"{2 * per_round} (enol {2 * per_round}; 100.0% of 7 first draws) in 2 round(s)" in first
    assert first.endswith("; 7 kept with a flaw")
    # added to over calls (the benchmark samples in two calls)
    task.sample_graphs(model, 3, steps=2, generator=gen, reject=_Never(rounds=1), stats=stats)
    assert (stats.redrawn, stats.rounds, stats.kept_flawed) == (2 * per_round + 24, 2, 10)
    assert RejectionStats().summary().startswith("rejected: none")


def test_each_sample_keeps_its_first_passing_candidate() -> None:
    """redraw_flawed with a scripted draw: the candidates per flawed sample follow the pass rate
    seen (1 of 3 passed: 5 each), each sample keeps the first of its candidates that passes, in
    order, and one with none passing keeps its last and is redrawn the next round."""
    good, bad = mol_to_graph("CCO", VOCAB), mol_to_graph("CC.O", VOCAB)
    other = mol_to_graph("CCN", VOCAB)
    graphs = [good, bad, bad]
    calls: list[list[int]] = []
    script = {1: [bad, bad, other, good, good], 2: [bad] * 5}

    def draw(which: list[int]) -> list:
        calls.append(which)
        if len(calls) == 1:  # round 1: candidate c of index i is script[i][c]
            seen: dict[int, int] = {}
            out = []
            for i in which:
                out.append(script[i][seen.setdefault(i, 0)])
                seen[i] += 1
            return out
        return [good for _ in which]  # round 2: everything passes

    stats = redraw_flawed(graphs, draw, Rejection(), VOCAB)
    assert calls[0] == [1, 2] * 5  # candidate-major: every sample's first candidate first
    assert graphs[0] is good and graphs[1] is other and graphs[2] is good
    assert stats.rounds == 2 and stats.kept_flawed == 0
    # rejected: round 1 the two first draws, 2 + 4 candidates; round 2 index 2's last candidate
    assert stats.redrawn == 2 + 2 + 4 + 1 and stats.by_check == {"disconnected": 9}
    assert stats.extra_draws == 10 + len(calls[1])
    assert calls[1] == [2] * MAX_CANDIDATES  # 2 of 11 passed: 10 wanted, at most 8


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


def test_a_scaffold_is_found_as_written_by_a_plain_rdkit_match(shipped) -> None:
    """The issue's case: CC(=O)N fixed in every sample read back, in about 3% of them, as an
    aromatic lactam (Cc1ccc[nH]c1=O), which a plain RDKit match does not find. With rejection
    such a sample is drawn again: the plain match finds the scaffold in every valid sample."""
    from rdkit import Chem

    model, task = shipped
    query = Chem.MolFromSmiles("CC(=O)N")
    got = task.sample_graphs(
        model, 150, steps=12, scaffold="CC(=O)N", num_atoms=8,
        generator=torch.Generator().manual_seed(2), reject=Rejection(rounds=8),
        stats=(stats := RejectionStats()),
    )  # fmt: skip
    mols = [m for m in (graph_to_mol(a, b, VOCAB) for a, b in got) if m is not None]
    assert len(mols) >= 140 and stats.kept_flawed == 0
    assert all(m.HasSubstructMatch(query) for m in mols), stats.summary()
    graph = mol_to_graph("Cc1ccc[nH]c1=O", VOCAB)
    assert Rejection(scaffold=query).flaw(graph, VOCAB) == "scaffold"  # the check has power


def _smiles(graphs) -> list[str | None]:
    out = []
    for a, b in graphs:
        m = graph_to_mol(a, b, VOCAB)
        out.append(None if m is None else canonical_smiles(largest_fragment(m)))
    return out


def test_unique_redraws_molecules_already_sampled(shipped) -> None:
    """Three heavy atoms leave few molecules: duplicates are redrawn until the rounds run out;
    every sample kept as it is, not as a duplicate, is distinct from all before it."""
    model, task = shipped
    kw = dict(steps=4, num_atoms=3, generator=torch.Generator().manual_seed(2))
    stats = RejectionStats()
    got = task.sample_graphs(model, 40, reject=Rejection(unique=True), stats=stats, **kw)
    smiles = _smiles(got)
    assert stats.by_check.get("duplicate", 0) > 0
    repeats = sum(s in smiles[:i] for i, s in enumerate(smiles))
    assert 0 < repeats <= stats.kept_flawed  # 40 draws of 3 atoms cannot all differ
    plain = _smiles(
        task.sample_graphs(model, 40, **kw | {"generator": torch.Generator().manual_seed(2)})
    )
    assert len(set(smiles)) > len(set(plain))


def test_known_molecules_are_redrawn(shipped) -> None:
    """Every first draw that passes the other checks is known here (the same seed's plain run
    made the set), so each is redrawn; what is kept known is counted as kept with a flaw."""
    model, task = shipped
    first = task.sample_graphs(model, 30, steps=4, generator=torch.Generator().manual_seed(4))
    plain = _smiles(first)
    known = {s for s in plain if s is not None}
    clean = sum(Rejection().flaw(g, VOCAB) is None for g in first)
    stats = RejectionStats()
    got = task.sample_graphs(
        model, 30, steps=4, generator=torch.Generator().manual_seed(4),
        reject=Rejection(known=known), stats=stats,
    )  # fmt: skip
    assert stats.by_check.get("known", 0) >= clean > 0
    kept_known = sum(s in known for s in _smiles(got))
    assert kept_known <= stats.kept_flawed
    with pytest.raises(ValueError, match="known"):
        Rejection(known=["CCO"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "smiles,flagged",
    [("CN1C2=NCC1C2=O", True), ("CC1CC=C2CC1C2C", True), ("O=C1C2=CCC1OCC2", True),
     ("C12=CCC(CC1)C2", True),  # bicyclo[2.2.1]hept-1-ene
     ("C1=CC2CCC1C2", False),  # norbornene: the C=C is not at a bridgehead
     ("C1CC2CCC1C2", False), ("C1=CCC2CCCCC2C1", False),  # fused, not bridged
     ("C12=CCCC(CCC1)CC2", False)],  # bicyclo[3.3.2]: S = 8, isolable
)  # fmt: skip
def test_bredts_rule_flags_bridgehead_double_bonds_of_small_bicycles_only(smiles, flagged):
    from rdkit import Chem

    from discdiff.chem.filters import bredt_violation

    assert bredt_violation(Chem.MolFromSmiles(smiles)) is flagged


def test_the_ring_rules_are_rare_in_qm9_as_the_filters_say():
    """Counted on 20,000 QM9 training molecules: Bredt violations and 6-rings with two double
    bonds each under 0.2% (all of QM9: 0.050% and 0.012%), so rejecting them keeps the data's
    own molecules."""
    import random

    from rdkit import Chem

    from discdiff.datasets.qm9 import load_qm9

    smiles = random.Random(0).sample(load_qm9("train"), 20_000)
    mols = [m for m in map(Chem.MolFromSmiles, smiles) if m is not None]
    for name, rule in RING_RULES.items():
        share = sum(rule(m) for m in mols) / len(mols)
        assert share < 0.002, (name, share)


def test_a_budget_bounds_the_extra_draws_and_a_low_pass_rate_is_said():
    """A model whose draws all fail (the issue's MOSES case: 6,653 extra draws for 1,000
    molecules): with max_draws the rounds stop at the bound, the flawed samples are kept and
    counted, and the summary warns of the bound and of the low pass rate."""
    bad = mol_to_graph("CC.O", VOCAB)
    graphs = [bad] * 10
    drawn = []

    def draw(which: list[int]) -> list:
        drawn.append(len(which))
        return [bad for _ in which]

    stats = redraw_flawed(graphs, draw, Rejection(max_draws=25), VOCAB)
    assert sum(drawn) == stats.extra_draws <= 25 and stats.extra_draws >= 20
    assert stats.kept_flawed == 10 and stats.stopped_by_budget
    assert stats.first_draws == 10 and stats.pass_rate == 0.0
    text = stats.summary()
    assert "100.0% of 10 first draws" in text and "--reject-budget" in text
    assert "only 0.0% of the model's first draws pass" in text
    unbounded = redraw_flawed([bad] * 10, draw, Rejection(rounds=2), VOCAB)
    assert unbounded.extra_draws == 2 * 10 * MAX_CANDIDATES and not unbounded.stopped_by_budget
    healthy = RejectionStats(redrawn=3, by_check={"enol": 3}, first_draws=100, first_passed=97)
    assert "warning" not in healthy.summary() and "3.0% of 100 first draws" in healthy.summary()


def test_no_bare_scaffold_grows_every_sample(tmp_path, capsys):
    """The issue's bare furan: with --no-bare-scaffold every sample has more heavy atoms than
    the scaffold; a --num-atoms that leaves no room is one line."""
    from rdkit import Chem

    from discdiff.cli.main import main

    out = tmp_path / "f.smi"
    base = ["molecules", "sample", "-n", "40", "--steps", "6", "--no-novelty", "--no-progress",
            "--scaffold", "c1ccoc1", "--out", str(out)]  # fmt: skip
    assert main([*base, "--no-bare-scaffold"]) == 0
    mols = [Chem.MolFromSmiles(line.split("\t")[0]) for line in out.read_text().splitlines()]
    assert len(mols) == 40 and all(m.GetNumHeavyAtoms() > 5 for m in mols)
    capsys.readouterr()
    assert main([*base, "--no-bare-scaffold", "--num-atoms", "5"]) == 2
    assert "--num-atoms 5 must lie in [6," in capsys.readouterr().err


def test_a_scaffolds_atoms_keep_their_hybridisation(shipped) -> None:
    """The issue's CC(=O)N: the fixed methyl carbon became sp2 or sp in 181 of 1,000 samples
    and the N an imine N in 100. The guard now lets a fixed atom take only single new bonds:
    in every valid sample the scaffold's atoms have the hybridisation they have as written."""
    from rdkit import Chem

    model, task = shipped
    got = task.sample_graphs(
        model, 120, steps=12, scaffold="CC(=O)N", num_atoms=8,
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    n = 0
    for a, b in got:
        mol = graph_to_mol(a, b, VOCAB)
        if mol is None:
            continue
        n += 1
        kinds = [mol.GetAtomWithIdx(i).GetHybridization() for i in range(3)]
        assert kinds[0] == Chem.HybridizationType.SP3, Chem.MolToSmiles(mol)  # the methyl C
        assert b[0].max() <= 1 and b[3, 4:].max() <= 1  # new bonds to C and N: single
    assert n >= 100


def test_bredts_rule_can_be_undone_by_a_later_bond_so_it_is_rejections_not_the_guards():
    """The ring rules read RDKit's smallest rings; one more bond can hide the bicycle that
    made a molecule flagged. That is why the bond-by-bond motif guard does not hold them
    (refusing the bond where the rule first fires would refuse molecules the rule accepts)
    and rejection applies them to finished molecules."""
    from rdkit import Chem

    from discdiff.chem.filters import bredt_violation

    before = Chem.MolFromSmiles("C1CC2=CCC1C2")  # bicyclo[2.2.1]hept-1-ene
    after = Chem.RWMol(before)
    after.AddBond(4, 6, Chem.BondType.SINGLE)
    after = after.GetMol()
    Chem.SanitizeMol(after)
    assert bredt_violation(before)
    assert not bredt_violation(after)
    assert Chem.MolToSmiles(after) == "C1=C2CCC3C1C23"
