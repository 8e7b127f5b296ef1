"""Valence-aware molecule sampling: capacities from RDKit, every guarded sample within them,
the guard on the last draw only by default, the CLI switch (the constraint hook's own law:
tests/test_constraints.py)."""

from __future__ import annotations

import math

import pytest
import torch

from discdiff.chem.graph import GraphVocab, num_edges
from discdiff.chem.valence import ValenceConstraint, atom_capacities, bond_orders
from discdiff.processes import Marginal
from discdiff.samplers import AncestralSampler
from discdiff.schedules import LogLinear

VOCAB = GraphVocab.qm9()  # C N O F N+ O- C- N-


def test_capacities_follow_the_isoelectronic_element():
    caps = dict(zip(VOCAB.atoms, atom_capacities(VOCAB).tolist(), strict=True))
    assert caps == {("C", 0): 4, ("N", 0): 3, ("O", 0): 2, ("F", 0): 1, ("N", 1): 4,
                    ("O", -1): 1, ("C", -1): 3, ("N", -1): 2}  # fmt: skip
    assert bond_orders(VOCAB).tolist() == [0, 1, 2, 3]
    assert atom_capacities(GraphVocab.moses())[3] == 6  # sulfur: up to six (sulfones)


def _processes(ka: int, kb: int) -> dict:
    return {
        "atoms": Marginal(torch.full((ka,), 1.0 / ka), LogLinear()),
        "bonds": Marginal(torch.tensor([0.7] + [0.3 / (kb - 1)] * (kb - 1)), LogLinear()),
    }


def _valences(atoms: torch.Tensor, bonds: torch.Tensor, n: int) -> torch.Tensor:
    orders = bond_orders(VOCAB)[bonds]  # (B, E)
    ii, jj = torch.triu_indices(n, n, 1)
    val = torch.zeros(atoms.shape[0], n)
    val.index_add_(1, ii, orders)
    val.index_add_(1, jj, orders)
    return val


def _greedy(atom: int, bond: int, logit: float):
    """A denoiser that wants one atom class and one bond class everywhere (logit vs -logit)."""
    ka, kb = VOCAB.num_atom_classes, VOCAB.num_bond_classes

    def model(x, t, cond=None):
        atoms = torch.full((*x["atoms"].shape, ka), -logit)
        atoms[..., atom] = logit
        bonds = torch.full((*x["bonds"].shape, kb), -logit)
        bonds[..., bond] = logit
        return {"atoms": atoms, "bonds": bonds}

    return model


@pytest.mark.parametrize("guard_steps", ["last", "all"])
def test_guarded_samples_never_exceed_a_capacity_even_for_a_greedy_model(guard_steps):
    n, B = 6, 64
    ka, kb = VOCAB.num_atom_classes, VOCAB.num_bond_classes

    greedy = _greedy(atom=3, bond=3, logit=3.0)  # fluorine atoms joined by triple bonds
    procs = _processes(ka, kb)
    shape = {"atoms": (B, n), "bonds": (B, num_edges(n))}
    res = AncestralSampler(20, constraint=ValenceConstraint(VOCAB, steps=guard_steps)).sample(
        greedy, procs, shape, generator=torch.Generator().manual_seed(0)
    )
    atoms, bonds = res.samples["atoms"], res.samples["bonds"]
    caps = atom_capacities(VOCAB)[atoms]
    assert bool((_valences(atoms, bonds, n) <= caps + 1e-6).all())
    assert bool((bonds > 0).any())  # it still makes the bonds that fit
    plain = AncestralSampler(20).sample(
        greedy, procs, shape, generator=torch.Generator().manual_seed(0)
    )
    over = (
        _valences(plain.samples["atoms"], plain.samples["bonds"], n)
        > atom_capacities(VOCAB)[plain.samples["atoms"]]
    )
    assert bool(over.any())  # without the guard this model breaks valence: the test has power


