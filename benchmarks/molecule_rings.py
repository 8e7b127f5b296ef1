"""Which rings the samples have, beside QM9 and DiGress: why aromatic molecules are rare.

    python benchmarks/molecule_rings.py [-n 2000] [--steps 50] [--threads 2] [--no-reject]

Samples ``-n`` molecules from the shipped QM9 checkpoint as ``discdiff molecules sample`` does
(valence and motif guards, rejection unless ``--no-reject``) and counts, per molecule, its ring
kinds: aromatic rings by size, and the other rings by size and number of (Kekulé) double bonds,
beside the QM9 test split and DiGress's own QM9 samples (``molecule_metrics.ANCHORS``). Each
figure is the % of valid molecules with at least one ring of that kind; a row is printed when
some column reaches 0.2%. A ring counted ``ring6 + 2 C=C`` is not aromatic: a cyclohexadiene,
one double bond short of a benzene's Kekulé structure.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from rdkit import Chem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import molecule_metrics as mm  # noqa: E402  (benchmarks/molecule_metrics.py, run as a script)
from count_molecules import ring_kinds  # noqa: E402  (the independent counter's ring kinds)

from discdiff.chem.graph import graph_to_mol  # noqa: E402
from discdiff.chem.metrics import largest_fragment  # noqa: E402
from discdiff.chem.rejection import Rejection  # noqa: E402
from discdiff.datasets.qm9 import load_qm9  # noqa: E402
from discdiff.datasets.smiles import read_smiles_file  # noqa: E402
from discdiff.tasks.molecules import SAMPLE_STEPS  # noqa: E402
from discdiff.tasks.runs import from_pretrained  # noqa: E402


def profile(mols: list[Chem.Mol]) -> tuple[dict[str, float], int]:
    """(% of the molecules with each ring kind, how many molecules)."""
    counts: collections.Counter[str] = collections.Counter()
    for m in mols:
        counts.update(ring_kinds(m))
    n = max(1, len(mols))
    return {k: 100.0 * v / n for k, v in counts.items()}, len(mols)


def _valid(smiles: list[str]) -> list[Chem.Mol]:
    mols = (Chem.MolFromSmiles(s) for s in smiles)
    return [m for m in mols if m is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="molecules to sample")
    ap.add_argument("--steps", type=int, default=SAMPLE_STEPS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-reject", action="store_true", help="keep every first draw")
    args = ap.parse_args()
    if args.n < 1 or args.steps < 1 or args.threads < 1:
        raise SystemExit("-n, --steps and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    task, model = from_pretrained("qm9")
    graphs = task.sample_graphs(
        model, args.n, steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
        reject=None if args.no_reject else Rejection(),
    )  # fmt: skip
    ours = [largest_fragment(m) for a, b in graphs if (m := graph_to_mol(a, b, task.vocab))]
    columns = {
        "discdiff (shipped QM9)": profile(ours),
        "QM9 test": profile(_valid(load_qm9("test"))),
    }
    digress = mm.ANCHORS / "final_smiles_qm9_noH.txt"
    if digress.is_file():
        columns["DiGress QM9 noH (files)"] = profile(_valid(read_smiles_file(digress)))
    else:
        print(f"(no DiGress column: {digress} is missing)")
    kinds = sorted({k for p, _ in columns.values() for k in p}, key=lambda k: (k[0] != "a", k))
    kinds = [k for k in kinds if max(p.get(k, 0.0) for p, _ in columns.values()) >= 0.2]
    names = list(columns)
    print(f"{'% of valid molecules':24s}" + "".join(f"{c:>26s}" for c in names))
    print(f"{'(molecules)':24s}" + "".join(f"{columns[c][1]:>26d}" for c in names))
    for k in kinds:
        print(f"{k:24s}" + "".join(f"{columns[c][0].get(k, 0.0):>26.2f}" for c in names))


if __name__ == "__main__":
    main()
