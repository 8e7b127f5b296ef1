"""QM9 molecules (130,831 SMILES; C, N, O, F; at most 9 heavy atoms) with a stable split.

The SMILES come from the `SMILES` column of the CSV files inside the PyPI wheel
``qm9pack==1.0.3`` (read from the archive, never imported). The split follows DiGress's sizes:
100,000 train, ``int(0.1 * n)`` = 13,083 test and the remaining 17,748 validation molecules,
chosen by a seeded order that depends on nothing but the seed and the row index (SHA-256 of
``"{seed}:{index}"``), so it is the same on every machine and every library version. The split is
written once to ``<cache>/qm9/{train,val,test}.txt`` (one SMILES a line) and read from there.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

from discdiff.datasets._fetch import cache_dir, fetch_package, read_member

__all__ = [
    "QM9_PACKAGE",
    "QM9_QUANTUM",
    "qm9_quantum_table",
    "QM9_SPLITS",
    "load_qm9",
    "load_qm9_quantum",
    "qm9_split_indices",
]

QM9_PACKAGE = ("qm9pack", "1.0.3")
QM9_MEMBERS = tuple(f"qm9pack/data/qm9_part{i}.csv" for i in (1, 2, 3))
QM9_SPLITS = ("train", "val", "test")
QM9_NUM_MOLECULES = 130_831
QM9_NUM_TRAIN = 100_000
SPLIT_SEED = 0

# csv rows of qm9pack hold long coordinate fields; the default field limit (128 kB) is enough,
# but be explicit so a future file with longer rows does not fail half way.
csv.field_size_limit(1 << 24)


def _read_all_smiles(archive: Path) -> list[str]:
    """All SMILES of the three CSV parts, in file order."""
    smiles: list[str] = []
    for member in QM9_MEMBERS:
        text = read_member(archive, member).decode("utf-8")
        reader = csv.reader(io.StringIO(text))
        header = next(reader)
        if "SMILES" not in header:
            raise ValueError(f"{member} has no SMILES column; header starts {header[:5]}")
        col = header.index("SMILES")
        smiles.extend(row[col] for row in reader if row)
    return smiles


def qm9_split_indices(n: int, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Row indices of the train/val/test split of ``n`` molecules (DiGress sizes).

    The order sorts rows by SHA-256 of ``"{seed}:{index}"``: reproducible without any RNG.
    """
    if n <= QM9_NUM_TRAIN:
        raise ValueError(f"n={n} molecules is too few for a {QM9_NUM_TRAIN}-molecule train split")
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    n_test = int(0.1 * n)
    n_val = n - QM9_NUM_TRAIN - n_test
    return {
        "train": order[:QM9_NUM_TRAIN],
        "val": order[QM9_NUM_TRAIN : QM9_NUM_TRAIN + n_val],
        "test": order[QM9_NUM_TRAIN + n_val :],
    }


def _write_split(folder: Path, archive: Path) -> None:
    smiles = _read_all_smiles(archive)
    if len(smiles) != QM9_NUM_MOLECULES:
        raise ValueError(f"qm9pack holds {len(smiles)} SMILES, expected {QM9_NUM_MOLECULES}")
    split = qm9_split_indices(len(smiles))
    folder.mkdir(parents=True, exist_ok=True)
    for name, idx in split.items():
        tmp = folder / f"{name}.txt.tmp"
        tmp.write_text("".join(smiles[i] + "\n" for i in idx), encoding="utf-8")
        os.replace(tmp, folder / f"{name}.txt")
    meta = {
        "source": f"{QM9_PACKAGE[0]}=={QM9_PACKAGE[1]}",
        "seed": SPLIT_SEED,
        "sizes": {k: len(v) for k, v in split.items()},
        "indices": split,
    }
    (folder / "split.json").write_text(json.dumps(meta), encoding="utf-8")


