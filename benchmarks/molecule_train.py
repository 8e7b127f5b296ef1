"""The molecule training step, data path against data path (and compiled), interleaved.

Times ``Trainer.train_step`` (loss, backward, clip, fused AdamW, EMA; bf16 autocast on CUDA)
of the graph denoiser on QM9 graphs for each variant, one step of each in turn (A B A B ...),
with a device sync around every timed step, after warm-up steps:

- ``loader``: the DataLoader path (``data_on_device=False``): a Python ``__getitem__`` per
  graph, torch's collate, a copy to the device;
- ``resident``: the graphs on the device, batches gathered there by a device generator
  (``data_on_device=True``, the default where the data fit);
- ``compiled`` (``--compile``): resident data and ``torch.compile`` of the denoiser;
- ``cuda-graphs`` (``--cuda-graphs``, CUDA only): resident data and the denoiser compiled
  with CUDA graphs (``torch.compile(mode="reduce-overhead")``).

Prints median ms per step, graphs/s, and each variant's median of per-round ratios to the
first variant. ``--size shipped`` is the shipped QM9 model (4 x 64/32), ``--size digress``
DiGress's QM9 size (8 layers, node 192, edge 64, 8 heads; 3.97 M parameters).

    python benchmarks/molecule_train.py [--size shipped|digress] [--batch 128] [--rounds 20]
        [--device auto] [--threads N] [--compile] [--cuda-graphs] [--max-train 20000]
        [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZES = {
    "shipped": dict(num_layers=4, node_dim=64, edge_dim=32, num_heads=4),
    "digress": dict(num_layers=8, node_dim=192, edge_dim=64, num_heads=8),
}


def sizes_of(name: str) -> dict[str, Any]:
    s = dict(SIZES[name])
    s.update(
        node_ff_dim=2 * s["node_dim"], edge_ff_dim=2 * s["edge_dim"], global_dim=64,
        global_ff_dim=128,
    )  # fmt: skip
    return s


def qm9_task(max_train: int) -> Any:
    """The molecule task on the first ``max_train`` QM9 SMILES (fetched and cached once)."""
    from discdiff.tasks.molecules import MoleculeTask
    from discdiff.tasks.molecules.data import prepare_molecule_data

    prep = prepare_molecule_data("qm9", max_train=max_train)
    task = MoleculeTask.from_graphs(prep.graphs, prep.vocab, max_nodes=prep.max_nodes)
    task.attach_data(task.graph_dataset(prep.graphs), task.graph_dataset(prep.val_graphs))
    return task


def trainer_for(task: Any, variant: str, args: argparse.Namespace, folder: Path) -> Any:
    from discdiff.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = task.build_denoiser(**sizes_of(args.size))
    cfg = TrainConfig(
        steps=10**6, batch_size=args.batch, lr=1e-4, warmup_steps=1, ema_decay=0.999,
        ckpt_every=0, log_every=10**6, data_on_device=variant != "loader",
        compile=variant == "compiled", cuda_graphs=variant == "cuda-graphs",
    )  # fmt: skip
    return Trainer(
        model, task.loss_fn, task.dataset("train"), cfg, folder / variant,
        collate_fn=task.collate(), count_tokens=task.count_tokens, device=args.device,
        progress=False, tensorboard=False,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="shipped")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--max-train", type=int, default=20000)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from discdiff.training.device import resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    variants = ["loader", "resident"]
    if args.compile:
        variants.append("compiled")
    if args.cuda_graphs:
        variants.append("cuda-graphs")
    task = qm9_task(args.max_train)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {v: [] for v in variants}
    first_call: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v: trainer_for(task, v, args, Path(tmp)) for v in variants}
        for v, tr in trainers.items():
            sync()
            start = time.perf_counter()
            for _ in range(args.warmup):
                tr.train_step()
            sync()
            first_call[v] = time.perf_counter() - start
        for _ in range(args.rounds):
            for v, tr in trainers.items():
                sync()
                start = time.perf_counter()
                tr.train_step()
                sync()
                times[v].append(time.perf_counter() - start)
    base = variants[0]
    n_params = sum(p.numel() for p in trainers[base].module.parameters())
    print(
        f"molecule training step, {args.size} size ({n_params / 1e6:.2f} M parameters), batch "
        f"{args.batch}, QM9 ({args.max_train} graphs), device {device}, torch threads "
        f"{torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(f"{args.rounds} rounds after {args.warmup} warm-up steps, interleaved; median ms")
    print(f"{'variant':<12} {'median ms':>10} {'min ms':>8} {'graphs/s':>10} {'x ' + base:>10}")
    out: dict[str, Any] = {"size": args.size, "batch": args.batch, "device": str(device)}
    for v in variants:
        med = statistics.median(times[v])
        ratio = statistics.median(b / a for a, b in zip(times[v], times[base], strict=True))
        out[v] = {
            "median_ms": 1000 * med, "min_ms": 1000 * min(times[v]),
            "graphs_per_s": args.batch / med, "speedup": ratio,
            "warmup_s": first_call[v],
        }  # fmt: skip
        print(
            f"{v:<12} {1000 * med:>10.2f} {1000 * min(times[v]):>8.2f} "
            f"{args.batch / med:>10.0f} {ratio:>9.3f}x"
        )
    print("warm-up (compile) seconds: " + ", ".join(f"{v} {s:.1f}" for v, s in first_call.items()))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
