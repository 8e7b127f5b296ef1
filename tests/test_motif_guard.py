"""The motif guard against RDKit: it refuses a bond exactly when adding it would make one of the
guarded motifs (the filters' own SMARTS on the partial molecule), and no guarded sample has one."""

from __future__ import annotations

import torch
from rdkit import Chem

from discdiff.chem.filters import MOTIFS
from discdiff.chem.graph import BOND_TYPES, GraphVocab, num_edges
from discdiff.chem.motif_guard import MOTIF_GUARDED, MotifGuard, MotifRules
from discdiff.chem.valence import ValenceConstraint, atom_capacities, bond_orders, guarded_bonds
from discdiff.processes import Marginal
from discdiff.samplers import AncestralSampler
from discdiff.schedules import LogLinear

VOCAB = GraphVocab.qm9()  # C N O F N+ O- C- N-
PATTERNS = {k: Chem.MolFromSmarts(MOTIFS[k]) for k in MOTIF_GUARDED}


def _mol(atoms: list[int], bonds: dict[tuple[int, int], int]) -> Chem.Mol:
    """The partial molecule, unsanitised, with ring information and implicit hydrogens."""
    m = Chem.RWMol()
    for a in atoms:
        sym, charge = VOCAB.atoms[a]
        at = Chem.Atom(sym)
        at.SetFormalCharge(charge)
        m.AddAtom(at)
    for (i, j), c in bonds.items():
        if c:
            m.AddBond(i, j, BOND_TYPES[c])
    m.UpdatePropertyCache(strict=False)
    Chem.GetSymmSSSR(m)  # ring sizes too (the r3 of alkene_3ring)
    return m


def _motifs(mol: Chem.Mol) -> set[str]:
    return {k for k, p in PATTERNS.items() if mol.HasSubstructMatch(p)}


def test_refused_is_exactly_what_makes_a_guarded_motif():
    """Random graphs grown edge by edge through the guard: at every edge, each class that fits
    valence is refused iff the filters' SMARTS find a guarded motif once it is added."""
    gen = torch.Generator().manual_seed(0)
    B, N = 96, 7
    # carbon-rich, with N, O and F, so that rings, allenes, fluorides and peroxides all occur
    atoms = torch.multinomial(torch.tensor([0.55, 0.15, 0.2, 0.1]), B * N, True, generator=gen)
    atoms = atoms.reshape(B, N)
    caps, orders = atom_capacities(VOCAB), bond_orders(VOCAB)
    guard = MotifGuard(MotifRules(VOCAB), atoms)
    room = caps[atoms].clone()
    ii, jj = torch.triu_indices(N, N, 1)
    perm = torch.randperm(ii.numel(), generator=gen)
    drawn: list[dict[tuple[int, int], int]] = [{} for _ in range(B)]
    checked = refused_seen = 0
    seen: set[str] = set()
    for e in perm.tolist():
        i, j = int(ii[e]), int(jj[e])
        ends = torch.tensor([[i, j]]).expand(B, 2)
        refused = guard.refused(ends)  # (B, Kb)
        fits = orders[None, :] <= torch.minimum(room[:, i], room[:, j])[:, None] + 1e-6
        for b in range(B):
            for c in range(1, VOCAB.num_bond_classes):
                if not fits[b, c]:
                    continue
                made = _motifs(_mol(atoms[b].tolist(), {**drawn[b], (i, j): c}))
                assert bool(refused[b, c]) == bool(made), str(
                    (b, i, j, c, atoms[b].tolist(), {k: v for k, v in drawn[b].items() if v}, made)
                )
                checked += 1
                refused_seen += bool(made)
                seen |= made
        assert not refused[:, 0].any()  # "no bond" is always allowed
        # draw a class the guard allows, favouring multiple bonds (they make the motifs)
        w = torch.tensor([1.0, 1.0, 2.0, 1.5]).expand(B, -1).clone()
        w[refused | ~fits] = 0.0
        c = torch.multinomial(w, 1, generator=gen)[:, 0]
        guard.add(ends, c)
        room[:, i] -= orders[c]
        room[:, j] -= orders[c]
        for b in range(B):
            drawn[b][(i, j)] = int(c[b])
    assert checked > 1200 and refused_seen > 150, (checked, refused_seen)
    assert seen == set(MOTIF_GUARDED), seen  # every guarded motif was met and refused