def load_qm9(split: str = "train", cache: str | os.PathLike[str] | None = None) -> list[str]:
    """SMILES of one QM9 split: ``"train"`` (100,000), ``"val"`` (17,748) or ``"test"`` (13,083).

    Downloads the qm9pack wheel once (pip, package index only) and caches the split as text.
    """
    if split not in QM9_SPLITS:
        raise ValueError(f"unknown QM9 split {split!r}; expected one of {QM9_SPLITS}")
    folder = cache_dir(cache) / "qm9"
    path = folder / f"{split}.txt"
    if not all((folder / f"{s}.txt").exists() for s in QM9_SPLITS):
        _write_split(folder, fetch_package(*QM9_PACKAGE, cache=cache))
    return path.read_text(encoding="utf-8").splitlines()


#: QM9's DFT properties as the package has them: name -> (CSV column, factor to the unit used)
HARTREE_EV = 27.211386245988
QM9_QUANTUM = {
    "mu": ("Dipole_debye", 1.0),  # D
    "alpha": ("Polarizability_bohr3", 1.0),  # bohr^3
    "homo": ("HOMO_au", HARTREE_EV),  # eV
    "lumo": ("LUMO_au", HARTREE_EV),  # eV
    "gap": ("HOMO_LUMO_gap_au", HARTREE_EV),  # eV
    "r2": ("R2_bohr2", 1.0),  # bohr^2
    "zpve": ("ZPVE_au", HARTREE_EV),  # eV
    "cv": ("Heatcapacity_Cv_cal_mol_K", 1.0),  # cal/(mol K)
}


def load_qm9_quantum(
    cache: str | os.PathLike[str] | None = None,
) -> tuple[list[str], list[list[float]]]:
    """QM9's SMILES in file order and, for each, the values of :data:`QM9_QUANTUM` (in that
    order and those units), read from the qm9pack wheel and kept as a TSV in the cache."""
    folder = cache_dir(cache) / "qm9"
    path = folder / "quantum.tsv"
    names = list(QM9_QUANTUM)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0] == "\t".join(["smiles", *names]):
            rows = [line.split("\t") for line in lines[1:]]
            return [r[0] for r in rows], [[float(v) for v in r[1:]] for r in rows]
    archive = fetch_package(*QM9_PACKAGE, cache=cache)
    smiles: list[str] = []
    values: list[list[float]] = []
    for member in QM9_MEMBERS:
        reader = csv.reader(io.StringIO(read_member(archive, member).decode("utf-8")))
        header = next(reader)
        missing = [c for c, _ in QM9_QUANTUM.values() if c not in header] + (
            [] if "SMILES" in header else ["SMILES"]
        )
        if missing:
            raise ValueError(f"{member} has no column {missing[0]!r}")
        cols = [(header.index(c), f) for c, f in QM9_QUANTUM.values()]
        s_col = header.index("SMILES")
        for row in reader:
            if row:
                smiles.append(row[s_col])
                values.append([float(row[c]) * f for c, f in cols])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "quantum.tsv.tmp"
    body = "".join(
        "\t".join([s, *(repr(v) for v in vs)]) + "\n" for s, vs in zip(smiles, values, strict=True)
    )
    tmp.write_text("\t".join(["smiles", *names]) + "\n" + body, encoding="utf-8")
    os.replace(tmp, path)
    return smiles, values


_TABLE: dict[str, tuple[float, ...]] | None = None


def qm9_quantum_table(cache: str | os.PathLike[str] | None = None) -> dict[str, tuple[float, ...]]:
    """Canonical SMILES without stereochemistry (a graph has none) -> the values of
    :data:`QM9_QUANTUM` in its order; stereoisomers, which share a graph, get their mean.
    Canonicalised once (RDKit) and kept in the cache, keyed by the RDKit version."""
    global _TABLE
    if _TABLE is not None:
        return _TABLE
    from rdkit import Chem
    from rdkit import __version__ as rdkit_version

    from discdiff.files import atomic_path

    names = list(QM9_QUANTUM)
    path = cache_dir(cache) / "qm9" / f"quantum_canonical_rdkit{rdkit_version}.tsv"
    head = "\t".join(["smiles", *names])
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0] == head:
            _TABLE = {
                r[0]: tuple(float(v) for v in r[1:]) for r in (x.split("\t") for x in lines[1:])
            }
            return _TABLE
    smiles, values = load_qm9_quantum(cache)
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for smi, vals in zip(smiles, values, strict=True):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            continue
        k = Chem.MolToSmiles(mol, isomericSmiles=False)
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
