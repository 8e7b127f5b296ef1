"""Refusing, bond by bond, the choices that would create a motif stable small molecules never
have: the motif half of the molecule sampler's guard (:mod:`discdiff.chem.valence`).

The valence guard draws a graph's bonds one edge at a time; :class:`MotifGuard` follows that
draw and, before each edge, names the bond classes that would create one of these motifs of
:mod:`discdiff.chem.filters` (``MOTIF_GUARDED``):

- ``alkene_3ring`` / ``alkene_4ring``: a double bond in a 3- or 4-membered ring. A bond that
  closes a 3- or 4-cycle may not be double (or triple), nor close one through a double bond.
  The last-drawn bond of such a ring closes it, so checking every bond as it is drawn is
  complete: a path of length 2 or 3 between the ends (counted as (A A)_ij and (A A A)_ij of the
  drawn adjacency A, which are paths, not walks, while i and j are not yet bonded), and the
  same counts over the bonds that are not double (fewer: a double bond on a path);
- ``triple_in_ring``: a triple bond in any ring. Kept true as the bonds come: a triple bond may
  not join two atoms already connected, and no bond may join two atoms that are connected but
  only across a triple bond (then that bond is a bridge between them; with the invariant, every
  triple bond is a bridge). Connected components with and without the triple bonds, as labels;
- ``allene``: a carbon with double bonds to two C/N atoms;
- ``acyl_fluoride`` / ``vinyl_fluoride``: F on a carbon double-bonded to O / C;
- ``peroxide``: a single bond between two neutral oxygens.

``enol`` (an O-H on a C=C) is not guarded: whether an oxygen keeps its hydrogen is known only
once all its edges are drawn. Nor are the ring rules (``bredt``, ``diene_6ring``): they read
the smallest set of smallest rings, which a later bond can change so that a flagged graph is
no longer flagged (``C1CC2=CCC1C2``, bicyclo[2.2.1]hept-1-ene, plus one bond is
``C1=C2CCC3C1C23``, whose smallest rings share one bond each), so refusing a bond when the
rule first fires would refuse molecules the rule accepts; rejection
(:mod:`discdiff.chem.rejection`) applies them to the finished molecule. A rule read from paths
instead would be monotone but flags 0.60% of QM9 (780 of 130,831) against 0.050%: it would
steer samples away from the data. Class 0 (no bond) is never refused, so a draw always exists.
Aromatic bonds (a vocabulary that does not kekulize) count as bonds for rings, never as double.
"""

from __future__ import annotations

import torch
from rdkit import Chem
from torch import Tensor

from discdiff.chem.graph import BOND_TYPES, GraphVocab

__all__ = ["MOTIF_GUARDED", "MotifGuard", "MotifRules"]

#: the motifs of :data:`discdiff.chem.filters.MOTIFS` that the guard rules out by construction
MOTIF_GUARDED: tuple[str, ...] = (
    "alkene_3ring",
    "alkene_4ring",
    "triple_in_ring",
    "allene",
    "acyl_fluoride",
    "vinyl_fluoride",
    "peroxide",
)

# columns of the per-atom state: the element tests, then what the bonds drawn so far give
_C, _N, _O, _O0, _F, _HAS_F, _DBL_CO, _DBL_CN = range(8)


class MotifRules:
    """What the guard needs to know of a vocabulary: per atom class its element (C, N, O,
    neutral O, F; ``fluorine`` alone orders the draw), per bond class whether it is a bond,
    single, double, triple."""

    def __init__(self, vocab: GraphVocab) -> None:
        sym = [s for s, _ in vocab.atoms]
        charge = [c for _, c in vocab.atoms]
        cols = [[s == "C" for s in sym], [s == "N" for s in sym], [s == "O" for s in sym],
                [s == "O" and c == 0 for s, c in zip(sym, charge, strict=True)],
                [s == "F" for s in sym]]  # fmt: skip
        self.elements = torch.tensor(cols, dtype=torch.float32).T  # (Ka, 5)
        self.fluorine = torch.tensor(cols[_F])  # (Ka,) bool
        kinds = BOND_TYPES[: vocab.num_bond_classes]
        self.bond = torch.tensor([k is not None for k in kinds])  # (Kb,)
        self.single = torch.tensor([k == Chem.BondType.SINGLE for k in kinds])
        self.double = torch.tensor([k == Chem.BondType.DOUBLE for k in kinds])
        self.triple = torch.tensor([k == Chem.BondType.TRIPLE for k in kinds])

    def to(self, device: torch.device) -> MotifRules:
        """These tables on ``device`` (a copy)."""
        out = object.__new__(MotifRules)
        for name in ("elements", "fluorine", "bond", "single", "double", "triple"):
            setattr(out, name, getattr(self, name).to(device))
        return out


