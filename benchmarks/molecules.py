"""Our molecule samples next to DiGress's, in one table, and the time to sample them.

    python benchmarks/molecules.py [-n 10000] [--steps 50] [--threads 2] [--checkpoint PATH]
                                   [--no-valence-guard]

Samples ``-n`` molecules from the shipped QM9 checkpoint (or ``--checkpoint``), times the
sampling of the first 1,000 (the figure the issue targets: <= 60 s on 2 CPU cores), and prints
one metrics table: our samples, then DiGress's own sample files with the figures DiGress
published. Our row is computed from the raw sampled graphs (strict validity = sanitises as
generated; repaired = after DiGress's one-step repair). Novelty is against the QM9 train split,
distribution distances against the QM9 test split, as for the DiGress rows (the reference
sets, anchor files and published figures come from ``benchmarks/molecule_metrics.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import molecule_metrics as mm  # noqa: E402  (benchmarks/molecule_metrics.py, run as a script)

from discdiff.chem.metrics import format_metrics_table, molecule_metrics  # noqa: E402
from discdiff.datasets.smiles import read_smiles_file  # noqa: E402
from discdiff.tasks.molecules import (  # noqa: E402
    GRID_POWER,
    SAMPLE_STEPS,
    load_pretrained,
    shipped_checkpoint,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="molecules to sample and score")
    ap.add_argument("--steps", type=int, default=SAMPLE_STEPS, help="reverse diffusion steps")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument(
        "--time-power", type=float, default=GRID_POWER, help="steps at t_k = (1 - k/n)^P"
    )
    ap.add_argument("--no-digress", action="store_true", help="skip the DiGress rows")
    ap.add_argument(
        "--no-valence-guard", action="store_true", help="plain ancestral sampling (no guard)"
    )
    args = ap.parse_args()
    if args.n < 1 or args.steps < 1 or args.threads < 1:
        raise SystemExit("-n, --steps and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    model, task = load_pretrained(args.checkpoint or shipped_checkpoint())
    gen = torch.Generator().manual_seed(args.seed)

    first = min(1000, args.n)
    start = time.perf_counter()
    graphs = task.sample_graphs(
        model,
        first,
        steps=args.steps,
        batch_size=args.batch_size,
        grid_power=args.time_power,
        generator=gen,
        valence_guard=not args.no_valence_guard,
    )
    t_1000 = time.perf_counter() - start
    if args.n > first:
        graphs += task.sample_graphs(
            model,
            args.n - first,
            steps=args.steps,
            batch_size=args.batch_size,
            grid_power=args.time_power,
            generator=gen,
            valence_guard=not args.no_valence_guard,
        )
    t_all = time.perf_counter() - start
    print(
        f"sampled {args.n} molecules in {t_all:.1f} s ({args.steps} steps, {args.threads} "
        f"threads); the first {first}: {t_1000:.1f} s"
    )

    train, reference = mm._references("qm9")
    rows: dict[str, dict] = {}
    ours = molecule_metrics(task.to_mols(graphs), train, reference)
    ours["seconds"] = t_all
    guard = "no guard" if args.no_valence_guard else "valence guard"
    rows[f"discdiff QM9 noH ({args.steps} steps, power {args.time_power:g}, {guard})"] = ours
    if not args.no_digress:
        for name, file, dataset in mm.FILES:
            if dataset != "qm9":
                continue
            t = time.perf_counter()
            m = molecule_metrics(read_smiles_file(mm.ANCHORS / file), train, reference)
            m["seconds"] = time.perf_counter() - t
            rows[f"{name} (files)"] = m
            for source, figures in mm.PUBLISHED.get(name, []):
                rows[f"{name} ({source})"] = figures
    for r in rows.values():
        r.setdefault("fcd", None)
    cols = [c for c in mm.COLUMNS if c != "unique@10k"]
    print()
    print(format_metrics_table(rows, cols))
    print(f"\nsampling time for {first} molecules: {t_1000:.1f} s on {args.threads} thread(s)")


if __name__ == "__main__":
    main()
