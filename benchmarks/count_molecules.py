"""Count a sample file's molecules with RDKit alone (no discdiff metric code): a second opinion
on the figures the library reports.

    python benchmarks/count_molecules.py SAMPLES.smi [--qm9 discdiff/assets/qm9_canonical.txt.gz]
        [--json out.json]

``SAMPLES.smi``: lines ``SMILES<TAB>name<TAB>status`` as ``molecules sample --out X.smi
--keep-invalid`` writes them (one line per sample; an invalid one has status ``invalid``).
Counted over all lines:

- valid: RDKit parses and sanitises the SMILES and the line is not marked invalid;
- connected: valid and one fragment; aromatic: valid with an aromatic atom (RDKit's aromaticity);
- unique: distinct canonical SMILES (RDKit's, stereo dropped) among the valid;
- novel: unique valid molecules not in QM9 (train, val and test, from the canonical file shipped
  with the package, written by the RDKit version its header names).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from rdkit import Chem, RDLogger

QM9_SETS = Path(__file__).resolve().parent.parent / "discdiff" / "assets" / "qm9_canonical.txt.gz"


def qm9_whole(path: Path) -> set[str]:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    return {line.partition("\t")[2] for line in lines[1:] if line}


def count(lines: list[str], whole: set[str] | None) -> dict[str, float]:
    RDLogger.DisableLog("rdApp.*")
    n = len(lines)
    valid, connected, aromatic = 0, 0, 0
    canon: list[str] = []
    for line in lines:
        smi, *rest = line.split("\t")
        if rest and rest[-1] == "invalid":
            continue
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            continue
        valid += 1
        connected += len(Chem.GetMolFrags(mol)) == 1
        aromatic += any(a.GetIsAromatic() for a in mol.GetAtoms())
        canon.append(Chem.MolToSmiles(mol, isomericSmiles=False))
    unique = set(canon)
    out = {
        "samples": float(n),
        "valid": valid / n if n else 0.0,
        "connected": connected / n if n else 0.0,
        "aromatic_of_valid": aromatic / valid if valid else 0.0,
        "unique_of_valid": len(unique) / valid if valid else 0.0,
    }
    if whole is not None:
        out["novel_of_unique"] = len(unique - whole) / len(unique) if unique else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", type=Path)
    p.add_argument("--qm9", type=Path, default=QM9_SETS)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    lines = [ln for ln in args.samples.read_text().splitlines() if ln.strip()]
    whole = qm9_whole(args.qm9) if args.qm9.is_file() else None
    out = count(lines, whole)
    print(" ".join(f"{k} {v:.4f}" if k != "samples" else f"{k} {v:.0f}" for k, v in out.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
