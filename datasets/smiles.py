"""Read a user's SMILES file: one SMILES a line (``.smi``), or a CSV/TSV table with a SMILES column.

Detection: a file whose first line holds a comma, tab or semicolon is a table (SMILES never
contain those characters); its header must name the SMILES column (``column=`` or, by default,
the first header cell called ``smiles``/``smi``/``canonical_smiles``/``isomeric_smiles``, any case).
Otherwise each non-blank line's first whitespace-separated token is a SMILES (so ``SMILES name``
lines work); a first line that is just ``smiles`` is taken as a header. ``.gz`` files are read
compressed. Strings are returned as written (``None`` lines stay, e.g. a sampler's failures).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

__all__ = ["read_smiles_file", "SMILES_COLUMN_NAMES"]

SMILES_COLUMN_NAMES = ("smiles", "smi", "canonical_smiles", "isomeric_smiles")
_DELIMITERS = (",", "\t", ";")


def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8-sig") as f:
                return f.read()
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot decode {str(path)!r} as utf-8: {err.reason}") from None


def read_smiles_file(path: str | os.PathLike[str], column: str | None = None) -> list[str]:
    """SMILES strings from ``path`` (one per line, or the SMILES column of a CSV/TSV table)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"SMILES file {str(p)!r} is a folder; name a .smi or .csv file")
    if p.exists() and not p.is_file():  # /dev/null, a FIFO, a device
        raise ValueError(f"SMILES file {str(p)!r} is not a regular file")
    if not p.is_file():
        raise FileNotFoundError(f"SMILES file {str(p)!r} does not exist")
    text = _read_text(p)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delim = next((d for d in _DELIMITERS if d in first), None)
    if delim is None:
        if column is not None:
            raise ValueError(f"column={column!r} given but {p.name} is not a table (no delimiter)")
        tokens = [ln.split()[0] for ln in lines if ln.strip()]
        if tokens and tokens[0].lower() in SMILES_COLUMN_NAMES:
            tokens = tokens[1:]
        return tokens
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    header = [h.strip() for h in next(reader)]
    if column is not None:
        if column not in header:
            raise ValueError(f"column {column!r} not in the header of {p.name}: {header}")
        col = header.index(column)
    else:
        low = [h.lower() for h in header]
        found = [i for i, h in enumerate(low) if h in SMILES_COLUMN_NAMES]
        if not found:
            raise ValueError(
                f"no SMILES column in {p.name}: header is {header}; expected one of "
                f"{SMILES_COLUMN_NAMES} (any case) or pass column="
            )
        col = found[0]
    out = []
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        if col >= len(row):
            raise ValueError(f"row {row} of {p.name} has no cell for column {header[col]!r}")
        out.append(row[col].strip())
    return out