def test_guarded_draw_never_makes_a_guarded_motif_and_without_it_does():
    gen = torch.Generator().manual_seed(1)
    B, N = 200, 9
    E = num_edges(N)
    atoms = torch.multinomial(torch.tensor([0.6, 0.15, 0.15, 0.1]), B * N, True, generator=gen)
    atoms = atoms.reshape(B, N)
    logp = torch.log_softmax(torch.randn(B, E, 4, generator=gen) * 2.0, -1)
    caps, orders = atom_capacities(VOCAB), bond_orders(VOCAB)
    mask = torch.ones(B, E, dtype=torch.bool)
    ii, jj = torch.triu_indices(N, N, 1)

    def count(bonds):
        made = {}
        for b in range(B):
            edges = {(int(ii[e]), int(jj[e])): int(bonds[b, e]) for e in range(E)}
            for k in _motifs(_mol(atoms[b].tolist(), edges)):
                made[k] = made.get(k, 0) + 1
        return made

    rules = MotifRules(VOCAB)
    on = guarded_bonds(
        atoms, logp, mask, caps, orders, torch.Generator().manual_seed(2), None, rules
    )
    off = guarded_bonds(atoms, logp, mask, caps, orders, torch.Generator().manual_seed(2))
    assert count(on) == {}
    made = count(off)
    assert sum(made.values()) > 20, made  # the same draw without the rules makes them: power
    assert (on > 0).sum() > 0.8 * (off > 0).sum()  # it refuses motifs, not bonds at large


def test_scaffold_bonds_count_as_drawn():
    """A fixed C=C: no bond may close a 4-ring around it, and the given bonds come back as given."""
    B, N = 64, 4
    atoms = torch.zeros(B, N, dtype=torch.long)  # four carbons
    ii, jj = torch.triu_indices(N, N, 1)
    values = torch.zeros(B, ii.numel(), dtype=torch.long)
    given = torch.zeros_like(values, dtype=torch.bool)
    for (i, j), c in {(0, 1): 2, (1, 2): 1, (2, 3): 1}.items():  # C=C-C-C
        e = int(((ii == i) & (jj == j)).nonzero())
        values[:, e], given[:, e] = c, True
    logp = torch.log(torch.tensor([0.01, 0.97, 0.01, 0.01])).expand(B, ii.numel(), 4)
    out = guarded_bonds(atoms, logp, ~given, atom_capacities(VOCAB), bond_orders(VOCAB),
                        torch.Generator().manual_seed(0), (values, given), MotifRules(VOCAB))  # fmt: skip
    e03 = int(((ii == 0) & (jj == 3)).nonzero())
    assert (out[given] == values[given]).all()
    assert (out[:, e03] == 0).all()  # 0-3 would close the cyclobutene
    e02 = int(((ii == 0) & (jj == 2)).nonzero())
    assert (out[:, e02] == 0).all()  # 0-2 would close a cyclopropane through the C=C


def test_sampler_applies_the_rules_to_the_sample_only_when_asked():
    n, B = 6, 48
    procs = {
        "atoms": Marginal(torch.full((8,), 1 / 8), LogLinear()),
        "bonds": Marginal(torch.tensor([0.7, 0.1, 0.1, 0.1]), LogLinear()),
    }

    def strained(x, t, cond=None):  # carbons joined by double bonds everywhere
        atoms = torch.full((*x["atoms"].shape, 8), -4.0)
        atoms[..., 0] = 4.0
        bonds = torch.zeros(*x["bonds"].shape, 4)
        bonds[..., 2] = 2.0
        return {"atoms": atoms, "bonds": bonds}

    shape = {"atoms": (B, n), "bonds": (B, num_edges(n))}
    ii, jj = torch.triu_indices(n, n, 1)

    def made(motifs: bool) -> int:
        s = AncestralSampler(8, constraint=ValenceConstraint(VOCAB, motifs=motifs))
        assert s.config()["constraint"]["motifs"] is motifs
        res = s.sample(strained, procs, shape, generator=torch.Generator().manual_seed(3))
        a, b = res.samples["atoms"], res.samples["bonds"]
        total = 0
        for r in range(B):
            edges = {(int(ii[e]), int(jj[e])): int(b[r, e]) for e in range(ii.numel())}
            total += bool(_motifs(_mol(a[r].tolist(), edges)))
        return total

    assert made(True) == 0
    assert made(False) > B // 4


def test_a_fluorine_is_not_left_alone_by_a_refused_bond():
    """F-C=C with the C=C more confident than the F-C: the fluorine's edges go first, so the
    C=C is refused (not the F-C, which would leave the F a fragment)."""
    B, N = 32, 3
    atoms = torch.tensor([[3, 0, 0]]).expand(B, N)  # F, C, C
    ii, jj = torch.triu_indices(N, N, 1)  # (0, 1) F-C, (0, 2) F-C, (1, 2) C-C
    lp = torch.full((B, 3, 4), -30.0)
    lp[:, 0, 1] = -1e-3  # F-C single, sure
    lp[:, 1, 0] = -1e-3  # the other F-C: none
    lp[:, 2, 2] = -1e-6  # C=C, surest of all
    lp[:, 2, 1] = -2.0  # then C-C
    args = (torch.ones(B, 3, dtype=torch.bool), atom_capacities(VOCAB), bond_orders(VOCAB))
    gen = torch.Generator().manual_seed(0)
    on = guarded_bonds(atoms, lp, *args, gen, None, MotifRules(VOCAB))
    assert (on[:, 0] == 1).all() and (on[:, 2] == 1).all()  # F-C kept, C=C made single
    off = guarded_bonds(atoms, lp, *args, torch.Generator().manual_seed(0))
    assert (off[:, 2] == 2).float().mean() > 0.9  # without the rules: the vinyl fluoride
