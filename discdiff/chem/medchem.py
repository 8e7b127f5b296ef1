"""Medicinal-chemistry filters a chemist asks for by name (``--filter lipinski,veber,sa<=4``):
rules of thumb for drug-likeness and structural alerts, each a yes/no test of one sanitised
molecule (True = flagged), counted after sampling. Opt-in, unlike :mod:`discdiff.chem.filters`:
most of them are about drug-sized molecules, and a QM9 molecule (at most 9 heavy atoms) fails
REOS's size range by construction.

Registered (:data:`MEDCHEM`; :func:`register_medchem` adds one):

- ``lipinski``: more than one violation of Lipinski's rule of five (MW <= 500, Crippen logP
  <= 5, H-bond donors <= 5, acceptors <= 10; Lipinski et al. 1997 allow one);
- ``veber``: more than 10 rotatable bonds or a TPSA above 140 (Veber et al. 2002);
- ``reos``: outside Walters' REOS ranges (MW 200-500, logP -5 to 5, donors <= 5, acceptors
  <= 10, formal charge -2 to 2, rotatable bonds <= 8, heavy atoms 15-50; Walters & Murcko 2002);
- ``brenk``: a structural alert of Brenk et al. 2008 (RDKit's FilterCatalog BRENK);
- ``nih``: an alert of the NIH MLSMR set (RDKit's FilterCatalog NIH);
- ``halogen_heteroatom``: a halogen bonded to N, O or S (N-Cl, O-F, ...: reactive);
- a property bound ``NAME<=X`` or ``NAME>=X`` for any registered property
  (:data:`discdiff.chem.properties.PROPERTIES`: ``sa<=4`` flags molecules whose SA score is
  above 4, ``qed>=0.5`` those below 0.5; a molecule without a value is flagged).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache

from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors, Lipinski, rdMolDescriptors

from discdiff.registry import Registry

__all__ = ["MEDCHEM", "register_medchem", "parse_medchem", "medchem_counts"]

Rule = Callable[[Chem.Mol], bool]

#: name -> rule (a sanitised molecule -> flagged)
MEDCHEM: Registry[Rule] = Registry("medchem filter")


def register_medchem(name: str, rule: Rule | None = None, *, replace: bool = False) -> object:
    """Register ``rule`` (mol -> flagged) under ``name`` (decorator when ``rule`` is omitted)."""
    if rule is None:
        return lambda r: register_medchem(name, r, replace=replace)
    MEDCHEM.register(name, rule, replace=replace)
    return rule


def _basics(mol: Chem.Mol) -> tuple[float, float, int, int]:
    return (
        Descriptors.MolWt(mol),
        Crippen.MolLogP(mol),
        Lipinski.NumHDonors(mol),
        Lipinski.NumHAcceptors(mol),
    )


def _lipinski(mol: Chem.Mol) -> bool:
    """More than one violation of Lipinski's rule of five."""
    mw, logp, hbd, hba = _basics(mol)
    return (mw > 500) + (logp > 5) + (hbd > 5) + (hba > 10) > 1


def _veber(mol: Chem.Mol) -> bool:
    """More than 10 rotatable bonds or a TPSA above 140."""
    rot = rdMolDescriptors.CalcNumRotatableBonds(mol)
    return rot > 10 or rdMolDescriptors.CalcTPSA(mol) > 140


def _reos(mol: Chem.Mol) -> bool:
    """Outside Walters' REOS ranges."""
    mw, logp, hbd, hba = _basics(mol)
    rot = rdMolDescriptors.CalcNumRotatableBonds(mol)
    charge = Chem.GetFormalCharge(mol)
    heavy = mol.GetNumHeavyAtoms()
    inside = (
        200 <= mw <= 500 and -5 <= logp <= 5 and hbd <= 5 and hba <= 10
        and -2 <= charge <= 2 and rot <= 8 and 15 <= heavy <= 50
    )  # fmt: skip
    return not inside


@cache
def _catalog(name: str):  # type: ignore[no-untyped-def]
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

    params = FilterCatalogParams()
    params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
    return FilterCatalog(params)


_HALOGEN_HETERO = Chem.MolFromSmarts("[#7,#8,#16]-[F,Cl,Br,I]")

register_medchem("lipinski", _lipinski)
register_medchem("veber", _veber)
register_medchem("reos", _reos)
register_medchem("brenk", lambda m: bool(_catalog("BRENK").HasMatch(m)))
register_medchem("nih", lambda m: bool(_catalog("NIH").HasMatch(m)))
register_medchem("halogen_heteroatom", lambda m: m.HasSubstructMatch(_HALOGEN_HETERO))

_BOUND = re.compile(
    r"^\s*([A-Za-z_][\w-]*)\s*(<=|>=)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*$"
)


def _bound(name: str, op: str, limit: float) -> Rule:
    from discdiff.chem.properties import PROPERTIES

    fn = PROPERTIES.get(name)  # one line for an unknown property

    def rule(mol: Chem.Mol) -> bool:
        v = float(fn(mol))
        if not math.isfinite(v):
            return True
        return v > limit if op == "<=" else v < limit

    return rule


def parse_medchem(spec: str | Sequence[str]) -> dict[str, Rule]:
    """``"lipinski,veber,sa<=4"`` (or a list of names) -> {name: rule}, in order; one line
    naming an unknown filter or a bound that does not parse."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: dict[str, Rule] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        bound = _BOUND.match(item)
        if bound:
            name, op, value = bound.groups()
            limit = float(value)
            out[f"{name}{op}{value}"] = _bound(name, op, limit)
            continue
        if any(c in item for c in "<>="):
            raise ValueError(f"--filter {item!r}: a bound reads NAME<=X or NAME>=X (e.g. sa<=4)")
        if item not in MEDCHEM:
            raise ValueError(
                f"--filter {item!r}: not a filter; registered: {', '.join(MEDCHEM.names())}, "
                "or a property bound such as sa<=4"
            )
        out[item] = MEDCHEM.get(item)
    if not out:
        raise ValueError("--filter: name at least one filter")
    return out


def medchem_counts(mols: Iterable[Chem.Mol], rules: dict[str, Rule]) -> dict[str, int]:
    """How many of ``mols`` each rule flags, plus ``any`` and ``checked``."""
    counts = dict.fromkeys(rules, 0)
    counts["any"] = counts["checked"] = 0
    for mol in mols:
        counts["checked"] += 1
        hit = False
        for name, rule in rules.items():
            if rule(mol):
                counts[name] += 1
                hit = True
        counts["any"] += hit
    return counts
