"""Training-step throughput of a TransformerDenoiser, what the diffusion adds, and FLOP use.

Times the Trainer's own step (``Trainer.train_step``: autocast, loss, backward, grad clip,
AdamW) on one fixed batch, for two loss functions, interleaved step by step in one run so that
both see the same machine load:

- ``denoiser + CE``: the batch carries inputs corrupted once beforehand and their times; the
  loss is plain per-token cross-entropy of the logits against x_0 (no diffusion at all);
- ``diffusion``: ``continuous_elbo(process, model, x0, boundary=False)``, the training
  objective: time sampling, corruption x_t ~ q(x_t | x_0), the denoiser, the weighted loss.

The share the diffusion adds is (diffusion - CE) / diffusion on the median (and fastest)
step times; since a shared machine makes whole-step differences noisy, the diffusion's own
work is also timed in isolation: the same loss calls with a denoiser that returns fixed
logits (time sampling + corruption + weighted loss, forward and backward into the logits)
against plain CE on those logits. Achieved FLOP/s
is ``3 x flops_per_token x tokens/s`` (forward + backward), compared with the rate of a large
fp32 ``torch.matmul`` measured in the same process (and the bf16 rate too on CUDA, where the
step runs under bf16 autocast).

    python benchmarks/train_step.py [--batch 8] [--len 256] [--layers 6] [--width 384]
        [--vocab 256] [--process absorbing|uniform] [--device auto|cpu|cuda] [--compile]
        [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from discdiff.losses import continuous_elbo, corrupt, sample_times
from discdiff.nn import TransformerConfig, TransformerDenoiser, count_parameters, flops_per_token
from discdiff.processes import Absorbing, Uniform
from discdiff.schedules import LogLinear
from discdiff.training import TrainConfig, Trainer
from discdiff.training.device import resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an (n, n) @ (n, n) matmul in ``dtype`` over ``repeats`` timed runs."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device).to(dtype)
    b = torch.randn(n, n, generator=gen, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def isolated_loss_times(
    proc: Absorbing | Uniform,
    x0: Tensor,
    gen: torch.Generator,
    device: torch.device,
    repeats: int,
) -> tuple[float, float]:
    """Median seconds of (diffusion loss, plain CE) from fixed logits, forward + backward.

    The diffusion call includes time sampling, the corruption x_t ~ q(x_t | x_0) and the
    weighted loss; its denoiser just returns a leaf tensor of logits, so the difference from
    CE is exactly what the diffusion adds to a training step beyond the network.
    """
    B, L = x0.shape
    logits = torch.randn(B, L, proc.num_classes, generator=gen, device=device)  # (B, L, K)
    logits.requires_grad_(True)

    def diffusion() -> None:
        loss = continuous_elbo(proc, lambda x_t, t: logits, x0, boundary=False, generator=gen)
        loss.mean().backward()

    def ce() -> None:
        flat = logits.flatten(0, 1)  # (B L, K)
        F.cross_entropy(flat, x0.flatten(), reduction="none").view(B, L).sum(1).mean().backward()

    times: dict[str, list[float]] = {"diffusion": [], "ce": []}
    for i in range(repeats + 2):  # interleaved, the first two rounds are warm-up
        for name, fn in (("diffusion", diffusion), ("ce", ce)):
            logits.grad = None
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    out = [statistics.median(times["diffusion"]), statistics.median(times["ce"])]
    return out[0], out[1]


def repeat(batch: Any) -> Iterator[Any]:
    while True:
        yield batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    ap.add_argument("--len", type=int, default=256, dest="length")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=256, help="K, e.g. 256 (bytes) or 50257 (GPT-2)")
    ap.add_argument("--process", choices=("absorbing", "uniform"), default="absorbing")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    ap.add_argument("--matmul-n", type=int, default=None, help="default: 2048 CPU, 8192 CUDA")
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)

    load_before = os.getloadavg()[0]
    device = resolve_device(args.device)
    batch_size = args.batch or (64 if device.type == "cuda" else 8)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # an honest fp32 reference rate
    torch.manual_seed(0)
    K, L = args.vocab, args.length
    proc = (Absorbing if args.process == "absorbing" else Uniform)(K, LogLinear())
    cfg = TransformerConfig(
        num_states=proc.num_states,
        num_classes=K,
        num_layers=args.layers,
        d_model=args.width,
        num_heads=args.heads,
        max_len=L,
    )
    model = TransformerDenoiser(cfg)
    matmul_n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    fp32_rate = matmul_rate(device, torch.float32, matmul_n)

    gen = torch.Generator(device=device).manual_seed(1)
    x0 = torch.randint(0, K, (batch_size, L), generator=gen, device=device)  # (B, L)
    t_pre = sample_times(batch_size, gen, device).float()  # (B,)
    x_pre = corrupt({"x": proc}, {"x": x0}, t_pre, {}, gen)["x"]  # (B, L)
    ce_batch = {"x0": x0, "x_t": x_pre, "t": t_pre}

    def diffusion_loss(m: nn.Module, batch: dict[str, Tensor], g: torch.Generator) -> Tensor:
        return continuous_elbo(proc, m, batch["x0"], boundary=False, generator=g)  # (B,)

    def ce_loss(m: nn.Module, batch: dict[str, Tensor], g: torch.Generator) -> Tensor:
        logits = m(batch["x_t"], batch["t"])  # (B, L, K)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), batch["x0"].flatten(), reduction="none")
        return ce.view(batch_size, L).sum(1)  # (B,)

    train_cfg = TrainConfig(steps=10**9, batch_size=batch_size, lr=1e-4, compile=args.compile)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            model,
            diffusion_loss,
            [ce_batch],
            train_cfg,
            run_dir,
            device=device,
            progress=False,
            tensorboard=False,
        )
        variants: dict[str, Callable[..., Tensor]] = {
            "denoiser + CE": ce_loss,
            "diffusion": diffusion_loss,
        }
        stream = repeat(ce_batch)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(args.warmup + args.steps):
            for name, fn in variants.items():
                trainer.loss_fn = fn  # the same step path, optimizer and weights for both
                sync(device)
                start = time.perf_counter()
                loss = trainer.train_step(stream).loss
                float(loss)  # wait for the step's result
                elapsed = time.perf_counter() - start
                if i >= args.warmup:
                    times[name].append(elapsed)

        # the diffusion's own work, isolated: the same loss calls with a denoiser that returns a
        # fixed logits leaf, forward + backward into the logits, vs plain CE on those logits
        diff_extra, ce_extra = isolated_loss_times(proc, x0, gen, device, 20)

    # the reference rate, measured before and after the steps (the best of both: the machine's
    # capacity, so that a loaded machine does not flatter the ratio)
    fp32_rate = max(fp32_rate, matmul_rate(device, torch.float32, matmul_n))
    bf16_rate = matmul_rate(device, torch.bfloat16, matmul_n) if device.type == "cuda" else None

    tokens = batch_size * L
    train_flops_per_token = 3.0 * flops_per_token(cfg, L)
    precision = "bf16 autocast" if trainer.dtype == torch.bfloat16 else "fp32"
    threads = torch.get_num_threads()
    print(
        f"{args.process} process, K={K}, {args.layers} layers x {args.width} wide "
        f"({count_parameters(model) / 1e6:.2f}M params), batch {batch_size} x {L} tokens, "
        f"device {device} ({precision}{', compiled' if args.compile else ''}), "
        f"torch threads {threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
    )
    print(
        f"{args.steps} timed steps per variant after {args.warmup} warm-up, interleaved; "
        f"median (min) ms per step"
    )
    head = (
        f"{'step':<16}{'median ms':>11}{'min ms':>9}{'tokens/s':>11}"
        f"{'GFLOP/s':>10}{'/ fp32 mm':>11}"
    )
    if bf16_rate is not None:
        head += f"{'/ bf16 mm':>11}"
    print(head)
    print("-" * len(head))
    med = {}
    for name, ts in times.items():
        med[name] = statistics.median(ts)
        rate = tokens / med[name]
        achieved = train_flops_per_token * rate
        row = (
            f"{name:<16}{1e3 * med[name]:>11.1f}{1e3 * min(ts):>9.1f}{rate:>11.0f}"
            f"{achieved / 1e9:>10.1f}{achieved / fp32_rate:>11.1%}"
        )
        if bf16_rate is not None:
            row += f"{achieved / bf16_rate:>11.1%}"
        print(row)
    full, base = med["diffusion"], med["denoiser + CE"]
    print()
    print(f"fp32 matmul {matmul_n}^3: {fp32_rate / 1e9:.1f} GFLOP/s", end="")
    print(f"; bf16: {bf16_rate / 1e9:.1f} GFLOP/s" if bf16_rate is not None else "")
    print(f"training FLOPs per token (3 x forward): {train_flops_per_token / 1e6:.2f} MFLOP")
    print(
        f"diffusion share of the step: (diffusion - CE) / diffusion = "
        f"{(full - base) / full:+.1%} (goal < 5%); min-based "
        f"{(min(times['diffusion']) - min(times['denoiser + CE'])) / min(times['diffusion']):+.1%}"
    )
    extra = diff_extra - ce_extra
    print(
        f"isolated (fixed-logits denoiser, fwd + bwd into the logits): diffusion loss "
        f"{1e3 * diff_extra:.2f} ms vs CE {1e3 * ce_extra:.2f} ms: the diffusion adds "
        f"{1e3 * extra:.2f} ms = {extra / full:+.2%} of the median step (goal < 5%)"
    )
    achieved = train_flops_per_token * tokens / full / fp32_rate
    best = train_flops_per_token * tokens / min(times["diffusion"]) / fp32_rate
    print(
        f"achieved / fp32 matmul rate, diffusion step: {achieved:.1%} median, {best:.1%} "
        f"fastest step (goal 50% on CPU)"
    )
    print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
