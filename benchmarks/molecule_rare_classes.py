"""How a molecule model treats its rare atom classes (charged atoms): p(true class) per class.

On the QM9 validation molecules that hold a charged atom, corrupts each at time t with the
model's own processes and reports, per atom class, the model's mean probability of the true
class over all its atoms and over the corrupted ones only, and the mean atoms rate KL where x_t
is the clean molecule. A calibrated model keeps an uncorrupted class (p near 1 at small t);
the shipped QM9 model gives its charged classes p < 0.001 there (see ``continuous_elbo``'s
``ce_weight`` for why and the fix).

    python benchmarks/molecule_rare_classes.py [--checkpoint qm9|PATH|RUN_DIR] [--raw]
"""

from __future__ import annotations

import argparse

import torch

from discdiff.chem.graph import mol_to_graph
from discdiff.tasks.molecules.data import load_training_smiles
from discdiff.tasks.runs import from_pretrained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="qm9", help="shipped name, weights file or run dir")
    ap.add_argument("--raw", action="store_true", help="a run dir's raw weights, not the EMA")
    ap.add_argument("--times", type=float, nargs="*", default=[0.1, 0.3, 0.6])
    ap.add_argument("--molecules", type=int, default=6000, help="validation SMILES to search")
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    torch.set_num_threads(1)
    ema = False if args.raw else None
    task, model = from_pretrained(args.checkpoint, use_ema=ema, expect="molecules")
    model.eval()
    voc = task.vocab
    names = [f"{a}{'+' if c > 0 else '-' if c < 0 else ''}" for a, c in voc.atoms]
    smiles = load_training_smiles("qm9", "val")[: args.molecules]
    charged = [s for s in smiles if "+" in s or "-" in s]
    print(f"{len(charged)} of {len(smiles)} validation molecules hold a charged atom")
    f = task.graph_dataset([mol_to_graph(s, voc) for s in charged]).fields
    procs, real, gen = task.processes, f["node_mask"], torch.Generator().manual_seed(0)
    n = f["atoms"].shape[0]
    print(f"{'t':>5} {'class':<5} {'atoms':>5} {'p(true)':>8} {'corrupted':>9} {'p there':>8}")
    for tv in args.times:
        t = torch.full((n,), tv, dtype=torch.float64)
        xa = procs["atoms"].sample_marginal(f["atoms"], t, generator=gen)
        xb = procs["bonds"].sample_marginal(f["bonds"], t, generator=gen)
        with torch.no_grad():
            out = model({"atoms": xa, "bonds": xb}, t.float(), {"node_mask": real})
        p = torch.softmax(out["atoms"], -1)
        for k, name in enumerate(names):
            m = real & (f["atoms"] == k)
            if not m.any():
                continue
            bad = m & (xa != f["atoms"])
            there = f"{float(p[bad][:, k].mean()):8.4f}" if bad.any() else f"{'-':>8}"
            print(f"{tv:>5} {name:<5} {int(m.sum()):>5} {float(p[m][:, k].mean()):8.4f} "
                  f"{int(bad.sum()):>9} {there}")  # fmt: skip
    t = torch.full((n,), 0.1, dtype=torch.float64)
    with torch.no_grad():
        out = model({"atoms": f["atoms"], "bonds": f["bonds"]}, t.float(), {"node_mask": real})
    kl = procs["atoms"].rate_kl(f["atoms"], f["atoms"], out["atoms"], t)
    print("atoms rate KL at t = 0.1 on the clean molecules, nats per atom:")
    for k, name in enumerate(names):
        m = real & (f["atoms"] == k)
        if m.any():
            print(f"  {name:<4} {float(kl[m].mean()):.3f}")


if __name__ == "__main__":
    main()
