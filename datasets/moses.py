"""MOSES benchmark molecules (train 1,584,663; test 176,074; test_scaffolds 176,225 SMILES).

Read from ``moses/dataset/data/{split}.csv.gz`` (column ``SMILES``) inside the PyPI wheel
``molsets==0.3.1``; the package itself is never imported (it pins old dependencies).
"""

from __future__ import annotations

import csv
import gzip
import io
import os

from discdiff.datasets._fetch import fetch_package, read_member

__all__ = ["MOSES_PACKAGE", "MOSES_SPLITS", "load_moses"]

MOSES_PACKAGE = ("molsets", "0.3.1")
MOSES_SPLITS = ("train", "test", "test_scaffolds")


def load_moses(split: str = "train", cache: str | os.PathLike[str] | None = None) -> list[str]:
    """SMILES of one MOSES split: ``"train"``, ``"test"`` or ``"test_scaffolds"``."""
    if split not in MOSES_SPLITS:
        raise ValueError(f"unknown MOSES split {split!r}; expected one of {MOSES_SPLITS}")
    archive = fetch_package(*MOSES_PACKAGE, cache=cache)
    raw = gzip.decompress(read_member(archive, f"moses/dataset/data/{split}.csv.gz"))
    reader = csv.reader(io.StringIO(raw.decode("utf-8")))
    header = next(reader)
    if "SMILES" not in header:
        raise ValueError(f"MOSES {split}.csv.gz has no SMILES column; header is {header}")
    col = header.index("SMILES")
    return [row[col] for row in reader if row]
