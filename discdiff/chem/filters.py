"""Filters a chemist runs on generated molecules, each a named yes/no test of one sanitised
molecule: PAINS (RDKit's FilterCatalog, families A, B and C), net charge (a cation or anion
with no counter-ion, as a valence repair can leave), and motifs that small stable organic
molecules (QM9, drug-like sets) practically never have:

- ``alkene_3ring`` / ``alkene_4ring``: a C=C (any double bond) inside a 3- or 4-membered ring;
- ``triple_in_ring``: a triple bond inside any ring;
- ``allene``: cumulated double bonds X=C=X at a carbon (not CO2-like O=C=O);
- ``enol``: O-H on a non-aromatic carbon that carries a C=C (tautomer of a ketone; phenols
  are not enols here);
- ``acyl_fluoride`` / ``vinyl_fluoride``: F on a C=O / on a non-aromatic C=C;
- ``peroxide``: an O-O single bond;
- ``bredt``: a double bond at a bridgehead of a small bridged bicycle (Bredt's rule: two rings
  sharing at least two bonds, the bridges holding S <= 6 atoms in all, as in
  bicyclo[2.2.1]hept-1-ene; such a molecule cannot be embedded in 3-D);
- ``diene_6ring``: a non-aromatic 6-ring with two ring double bonds (a cyclohexadiene or a
  quinone ring).

The last two are ring rules (:data:`RING_RULES`, functions of the ring system rather than
SMARTS). Counted on all 130,831 QM9 molecules: ``bredt`` 0.050% and ``diene_6ring`` 0.012%
(all in bridged bicycles). :func:`flag_molecule` gives every filter's verdict on one molecule; :func:`filter_counts` counts
them over a list. The SMARTS are matched on the sanitised molecule (RDKit's aromaticity), where
``=`` and ``#`` are non-aromatic double and triple bonds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from rdkit import Chem

__all__ = [
    "MOTIFS",
    "RING_RULES",
    "bredt_violation",
    "diene_6ring",
    "FILTERS",
    "count_flags",
    "flag_molecule",
    "filter_counts",
    "has_pains",
    "motif_patterns",
]

#: motif name -> SMARTS (ring bonds only where stated: ``;@``)
MOTIFS: dict[str, str] = {
    "alkene_3ring": "[*;r3]1=;@[*;r3]~;@[*;r3]1",
    "alkene_4ring": "*1=;@*~;@*~;@*1",
    "triple_in_ring": "*#;@*",
    "allene": "[#6,#7]=[#6X2]=[#6,#7]",
    "enol": "[OX2H1][CX3]=[C]",
    "acyl_fluoride": "F[CX3]=[O]",
    "vinyl_fluoride": "F[CX3]=[C]",
    "peroxide": "[#8X2]-[#8X2]",
}

#: the largest bridge sum S (atoms in the bridges of a bicycle) at which a bridgehead double
#: bond breaks Bredt's rule (Fawcett: S >= 7 is isolable, strained)
BREDT_MAX_S = 6


def bredt_violation(mol: Chem.Mol, max_s: int = BREDT_MAX_S) -> bool:
    """Whether a non-aromatic double bond sits at a bridgehead of a bridged bicycle with
    S <= ``max_s`` bridge atoms: two rings that share at least two bonds (a fused pair shares
    one), their union of S + 2 atoms, the bridgeheads the ends of the shared path."""
    ri = mol.GetRingInfo()
    rings = [set(r) for r in ri.AtomRings()]
    bond_rings = [set(r) for r in ri.BondRings()]
    for i, j in itertools.combinations(range(len(rings)), 2):
        if len(bond_rings[i] & bond_rings[j]) < 2:
            continue
        union = rings[i] | rings[j]
        if len(union) - 2 > max_s:
            continue
        shared, union_bonds = rings[i] & rings[j], bond_rings[i] | bond_rings[j]
        for head in shared:
            atom = mol.GetAtomWithIdx(head)
            if not any(n.GetIdx() in union - shared for n in atom.GetNeighbors()):
                continue  # inside the shared path, not at its end
            for bond in atom.GetBonds():
                if (
                    bond.GetIdx() in union_bonds
                    and bond.GetBondType() == Chem.BondType.DOUBLE
                    and not bond.GetIsAromatic()
                ):
                    return True
    return False


def diene_6ring(mol: Chem.Mol) -> bool:
    """Whether a non-aromatic 6-ring holds two or more ring double bonds."""
    for ring in mol.GetRingInfo().BondRings():
        if len(ring) != 6:
            continue
        bonds = [mol.GetBondWithIdx(b) for b in ring]
        if any(b.GetIsAromatic() for b in bonds):
            continue
        if sum(b.GetBondType() == Chem.BondType.DOUBLE for b in bonds) >= 2:
            return True
    return False


#: ring rules: name -> test of a sanitised molecule (True = flagged)
RING_RULES: dict[str, Callable[[Chem.Mol], bool]] = {
    "bredt": bredt_violation,
    "diene_6ring": diene_6ring,
}

#: every filter, in the order reports list them
FILTERS: tuple[str, ...] = ("pains", "net_charged", *MOTIFS, *RING_RULES)


@lru_cache(maxsize=1)
def motif_patterns() -> dict[str, Chem.Mol]:
    """The compiled SMARTS of :data:`MOTIFS` (built once)."""
    out = {}
    for name, smarts in MOTIFS.items():
        pat = Chem.MolFromSmarts(smarts)
        if pat is None:  # pragma: no cover - the table is fixed
            raise ValueError(f"bad SMARTS for motif {name!r}: {smarts}")
        out[name] = pat
    return out


@lru_cache(maxsize=1)
def _pains_catalog():  # type: ignore[no-untyped-def]
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

    params = FilterCatalogParams()
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.PAINS)
    return FilterCatalog(params)


def has_pains(mol: Chem.Mol) -> bool:
    """Whether any PAINS A/B/C pattern (RDKit's FilterCatalog) matches."""
    return bool(_pains_catalog().HasMatch(mol))


def flag_molecule(mol: Chem.Mol) -> dict[str, bool]:
    """Every filter of :data:`FILTERS` on one sanitised molecule (True = flagged)."""
    out = {"pains": has_pains(mol), "net_charged": Chem.GetFormalCharge(mol) != 0}
    for name, pat in motif_patterns().items():
        out[name] = mol.HasSubstructMatch(pat)
    for name, rule in RING_RULES.items():
        out[name] = rule(mol)
    return out


def filter_counts(mols: Iterable[Chem.Mol], names: Sequence[str] = FILTERS) -> dict[str, int]:
    """How many of ``mols`` (sanitised) each filter flags, plus ``any`` and ``checked``."""
    return count_flags((flag_molecule(m) for m in mols), names)


def count_flags(
    verdicts: Iterable[dict[str, bool]], names: Sequence[str] = FILTERS
) -> dict[str, int]:
    """:func:`filter_counts` from verdicts already computed (:func:`flag_molecule`'s dicts)."""
    counts = dict.fromkeys(names, 0)
    counts["any"] = 0
    n = 0
    for flags in verdicts:
        n += 1
        hit = False
        for k in names:
            if flags[k]:
                counts[k] += 1
                hit = True
        counts["any"] += hit
    counts["checked"] = n
    return counts
