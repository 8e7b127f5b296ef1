"""Molecule metrics on DiGress's own samples, next to the figures DiGress published.

    python benchmarks/molecule_metrics.py [--fcd] [--samples NAME=PATH:DATASET ...]

Anchors: ``/work/shared/anchors/digress`` (or $DIGRESS_ANCHORS): DiGress's sample files
(one SMILES a line, ``None`` for a failed sample, largest fragment written for the others).
Novelty uses the QM9 train split of ``discdiff.datasets.qm9`` / MOSES train; the distribution
distances use the QM9 test split / 10,000 MOSES test molecules (fixed seed). Extra rows (e.g. our
own samples) come from ``--samples name=file.txt:qm9`` (dataset ``qm9`` or ``moses``).

Published figures:
- paper: Vignac et al., "DiGress: Discrete Denoising diffusion for graph generation", ICLR 2023;
  QM9 table (validity, uniqueness; mean over runs, +-0.1 without H, +-1.1 / +-0.4 with H) and
  MOSES table (validity, uniqueness, novelty, FCD vs the scaffold test set). Quoted from memory
  of the paper (no copy was reachable here).
- readme: the MOSES checkpoint figures in the DiGress README (github.com/cvignac/DiGress), whose
  25,000 samples are exactly ``generated_smiles_moses.txt`` (validity 0.86032 = 21,508/25,000).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from discdiff.chem.graph import canonical_smiles
from discdiff.chem.metrics import (
    canonical_set,
    format_metrics_table,
    molecule_metrics,
    reference_stats,
)
from discdiff.datasets.moses import load_moses
from discdiff.datasets.qm9 import load_qm9
from discdiff.datasets.smiles import read_smiles_file

ANCHORS = Path(os.environ.get("DIGRESS_ANCHORS", "/work/shared/anchors/digress"))
FILES = [
    ("DiGress QM9 noH", "final_smiles_qm9_noH.txt", "qm9"),
    ("DiGress QM9 withH", "final_smiles_qm9withH.txt", "qm9"),
    ("DiGress MOSES", "generated_smiles_moses.txt", "moses"),
]
PUBLISHED = {
    "DiGress QM9 noH": [("paper", {"validity": 0.990, "uniqueness": 0.962})],
    "DiGress QM9 withH": [("paper", {"validity": 0.954, "uniqueness": 0.976})],
    "DiGress MOSES": [
        ("paper", {"validity": 0.857, "uniqueness": 1.000, "novelty": 0.950, "fcd": "1.19 (SF)"}),
        (
            "readme",
            {"validity": 0.86032, "unique@10k": 0.9999, "novelty": 0.94428, "fcd": "0.618"},
        ),
    ],
}
COLUMNS = [
    "num_samples",
    "validity",
    "validity_repaired",
    "validity_connected",
    "uniqueness",
    "unique@10k",
    "novelty",
    "atom_tv",
    "bond_tv",
    "ring_tv",
    "fcd",
    "seconds",
]


def _references(dataset: str) -> tuple[set[str], object]:
    if dataset == "qm9":
        return canonical_set(load_qm9("train")), reference_stats(load_qm9("test"))
    if dataset == "moses":
        # MOSES's strings are RDKit-canonical already (1 in 3,000 differs under today's RDKit),
        # so they are compared raw, as MOSES's own novelty does: no 1.58M-molecule parse.
        test = random.Random(0).sample(load_moses("test"), 10_000)
        return canonical_set(load_moses("train"), canonicalize=False), reference_stats(test)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'qm9' or 'moses'")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fcd", action="store_true", help="add FCD (needs the optional fcd package)")
    ap.add_argument("--samples", nargs="*", default=[], help="extra rows NAME=PATH:DATASET")
    args = ap.parse_args()
    entries = [(name, ANCHORS / f, ds) for name, f, ds in FILES]
    for spec in args.samples:
        name, _, rest = spec.partition("=")
        path, _, ds = rest.rpartition(":")
        if not name or not path or ds not in ("qm9", "moses"):
            raise SystemExit(f"--samples {spec!r}: expected NAME=PATH:qm9 or NAME=PATH:moses")
        entries.append((name, Path(path), ds))
    start = time.perf_counter()
    refs: dict[str, tuple[set[str], object]] = {}
    rows: dict[str, dict] = {}
    for name, path, ds in entries:
        if ds not in refs:
            t = time.perf_counter()
            refs[ds] = _references(ds)
            print(f"[{ds}] training set and reference statistics: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        samples = read_smiles_file(path)
        m: dict = molecule_metrics(samples, refs[ds][0], refs[ds][1], fcd=args.fcd)
        valid = [c for c in (canonical_smiles(s) for s in samples) if c is not None]
        if len(valid) >= 10_000:  # MOSES's unique@10k: first 10,000 valid samples
            m["unique@10k"] = len(set(valid[:10_000])) / 10_000
        m["seconds"] = time.perf_counter() - t
        rows[f"{name} (ours)"] = m
        for source, figures in PUBLISHED.get(name, []):
            rows[f"{name} ({source})"] = figures
    if not args.fcd:
        for r in rows.values():
            r.setdefault("fcd", None)
    print()
    print(format_metrics_table(rows, COLUMNS, percent=["unique@10k"]))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