class MotifGuard:
    """The bonds drawn so far in a batch of graphs, and the classes each next edge may not take.

    atoms (B, N) classes of the rules' vocabulary. Call :meth:`refused` with an edge per graph
    (its two ends, (B, 2)) for the (B, Kb) classes that would create a guarded motif, then
    :meth:`add` with the classes drawn there. Each edge is to be added at most once.
    """

    def __init__(self, rules: MotifRules, atoms: Tensor) -> None:
        B, N = atoms.shape
        dev = atoms.device
        self.rules = rules.to(dev)
        self.rows = torch.arange(B, device=dev)
        self.adj = torch.zeros(B, 2, N, N, device=dev)  # [bonds, bonds that are not double]
        self.state = torch.zeros(B, N, 8, device=dev)
        self.state[..., : _F + 1] = self.rules.elements[atoms]
        # component labels, with every bond and without the triple bonds
        self.comp = torch.arange(N, device=dev).repeat(B, 2, 1)  # (B, 2, N)

    def refused(self, ends: Tensor) -> Tensor:
        """(B, Kb) True where drawing that class between ``ends`` (B, 2) makes a motif."""
        r, i, j = self.rows, ends[:, 0], ends[:, 1]
        ai, aj = self.adj[r, :, i], self.adj[r, :, j]  # (B, 2, N) rows of both adjacencies
        two = (ai * aj).sum(-1)  # (B, 2): paths i - k - j
        three = (torch.matmul(ai[:, :, None], self.adj)[:, :, 0] * aj).sum(-1)  # i - k - l - j
        small = (two[:, 0] + three[:, 0]) > 0.5  # the bond would close a 3- or 4-ring
        through_double = (two[:, 0] - two[:, 1] + three[:, 0] - three[:, 1]) > 0.5
        ci, cj = self.comp[r, :, i], self.comp[r, :, j]  # (B, 2)
        connected = ci[:, 0] == cj[:, 0]
        across_triple = connected & (ci[:, 1] != cj[:, 1])
        si, sj = self.state[r, i] > 0.5, self.state[r, j] > 0.5  # (B, 8)
        fluoride = (si[:, _F] & sj[:, _C] & sj[:, _DBL_CO]) | (
            sj[:, _F] & si[:, _C] & si[:, _DBL_CO]
        )
        peroxide = si[:, _O0] & sj[:, _O0]
        cumulated = (si[:, _C] & si[:, _DBL_CN] & (sj[:, _C] | sj[:, _N])) | (
            sj[:, _C] & sj[:, _DBL_CN] & (si[:, _C] | si[:, _N])
        )
        fluorinated = (si[:, _C] & si[:, _HAS_F] & (sj[:, _C] | sj[:, _O])) | (
            sj[:, _C] & sj[:, _HAS_F] & (si[:, _C] | si[:, _O])
        )
        R = self.rules
        multiple = R.double | R.triple
        return (
            (through_double | across_triple | fluoride)[:, None] & R.bond
            | small[:, None] & multiple
            | connected[:, None] & R.triple
            | (cumulated | fluorinated)[:, None] & R.double
            | peroxide[:, None] & R.single
        )

    def add(self, ends: Tensor, c: Tensor) -> None:
        """Record class ``c`` (B,) drawn between ``ends`` (B, 2) (class 0: nothing changes)."""
        R = self.rules
        r, i, j = self.rows, ends[:, 0], ends[:, 1]
        bond, double = R.bond[c], R.double[c]
        link = torch.stack([bond, bond & ~double], dim=1).float()  # (B, 2)
        self.adj[r, :, i, j] = link
        self.adj[r, :, j, i] = link
        merge = torch.stack([bond, bond & ~R.triple[c]], dim=1)  # (B, 2)
        ci, cj = self.comp[r, :, i], self.comp[r, :, j]  # (B, 2)
        relabel = merge[..., None] & (self.comp == cj[..., None])  # (B, 2, N)
        self.comp = torch.where(relabel, ci[..., None], self.comp)
        si, sj = self.state[r, i], self.state[r, j]  # (B, 8)
        b, d = bond.float(), double.float()
        for at, me, other in ((i, si, sj), (j, sj, si)):
            gained = torch.stack(
                [
                    b * other[:, _F],
                    d * torch.maximum(other[:, _C], other[:, _O]),
                    d * torch.maximum(other[:, _C], other[:, _N]),
                ],
                dim=1,
            )  # (B, 3): has an F neighbour, a double bond to C/O, a double bond to C/N
            self.state[r, at, _HAS_F:] = torch.maximum(me[:, _HAS_F:], gained)