def test_the_guard_acts_on_the_last_step_only_by_default():
    """With guard_steps="last" every step before the last is the unguarded step, draw for
    draw (the same states with the same seed); only the sample differs, and it fits. "all"
    guards the intermediate draws too, so its path leaves the unguarded one before the end."""
    n, B = 5, 32
    ka, kb = VOCAB.num_atom_classes, VOCAB.num_bond_classes

    greedy = _greedy(atom=2, bond=3, logit=2.0)  # over-bonds: triple bonds between oxygens
    procs = _processes(ka, kb)
    shape = {"atoms": (B, n), "bonds": (B, num_edges(n))}

    def run(guard=True, **kw):
        rule = ValenceConstraint(VOCAB, **kw) if guard else None
        return AncestralSampler(12, constraint=rule).sample(
            greedy, procs, shape, generator=torch.Generator().manual_seed(3),
            return_trajectory=True,
        )  # fmt: skip

    last, plain, every = run(), run(guard=False), run(steps="all")
    assert len(last.trajectory) == len(plain.trajectory) == 13
    for a, b in zip(last.trajectory[:-1], plain.trajectory[:-1], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(last.samples["bonds"], plain.samples["bonds"])
    caps = atom_capacities(VOCAB)
    for res in (last, every):
        val = _valences(res.samples["atoms"], res.samples["bonds"], n)
        assert bool((val <= caps[res.samples["atoms"]] + 1e-6).all())
    assert any(
        not torch.equal(a["bonds"], b["bonds"])
        for a, b in zip(every.trajectory[:-1], plain.trajectory[:-1], strict=True)
    )
    with pytest.raises(ValueError, match="constraint steps must be one of"):
        ValenceConstraint(VOCAB, steps="first")


def test_aromatic_bonds_count_one_so_no_qm9_molecule_is_forbidden():
    """An aromatic bond counts its Kekulé minimum (1): every aromatic QM9 training graph fits
    the capacities (counting 1.5 would forbid furans and most azoles)."""
    import random

    from discdiff.chem.graph import encode_smiles
    from discdiff.datasets.qm9 import load_qm9

    arom = GraphVocab.qm9(kekulize=False)
    assert bond_orders(arom).tolist() == [0, 1, 2, 3, 1]
    caps, orders = atom_capacities(arom), bond_orders(arom)
    graphs, _ = encode_smiles(random.Random(2).sample(load_qm9("train"), 1500), arom)
    aromatic = [(a, b) for a, b in graphs if (b == 4).any()]
    assert len(aromatic) > 150
    for a, b in aromatic:
        assert (orders[b].sum(1) <= caps[a]).all()
    assert any((orders[b].sum(1) + 0.5 * (b == 4).sum(1) > caps[a]).any() for a, b in aromatic)


def _greedy_reference(atoms, logp, edge_mask, noise, rules, given=None):
    """The guarded draw one graph at a time, every edge visited (no shortcut): edges by their
    largest bond log-probability (a fluorine's first with motif rules), each the best-scoring
    class (log-probability + noise) that fits both atoms' room and the motif guard."""
    from discdiff.chem.motif_guard import MotifGuard

    B, N = atoms.shape
    E, Kb = logp.shape[1:]
    ii, jj = torch.triu_indices(N, N, 1)
    caps, orders = atom_capacities(VOCAB), bond_orders(VOCAB)
    out = torch.zeros(B, E, dtype=torch.long)
    for b in range(B):
        room = caps[atoms[b]].clone()
        guard = MotifGuard(rules, atoms[b : b + 1]) if rules is not None else None
        if given is not None:
            for e in range(E):
                if given[1][b, e]:
                    c = int(given[0][b, e])
                    room[ii[e]] -= orders[c]
                    room[jj[e]] -= orders[c]
                if guard is not None:
                    c = int(given[0][b, e]) if given[1][b, e] else 0
                    guard.add(torch.tensor([[ii[e], jj[e]]]), torch.tensor([c]))
        conf = logp[b, :, 1:].max(-1).values.masked_fill(~edge_mask[b], -math.inf)
        if rules is not None:
            fl = rules.fluorine[atoms[b]]
            conf = conf + (fl[ii] | fl[jj]).float() * 1e4
        order = conf.argsort(descending=True, stable=True)
        for k, e in enumerate(order.tolist()):
            i, j = int(ii[e]), int(jj[e])
            free = min(float(room[i]), float(room[j]))
            best, pick = -math.inf, 0
            refused = guard.refused(torch.tensor([[i, j]]))[0] if guard is not None else None
            for c in range(Kb):
                if c and not edge_mask[b, e]:
                    continue
                if orders[c] - 1e-6 > free or (refused is not None and refused[c]):
                    continue
                score = float(logp[b, e, c]) + float(noise[b, k, c])
                if score > best:
                    best, pick = score, c
            out[b, e] = pick
            room[i] -= orders[pick]
            room[j] -= orders[pick]
            if guard is not None:
                guard.add(torch.tensor([[i, j]]), torch.tensor([pick]))
    if given is not None:
        out = torch.where(given[1], given[0], out)
    return out


def test_the_guarded_draw_skips_no_bond_edges_without_changing_a_draw(monkeypatch):
    """The loop visits only the edges whose best score is a bond, and the draws equal the
    one-graph-at-a-time reference that visits every edge, with and without motif rules and
    with given bonds; the loop is shorter than the edge count (the shortcut is taken)."""
    from discdiff.chem import valence
    from discdiff.chem.motif_guard import MotifRules

    g = torch.Generator().manual_seed(11)
    B, N = 48, 8
    E, Kb = num_edges(N), VOCAB.num_bond_classes
    atoms = torch.multinomial(torch.tensor([0.55, 0.15, 0.2, 0.1]), B * N, True, generator=g)
    atoms = atoms.reshape(B, N)
    logits = torch.randn(B, E, Kb, generator=g) * 2
    logits[..., 0] += 1.5  # most edges "no bond", as in a molecule
    logp = logits.log_softmax(-1)
    edge_mask = torch.rand(B, E, generator=g) > 0.1
    given_mask = ~edge_mask & (torch.rand(B, E, generator=g) > 0.5)
    given = (torch.where(given_mask, 1, 0), given_mask)
    lengths = []
    original = valence._loop_length
    monkeypatch.setattr(
        valence, "_loop_length", lambda a: lengths.append(original(a)) or lengths[-1]
    )
    for rules in (None, MotifRules(VOCAB)):
        for giv in (None, given):
            noise = torch.empty(B, E, Kb).exponential_(generator=g).log().neg()  # Gumbel
            monkeypatch.setattr(valence, "gumbel", lambda *a, n=noise: n.clone())
            got = valence.guarded_bonds(
                atoms, logp, edge_mask, atom_capacities(VOCAB), bond_orders(VOCAB), None, giv,
                rules,
            )  # fmt: skip
            want = _greedy_reference(atoms, logp, edge_mask, noise, rules, giv)
            assert torch.equal(got, want)
    assert lengths and max(lengths) < E
