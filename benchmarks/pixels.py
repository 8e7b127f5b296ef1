"""Uniform vs absorbing vs discretized-Gaussian diffusion on image pixels, same denoiser and budget.

For each process the same transformer (same size, same seed) is trained for about ``--minutes``
of CPU time (the step count is calibrated from a few timed steps before training starts), then:

- test negative ELBO in bits per dimension, with its standard error over test images;
- label agreement: ``--per-label`` class-conditional samples per class (CFG scale ``--guidance``)
  are labelled by one MLP classifier trained on the real training images (its accuracy on real
  test images is printed as the ceiling);
- nearest-neighbour L2 distance of the samples to the training set beside that of as many
  held-out real images (copies of training images would show as distance 0);
- a PNG grid of the samples per process (one row per class), paths printed.

    OMP_NUM_THREADS=1 python benchmarks/pixels.py --data mnist --levels 16 --minutes 10 --out runs/bench
    OMP_NUM_THREADS=1 python benchmarks/pixels.py --data digits --levels 16 --minutes 3 --out runs/bench-digits
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from discdiff.tasks import pixels as px
from discdiff.tasks import runs
from discdiff.training import TrainConfig


def seconds_per_step(
    task: px.PixelTask, model: torch.nn.Module, data, batch: int, lr: float
) -> float:
    """Wall seconds of one optimizer step (loss, backward, AdamW) on a throwaway copy."""
    probe = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr)
    g = torch.Generator().manual_seed(123)
    times = []
    for i in range(9):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        start = time.perf_counter()
        loss = task.loss_fn(probe, data[idx], g).float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_one(kind: str, args: argparse.Namespace, classifier, train, test) -> dict:
    config = px.PixelConfig(data=args.data, levels=args.levels, process=kind)
    task = px.PixelTask(config)
    options = px.ModelOptions(
        num_layers=args.layers, d_model=args.d_model, num_heads=args.heads, patch=args.patch
    )
    torch.manual_seed(args.seed)
    model = px.make_denoiser(config, options)
    if args.steps:  # a fixed count is fairer than a time budget on a shared machine
        steps = args.steps
    else:
        per_step = seconds_per_step(task, model, train, args.batch_size, args.lr)
        steps = max(10, int(args.minutes * 60 / per_step))
    run_dir = Path(args.out) / kind
    train_config = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(100, steps // 10),
        ckpt_every=0,
        log_every=max(1, steps // 20),
        seed=args.seed,
    )
    start = time.perf_counter()
    task.attach_data(train)
    metrics = runs.train(task, model, train_config, run_dir, device="cpu", progress=False)
    train_s = time.perf_counter() - start
    task, model = runs.load_run(run_dir, expect="pixels")
    g = torch.Generator().manual_seed(args.seed)
    bpd, se, n = px.bits_per_dim(
        task, model, test, limit=args.eval_limit, repeats=args.eval_repeats, generator=g
    )
    start = time.perf_counter()
    q = px.sample_quality(
        task,
        model,
        train,
        test,
        per_label=args.per_label,
        guidance=args.guidance,
        steps=args.sample_steps,
        classifier=classifier,
        generator=g,
    )
    sample_s = time.perf_counter() - start
    grid = px.save_grid(
        q["samples"],
        run_dir / "samples.png",
        args.levels,
        config.height,
        config.width,
        args.per_label,
    )
    out = {
        "process": kind,
        "steps": steps,
        "train_s": train_s,
        "final_train_loss_nats": metrics.get("train_loss", math.nan),
        "bits_per_dim": bpd,
        "bits_per_dim_se": se,
        "eval_images": n,
        "sample_s": sample_s,
        "grid": str(grid),
        **{k: v for k, v in q.items() if k not in ("samples", "labels")},
    }
    (run_dir / "benchmark.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist", choices=sorted(px.IMAGE_SHAPES))
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    ap.add_argument(
        "--steps", type=int, default=0, help="optimizer steps per model (0 = from --minutes)"
    )
    ap.add_argument("--processes", nargs="+", default=list(px.PROCESS_KINDS))
    ap.add_argument("--out", default="runs/bench-pixels")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--patch", type=int, default=1, help="p x p pixels per transformer token")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-limit", type=int, default=None, help="test images for bits/dim")
    ap.add_argument("--eval-repeats", type=int, default=1, help="bound draws per test image")
    ap.add_argument("--per-label", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    for kind in args.processes:
        if kind not in px.PROCESS_KINDS:
            ap.error(f"unknown process {kind!r}; expected some of {px.PROCESS_KINDS}")
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    base = px.PixelConfig(data=args.data, levels=args.levels)
    train = px.load_data(base, "train")
    test = px.load_data(base, "test")
    classifier = px.train_classifier(train, seed=args.seed)
    real_acc = px.label_agreement(px.classify(classifier, test.pixels), test.labels)[0]
    print(
        f"{args.data} at {args.levels} levels; "
        + (f"{args.steps} steps" if args.steps else f"{args.minutes:g} min CPU budget")
        + " per model "
        f"({args.threads} thread(s)); denoiser {args.layers} layers x {args.d_model}, "
        f"patch {args.patch}; "
        f"classifier accuracy on real test images {real_acc:.3f}",
        flush=True,
    )
    rows = [run_one(kind, args, classifier, train, test) for kind in args.processes]

    head = (
        f"{'process':<10} {'steps':>6} {'train s':>8} {'bits/dim (SE)':>16} "
        f"{'agreement (SE)':>16} {'NN samples':>11} {'NN real':>8} {'copies':>6}"
    )
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['process']:<10} {r['steps']:>6} {r['train_s']:>8.0f} "
            f"{r['bits_per_dim']:>8.3f} ({r['bits_per_dim_se']:.3f}) "
            f"{r['agreement']:>8.3f} ({r['agreement_se']:.3f}) "
            f"{r['nn_samples']:>11.3f} {r['nn_heldout']:>8.3f} {r['copies']:>6}"
        )
    print()
    print(
        f"bits/dim over {rows[0]['eval_images']} test images; agreement over "
        f"{rows[0]['num_samples']} samples at guidance {args.guidance} with "
        f"{args.sample_steps} reverse steps; NN = mean L2 to the nearest training image "
        f"(intensities in [0, 1])"
    )
    for r in rows:
        print(f"grid ({r['process']}): {r['grid']}")


if __name__ == "__main__":
    main()
