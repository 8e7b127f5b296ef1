"""QM9's DFT properties as conditioning properties: ``mu``, ``alpha``, ``homo``, ``lumo``,
``gap``, ``r2``, ``zpve``, ``cv`` (units in :data:`discdiff.datasets.qm9.QM9_QUANTUM`; energies
in eV).

They are not functions RDKit can compute: each is looked up by the molecule's canonical SMILES
without stereochemistry (a graph has none) in the table the qm9pack wheel ships; stereoisomers,
which share a graph, get the mean of their values. A molecule outside QM9 (most novel samples)
has no value (NaN), so these properties condition training on QM9 and score only the samples
that are QM9 molecules. The table is canonicalised once and kept in the data cache, keyed by the
RDKit version.
"""

from __future__ import annotations

import math

from rdkit import Chem

__all__ = ["QM9_PROPERTY_NAMES", "qm9_property_table"]

_TABLE: dict[str, tuple[float, ...]] | None = None


def _names() -> list[str]:
    from discdiff.datasets.qm9 import QM9_QUANTUM

    return list(QM9_QUANTUM)


QM9_PROPERTY_NAMES = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "cv")


def _key(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def qm9_property_table() -> dict[str, tuple[float, ...]]:
    """Canonical (non-isomeric) SMILES -> the QM9 values in :data:`QM9_PROPERTY_NAMES` order."""
    global _TABLE
    if _TABLE is not None:
        return _TABLE
    from rdkit import __version__ as rdkit_version

    from discdiff.datasets._fetch import cache_dir
    from discdiff.datasets.qm9 import load_qm9_quantum
    from discdiff.files import atomic_path

    if tuple(_names()) != QM9_PROPERTY_NAMES:
        raise RuntimeError("QM9_PROPERTY_NAMES is out of step with datasets.qm9.QM9_QUANTUM")
    path = cache_dir() / "qm9" / f"quantum_canonical_rdkit{rdkit_version}.tsv"
    head = "\t".join(["smiles", *QM9_PROPERTY_NAMES])
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0] == head:
            _TABLE = {
                r[0]: tuple(float(v) for v in r[1:]) for r in (x.split("\t") for x in lines[1:])
            }
            return _TABLE
    smiles, values = load_qm9_quantum()
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for smi, vals in zip(smiles, values, strict=True):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            continue
        k = _key(mol)
        if k in sums:
            sums[k] = [a + b for a, b in zip(sums[k], vals, strict=True)]
            counts[k] += 1
        else:
            sums[k], counts[k] = list(vals), 1
    table = {k: tuple(v / counts[k] for v in vs) for k, vs in sums.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(
                head + "\n" + "".join(
                    "\t".join([k, *(repr(v) for v in vs)]) + "\n" for k, vs in table.items()
                ),
                encoding="utf-8",
            )  # fmt: skip
    except OSError:
        pass  # a read-only cache: the table is still right, only not kept
    _TABLE = table
    return table


def _lookup(index: int):
    def value(mol: Chem.Mol) -> float:
        row = qm9_property_table().get(_key(mol))
        return row[index] if row is not None else math.nan

    value.__doc__ = f"QM9's {QM9_PROPERTY_NAMES[index]} of a QM9 molecule (NaN outside QM9)."
    return value


def _register() -> None:
    from discdiff.chem.properties import PROPERTIES

    for i, name in enumerate(QM9_PROPERTY_NAMES):
        if name not in PROPERTIES:
            PROPERTIES.register(name, _lookup(i))
