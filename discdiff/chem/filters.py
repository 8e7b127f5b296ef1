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
- ``peroxide``: an O-O single bond.

:func:`flag_molecule` gives every filter's verdict on one molecule; :func:`filter_counts` counts
them over a list. The SMARTS are matched on the sanitised molecule (RDKit's aromaticity), where
``=`` and ``#`` are non-aromatic double and triple bonds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from rdkit import Chem

__all__ = [
    "MOTIFS",
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

#: every filter, in the order reports list them
FILTERS: tuple[str, ...] = ("pains", "net_charged", *MOTIFS)


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
