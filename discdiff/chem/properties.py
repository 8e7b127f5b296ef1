"""Molecular properties for conditioning and metrics: a registry of RDKit descriptors and the
binning that turns a property value into a class label (what the denoiser's label tables and
classifier-free guidance take).

Registered: ``qed`` (Bickerton 2012, RDKit's QED), ``logp`` (Crippen), ``mw`` (average molecular
weight, Da), ``tpsa`` (topological polar surface area, Å²), ``sa`` (synthetic accessibility,
Ertl & Schuffenhauer 2009, RDKit Contrib's sascorer; 1 = easy .. 10 = hard). A property is a
function of a sanitised RDKit molecule; :func:`register_property` adds one. QM9's DFT
properties (``mu``, ``alpha``, ``homo``, ``lumo``, ``gap``, ``r2``, ``zpve``, ``cv``) are
registered by the molecule task, which looks them up in the data's own table
(:func:`discdiff.tasks.molecules.conditioning.register_qm9_properties`; NaN outside QM9).

Conditioning by bins: :func:`quantile_edges` cuts the training values into ``n`` bins of equal
mass (``n - 1`` edges), :func:`bin_labels` maps values to bin ids (NaN, a molecule whose
property could not be computed, maps to the null id ``n``), and a target value maps to the bin
that holds it. Equal-mass bins put every label on the same number of molecules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from rdkit import Chem
from torch import Tensor

from discdiff.registry import Registry

__all__ = [
    "PROPERTIES",
    "register_property",
    "property_values",
    "mol_properties",
    "quantile_edges",
    "bin_labels",
    "parse_targets",
]

PROPERTIES: Registry[Callable[[Chem.Mol], float]] = Registry("property")


def register_property(name: str) -> Callable[[Callable[[Chem.Mol], float]], Callable]:
    """Decorator: register ``fn(mol) -> float`` under ``name``."""

    def deco(fn: Callable[[Chem.Mol], float]) -> Callable[[Chem.Mol], float]:
        PROPERTIES.register(name, fn)
        return fn

    return deco


@register_property("qed")
def _qed(mol: Chem.Mol) -> float:
    from rdkit.Chem import QED

    return float(QED.qed(mol))


@register_property("logp")
def _logp(mol: Chem.Mol) -> float:
    from rdkit.Chem import Crippen

    return float(Crippen.MolLogP(mol))


@register_property("mw")
def _mw(mol: Chem.Mol) -> float:
    from rdkit.Chem import Descriptors

    return float(Descriptors.MolWt(mol))


@register_property("tpsa")
def _tpsa(mol: Chem.Mol) -> float:
    from rdkit.Chem import rdMolDescriptors

    return float(rdMolDescriptors.CalcTPSA(mol))


_SA_MODULE = None


@register_property("sa")
def _sa(mol: Chem.Mol) -> float:
    global _SA_MODULE
    if _SA_MODULE is None:
        import importlib.util
        import os

        from rdkit.Chem import RDConfig

        path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
        if not os.path.isfile(path):
            raise ValueError(f"RDKit's SA_Score contribution is missing ({path})")
        spec = importlib.util.spec_from_file_location("discdiff_sascorer", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _SA_MODULE = module
    return float(_SA_MODULE.calculateScore(mol))


def mol_properties(mol: Chem.Mol | None, names: Sequence[str]) -> list[float]:
    """The named properties of one sanitised molecule (NaN for None or a failed descriptor)."""
    out = []
    for name in names:
        fn = PROPERTIES.get(name)
        try:
            v = float(fn(mol)) if mol is not None else math.nan
        except (ValueError, RuntimeError, ZeroDivisionError):
            v = math.nan
        out.append(v if math.isfinite(v) else math.nan)
    return out


def property_values(mols: Iterable[Chem.Mol | str | None], names: Sequence[str]) -> Tensor:
    """(M, P) float64 property values of molecules or SMILES (a row of NaN where it fails)."""
    names = list(names)
    for n in names:
        PROPERTIES.get(n)  # unknown names: one line listing the registered ones
    rows = []
    for m in mols:
        if isinstance(m, str):
            m = Chem.MolFromSmiles(m)
        rows.append(mol_properties(m, names))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(names))


def quantile_edges(values: Tensor, bins: int) -> tuple[float, ...]:
    """``bins - 1`` increasing edges cutting the finite ``values`` (M,) into equal-mass bins."""
    if bins < 2:
        raise ValueError(f"property bins must be >= 2, got {bins}")
    v = values[torch.isfinite(values)].double()
    if v.numel() < bins:
        raise ValueError(f"{v.numel()} finite property values are too few for {bins} bins")
    q = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    edges = torch.quantile(v, q).tolist()
    for i in range(1, len(edges)):  # ties (a discrete property): keep the edges increasing
        if edges[i] <= edges[i - 1]:
            edges[i] = math.nextafter(edges[i - 1], math.inf)
    return tuple(float(e) for e in edges)


def bin_labels(values: Tensor, edges: Sequence[Sequence[float]]) -> Tensor:
    """(M, P) values -> (M, P) long bin ids in [0, bins); NaN -> the null id ``bins``.

    Every property has the same number of bins (``len(edges[p]) + 1``), so one null id serves all.
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.dim() == 1:
        values = values[:, None]
    if values.shape[1] != len(edges):
        raise ValueError(f"{values.shape[1]} property columns for {len(edges)} sets of bin edges")
    bins = len(edges[0]) + 1
    out = torch.empty(values.shape, dtype=torch.long)
    for p, e in enumerate(edges):
        ids = torch.bucketize(values[:, p], torch.tensor(e, dtype=torch.float64), right=True)
        out[:, p] = torch.where(torch.isfinite(values[:, p]), ids, torch.full_like(ids, bins))
    return out


def parse_targets(items: Sequence[str], known: Sequence[str]) -> dict[str, float]:
    """``["qed=0.7", "logp=1"]`` -> ``{"qed": 0.7, "logp": 1.0}``; names must be in ``known``."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"--target {item!r}: expected NAME=VALUE, e.g. qed=0.7")
        if name not in known:
            have = ", ".join(known) if known else "none (train with --properties)"
            raise ValueError(f"--target {item!r}: the model is conditioned on {have}")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"--target {item!r}: {value!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"--target {item!r}: the value must be finite")
        if name in out:
            raise ValueError(f"--target names {name!r} twice")
        out[name] = v
    return out
