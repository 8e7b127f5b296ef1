"""Our molecule samples next to DiGress's, in one table, and the time to sample them.

    python benchmarks/molecules.py [-n 10000] [--steps 50] [--threads 2] [--checkpoint PATH]
                                   [--guard both|reject|on|valence|off|all] [--guard-steps last|all]
                                   [--temperature T] [--target qed=0.6 --guidance 1 2]

Samples ``-n`` molecules from the shipped QM9 checkpoint (or ``--checkpoint``, QM9 or MOSES)
with and/or without the valence and motif guards (and rejection, :mod:`discdiff.chem.rejection`),
times the first 1,000, and prints two tables beside
DiGress's own sample files for that data set (and the figures DiGress published); for MOSES the
reference is 10,000 molecules of its test split (seed 0):

1. validity (strict = sanitises as generated; repaired = after DiGress's one-step repair;
   connected), uniqueness, novelty against the QM9 train split and against all of QM9
   (train + val + test), atom/bond/ring total-variation distances to the QM9 test split;
2. the chemistry profile: aromatic molecules, the filter rates of :mod:`discdiff.chem.filters`
   (PAINS, net charge, unstable motifs) and the Wasserstein-1 distances of the QED, SA and MW
   distributions to the QM9 test split, whose own profile is the first row.

With an aromatic bond class (``molecules train --aromatic``) it also prints how many sampled
graphs use that class and how many of those sanitise.

With ``--target`` (a property-conditioned checkpoint, ``molecules train --properties``), it
also samples towards the target at each ``--guidance`` scale and prints the property's mean
against the unconditional samples of the same model and the fraction of the distance to the
target that was covered.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import molecule_metrics as mm  # noqa: E402  (benchmarks/molecule_metrics.py, run as a script)

from discdiff.chem.export import decode_samples  # noqa: E402
from discdiff.chem.filters import FILTERS  # noqa: E402
from discdiff.chem.metrics import (  # noqa: E402
    format_metrics_table,
    molecule_metrics,
    reference_stats,  # noqa: E402
)
from discdiff.chem.properties import mol_properties, parse_targets  # noqa: E402
from discdiff.chem.valence import GUARD_STEPS  # noqa: E402
from discdiff.datasets.moses import load_moses  # noqa: E402
from discdiff.datasets.qm9 import load_qm9  # noqa: E402
from discdiff.datasets.smiles import read_smiles_file  # noqa: E402
from discdiff.tasks.molecules import (  # noqa: E402
    GRID_POWER,
    SAMPLE_STEPS,
)
from discdiff.tasks.molecules.data import novelty_sets  # noqa: E402
from discdiff.tasks.runs import from_pretrained  # noqa: E402

MAIN = ["num_samples", "validity", "validity_repaired", "validity_connected", "uniqueness",
        "novelty", "novelty_whole", "atom_tv", "bond_tv", "ring_tv", "seconds"]  # fmt: skip
PROFILE = ["aromatic", *(f"rate_{k}" for k in FILTERS), "qed_w1", "sa_w1", "mw_w1"]


#: --guard -> (valence guard, motif guard, rejection) of each row, and the rows' labels
GUARDS = {
    "reject": ((True, True, True),),
    "on": ((True, True, False),),
    "valence": ((True, False, False),),
    "off": ((False, False, False),),
    "both": ((True, True, False), (False, False, False)),
    "all": ((True, True, True), (True, True, False), (True, False, False), (False, False, False)),
}
GUARD_LABELS = {(True, True, True): "guards + rejection", (True, True, False):
                "valence + motif guard", (True, False, False): "valence guard",
                (False, False, False): "no guard"}  # fmt: skip


def _sample(task, model, n, args, gen, guard, **cond) -> tuple[list, float, float, object]:
    """(graphs, seconds for all, seconds for the first 1,000, rejection stats); guard =
    (valence, motif, rejection)."""
    from discdiff.chem.rejection import Rejection, RejectionStats

    first = min(1000, n)
    stats = RejectionStats()
    opts = {"temperature": args.temperature} if args.temperature != 1 else {}
    if guard[0]:
        opts["guard_steps"] = args.guard_steps
    sampler = task.make_sampler("ancestral", steps=args.steps, grid_power=args.time_power,
                                valence_guard=guard[0], guidance=cond.get("guidance", 1.0),
                                motif_guard=guard[1], **opts)  # fmt: skip
    kw = dict(steps=args.steps, sampler=sampler, batch_size=args.batch_size,
              grid_power=args.time_power, generator=gen,
              reject=Rejection() if guard[2] else None, stats=stats, **cond)  # fmt: skip
    start = time.perf_counter()
    graphs = task.sample_graphs(model, first, **kw)
    t_first = time.perf_counter() - start
    if n > first:
        graphs += task.sample_graphs(model, n - first, **kw)
    return graphs, time.perf_counter() - start, t_first, stats


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
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="the ancestral sampler's temperature (1 = the model's own law)")  # fmt: skip
    ap.add_argument("--no-digress", action="store_true", help="skip the DiGress rows")
    ap.add_argument(
        "--guard-steps",
        choices=GUARD_STEPS,
        default="last",
        help="reverse steps whose x_0 draw the valence guard acts on",
    )
    ap.add_argument("--guard", choices=tuple(GUARDS), default="both",
                    help="rows with the valence and motif guards (on), those and rejection "
                    "(reject: what `molecules sample` does), the valence guard only (valence), "
                    "neither (off), on and off (both), or all four")  # fmt: skip
    ap.add_argument("--target", action="append", default=[],
                    help="NAME=VALUE (a conditioned checkpoint); repeat for several targets")  # fmt: skip
    ap.add_argument("--guidance", type=float, nargs="*", default=[1.0, 2.0])
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    if args.n < 1 or args.steps < 1 or args.threads < 1:
        raise SystemExit("-n, --steps and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    task, model = from_pretrained(args.checkpoint or "qm9", expect="molecules")
    goals = [parse_targets([t], task.config.properties) for t in args.target]  # one each

    t = time.perf_counter()
    ds = "moses" if task.config.dataset == "moses" else "qm9"
    train, whole, why = novelty_sets(ds)
    if why:
        raise SystemExit(f"cannot load {ds} for novelty: {why}")
    if ds == "moses":  # 10,000 test molecules, the seed of molecule_metrics.py
        test = random.Random(0).sample(load_moses("test"), 10_000)
    else:
        test = load_qm9("test")
    reference = reference_stats(test, profile=True)
    print(f"{ds} train/whole canonical sets and the test profile: {time.perf_counter() - t:.1f} s")

    rows: dict[str, dict] = {f"{ds.upper()} test split": reference.profile_metrics(reference)}
    main_rows: dict[str, dict] = {}
    name = "discdiff QM9 noH" if args.checkpoint is None else f"discdiff {args.checkpoint.name}"
    guards = GUARDS[args.guard]
    timing = []
    for guard in guards:
        gen = torch.Generator().manual_seed(args.seed)
        graphs, t_all, t_first, stats = _sample(task, model, args.n, args, gen, guard)
        mols = task.to_mols(graphs)
        m = molecule_metrics(mols, train, reference, profile=True, whole=whole)
        m["seconds"] = t_all
        temp = f", temperature {args.temperature:g}" if args.temperature != 1 else ""
        every = ", every step" if guard[0] and args.guard_steps == "all" else ""
        label = f"{name} ({args.steps} steps{temp}, {GUARD_LABELS[guard]}{every})"
        main_rows[label] = rows[label] = m
        timing.append(f"{label}: {args.n} in {t_all:.1f} s, the first 1,000 in {t_first:.1f} s")
        if guard[2]:
            timing.append(f"{label}: {stats.summary()}")
        if not task.vocab.kekulize:
            timing.append(f"{label}: {_aromatic_graphs(graphs, mols)}")
    if not args.no_digress:
        for dname, file, dataset in mm.FILES:
            if dataset != ds:
                continue
            t = time.perf_counter()
            m = molecule_metrics(
                read_smiles_file(mm.ANCHORS / file), train, reference, profile=True, whole=whole
            )
            m["seconds"] = time.perf_counter() - t
            main_rows[f"{dname} (files)"] = rows[f"{dname} (files)"] = m
            for source, figures in mm.PUBLISHED.get(dname, []):
                main_rows[f"{dname} ({source})"] = figures
    print()
    print(format_metrics_table(main_rows, MAIN))
    print()
    print(format_metrics_table(rows, PROFILE))
    print()
    print("\n".join(timing) + f" ({args.threads} threads)")
    if goals:
        _conditioned(task, model, goals, args)


def _aromatic_graphs(graphs, mols) -> str:
    """With an aromatic bond class: how many sampled graphs use it, and how many of those (and
    of the rest) RDKit reads as a molecule (an aromatic system that cannot kekulize cannot)."""
    from rdkit import Chem

    none = Chem.SanitizeFlags.SANITIZE_NONE  # what SanitizeMol reports when nothing failed
    has = [bool((b == 4).any()) for _, b in graphs]
    ok = [Chem.SanitizeMol(Chem.Mol(m), catchErrors=True) == none for m in mols]
    n_arom = sum(has)
    valid_arom = sum(h and o for h, o in zip(has, ok, strict=True))
    valid_rest = sum(o and not h for h, o in zip(has, ok, strict=True))
    return (
        f"{100 * n_arom / len(graphs):.1f}% of the graphs have an aromatic bond, "
        f"{100 * valid_arom / max(1, n_arom):.1f}% of those sanitise "
        f"({100 * valid_rest / max(1, len(graphs) - n_arom):.1f}% of the others)"
    )


def _property_mean(task, graphs, name: str) -> tuple[float, int]:
    recs = [r for r in decode_samples(task.to_mols(graphs)) if r.valid]
    vals = [v for v in (mol_properties(r.mol, [name])[0] for r in recs) if v == v]
    return (sum(vals) / len(vals) if vals else float("nan")), len(vals)


def _conditioned(task, model, goals: list[dict[str, float]], args) -> None:
    """The property's mean without a target and towards each target at each guidance scale."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    base, _, _, _ = _sample(task, model, args.n, args, gen, (True, True, False))
    rows = {}
    for prop, goal in (next(iter(g.items())) for g in goals):
        mu0, n0 = _property_mean(task, base, prop)
        rows[f"{prop}: no target"] = {"mean": mu0, "valid": float(n0)}
        for w in args.guidance:
            gen = torch.Generator().manual_seed(args.seed + 2)
            graphs, secs, _, _ = _sample(task, model, args.n, args, gen, (True, True, False),
                                      target={prop: goal}, guidance=w)  # fmt: skip
            mu, n = _property_mean(task, graphs, prop)
            m = molecule_metrics(task.to_mols(graphs))
            rows[f"{prop}: target {goal:g}, guidance {w:g}"] = {
                "mean": mu, "valid": float(n), "moved": (mu - mu0) / (goal - mu0),
                "validity": m["validity"], "uniqueness": m["uniqueness"], "seconds": secs,
            }  # fmt: skip
    print()
    print(format_metrics_table(rows, ["valid", "mean", "moved", "validity", "uniqueness",
                                      "seconds"], percent=["moved"]))  # fmt: skip
    print("moved: (mean - mean without a target) / (target - mean without a target)")


if __name__ == "__main__":
    main()
