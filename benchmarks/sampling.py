"""Denoiser calls and samples/s of the absorbing samplers: plain ancestral, MDLM caching, first-hitting.

A small randomly initialised :class:`discdiff.nn.TransformerDenoiser` (absorbing, 256 tokens),
batch 4, ``steps`` = 256 and 1000; ratios are against the plain ancestral sampler measured in the
same run. The transformer is time-free (``time_conditioning=False``, as MDLM), so the caching
sampler returns exactly the plain sampler's samples.

    python benchmarks/sampling.py [--device cuda] [--batch 16] [--length 256] [--steps 256 1000]
"""

from __future__ import annotations

import argparse
import time

import torch

from discdiff import Absorbing, LogLinear
from discdiff.nn import TransformerConfig, TransformerDenoiser
from discdiff.samplers import AncestralSampler, CachingSampler, FirstHittingSampler, Sampler


def timed(sampler: Sampler, model, proc, shape, device) -> tuple[float, int, int]:
    """(seconds, denoiser calls, rows evaluated) of one sampling call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    res = sampler.sample(
        model, proc, shape, generator=torch.Generator().manual_seed(0), device=device
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, res.num_calls, res.rows_evaluated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--steps", type=int, nargs="+", default=[256, 1000])
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    proc = Absorbing(args.vocab, LogLinear())
    cfg = TransformerConfig(
        num_states=args.vocab + 1,
        num_classes=args.vocab,
        num_layers=args.layers,
        d_model=args.d_model,
        num_heads=4,
        max_len=args.length,
        time_conditioning=False,
    )
    model = TransformerDenoiser(cfg).to(device).eval()
    shape = (args.batch, args.length)
    timed(AncestralSampler(4), model, proc, shape, device)  # warm-up
    print(
        f"absorbing, {args.length} tokens, batch {args.batch}, {args.layers}-layer d={args.d_model} "
        f"transformer, vocab {args.vocab}, device {device}"
    )
    head = f"{'sampler':<14}{'steps':>6}{'calls':>7}{'rows':>8}{'samples/s':>11}{'calls x':>9}{'speed x':>9}"
    print(head)
    print("-" * len(head))
    for steps in args.steps:
        runs = {
            "ancestral": AncestralSampler(steps),
            "caching": CachingSampler(steps),
            "first-hitting": FirstHittingSampler(),
        }
        base_sec = base_calls = None
        for name, sampler in runs.items():
            sec, calls, rows = timed(sampler, model, proc, shape, device)
            if base_sec is None:
                base_sec, base_calls = sec, calls
            rate = args.batch / sec
            print(
                f"{name:<14}{steps if name != 'first-hitting' else '-':>6}{calls:>7}{rows:>8}"
                f"{rate:>11.2f}{calls / base_calls:>9.3f}{base_sec / sec:>9.2f}"
            )


if __name__ == "__main__":
    main()
