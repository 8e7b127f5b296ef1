"""How many reverse steps a molecule model needs: the metrics at each (steps, grid power).

    python benchmarks/molecule_steps.py [-n 2000] [--guard off|last|all] [--threads 2]
                                        [--checkpoint PATH] STEPS:POWER [STEPS:POWER ...]

Samples ``-n`` molecules from the shipped QM9 checkpoint (or ``--checkpoint``) with ancestral
sampling at each ``STEPS:POWER`` (the grid t_k = (1 - k/n)^POWER; ``50:3`` is ``molecules
sample``'s default), the same seed each time, and prints validity, connectedness, uniqueness,
novelty against all of QM9, the atom / bond / ring total-variation distances and the aromatic
share against the QM9 test split, the QED / SA / MW Wasserstein distances and the seconds.
``--guard``: no valence guard (``off``: the model's own law), the guard on the last step's
draw (``last``, the default of ``molecules sample``) or on every step's (``all``); with a
guard the motif guard acts too (as in ``molecules sample``). No rejection: the first draws.

Factorised steps (each position drawn independently given x_t) carry an error that vanishes
as the steps shrink; this script shows what it costs at a given number of steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from discdiff.chem.metrics import format_metrics_table, molecule_metrics, reference_stats
from discdiff.datasets.qm9 import load_qm9
from discdiff.tasks.molecules import GRID_POWER
from discdiff.tasks.molecules.data import novelty_sets
from discdiff.tasks.runs import from_pretrained

COLUMNS = ["validity", "validity_connected", "uniqueness", "novelty_whole", "atom_tv",
           "bond_tv", "ring_tv", "aromatic", "qed_w1", "sa_w1", "mw_w1", "seconds"]  # fmt: skip


def _config(text: str) -> tuple[int, float]:
    steps, sep, power = text.partition(":")
    try:
        out = int(steps), float(power) if sep else GRID_POWER
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STEPS:POWER, e.g. 50:3") from None
    if out[0] < 1 or out[1] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: steps >= 1 and power > 0")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", type=_config, nargs="+", metavar="STEPS:POWER")
    ap.add_argument("-n", type=int, default=2000, help="molecules per configuration")
    ap.add_argument("--guard", choices=("off", "last", "all"), default="off")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    torch.set_num_threads(args.threads)
    task, model = from_pretrained(args.checkpoint or "qm9", expect="molecules")
    if task.config.dataset != "qm9":
        raise SystemExit("this script scores against QM9; give a QM9 checkpoint")
    train, whole, why = novelty_sets("qm9")
    if why:
        raise SystemExit(f"cannot load qm9 for novelty: {why}")
    reference = reference_stats(load_qm9("test"), profile=True)
    guard = args.guard != "off"
    opts = {"guard_steps": args.guard} if guard else {}
    rows = {}
    for steps, power in args.configs:
        gen = torch.Generator().manual_seed(args.seed)
        sampler = task.make_sampler("ancestral", steps=steps, grid_power=power,
                                    valence_guard=guard, motif_guard=guard, **opts)  # fmt: skip
        start = time.perf_counter()
        graphs = task.sample_graphs(
            model, args.n, steps=steps, sampler=sampler, batch_size=args.batch_size,
            grid_power=power, generator=gen,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        m = molecule_metrics(task.to_mols(graphs), train, reference, profile=True, whole=whole)
        m["seconds"] = seconds
        label = f"{steps} steps, power {power:g}, guard {args.guard}"
        rows[label] = m
        print(format_metrics_table({label: m}, COLUMNS), flush=True)
    print()
    print(format_metrics_table(rows, COLUMNS))
    print(f"\n{args.n} molecules per row, seed {args.seed}, {args.threads} threads")


if __name__ == "__main__":
    main()
