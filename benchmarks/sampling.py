"""Denoiser calls and samples/s of the absorbing samplers: plain ancestral, MDLM caching, first-hitting.

A small randomly initialised :class:`discdiff.nn.TransformerDenoiser` (absorbing, 256 tokens),
batch 4, ``steps`` = 256 and 1000. The samplers run interleaved (ancestral, caching,
first-hitting; again ``--rounds`` times) and each speed-up is the median over rounds of that
round's ancestral time / the sampler's time. ``overhead`` is the time outside the denoiser's
forward calls as a share of the time inside them (medians over rounds). The transformer is
time-free (``time_conditioning=False``, as MDLM), so the caching sampler's samples follow the
plain sampler's law. ``--process uniform`` times plain ancestral sampling of a uniform process
(its overhead: the reverse step's draw) on the same network.

    python benchmarks/sampling.py [--device cuda] [--batch 16] [--length 256] [--steps 256 1000]
                                  [--rounds 3] [--process absorbing|uniform]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from discdiff import Absorbing, LogLinear, Uniform
from discdiff.nn import TransformerConfig, TransformerDenoiser
from discdiff.samplers import AncestralSampler, CachingSampler, FirstHittingSampler, Sampler


class TimedModel(torch.nn.Module):
    """The denoiser, with the wall time spent inside its forward calls added up."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0
        self.cuda = next(model.parameters()).is_cuda  # asked once: not the sampler's cost

    def forward(self, *args, **kwargs):
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def timed(sampler: Sampler, model, proc, shape, device) -> tuple[float, int, int, float]:
    """(seconds, denoiser calls, rows evaluated, seconds inside the denoiser) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.seconds = 0.0
    start = time.perf_counter()
    res = sampler.sample(
        model, proc, shape, generator=torch.Generator().manual_seed(0), device=device
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, res.num_calls, res.rows_evaluated, model.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument(
        "--process", choices=("absorbing", "uniform"), default="absorbing",
        help="uniform: plain ancestral only (the other two need a mask state)",
    )  # fmt: skip
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--steps", type=int, nargs="+", default=[256, 1000])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    device = torch.device(args.device)
    torch.manual_seed(0)
    uniform = args.process == "uniform"
    proc = Uniform(args.vocab, LogLinear()) if uniform else Absorbing(args.vocab, LogLinear())
    cfg = TransformerConfig(
        num_states=proc.num_states,
        num_classes=args.vocab,
        num_layers=args.layers,
        d_model=args.d_model,
        num_heads=4,
        max_len=args.length,
        time_conditioning=False,
    )
    model = TimedModel(TransformerDenoiser(cfg).to(device).eval())
    shape = (args.batch, args.length)
    timed(AncestralSampler(4), model, proc, shape, device)  # warm-up
    print(
        f"{args.process}, {args.length} tokens, batch {args.batch}, {args.layers}-layer d={args.d_model} "
        f"transformer, vocab {args.vocab}, device {device}"
    )
    head = (
        f"{'sampler':<14}{'steps':>6}{'calls':>7}{'rows':>8}{'samples/s':>11}{'calls x':>9}"
        f"{'speed x':>9}{'overhead':>10}"
    )
    print(head)
    print("-" * len(head))
    for steps in args.steps:
        runs: dict[str, Sampler] = {"ancestral": AncestralSampler(steps)}
        if not uniform:
            runs.update(caching=CachingSampler(steps), **{"first-hitting": FirstHittingSampler()})
        got: dict[str, list[tuple[float, int, int, float]]] = {k: [] for k in runs}
        for _ in range(args.rounds):  # A B C A B C ...
            for name, sampler in runs.items():
                got[name].append(timed(sampler, model, proc, shape, device))
        base = got["ancestral"]
        for name in runs:
            secs = [g[0] for g in got[name]]
            speed = statistics.median(b[0] / g[0] for b, g in zip(base, got[name], strict=True))
            over = statistics.median((g[0] - g[3]) / g[3] for g in got[name])
            calls, rows = got[name][0][1], got[name][0][2]
            print(
                f"{name:<14}{steps if name != 'first-hitting' else '-':>6}{calls:>7}{rows:>8}"
                f"{args.batch / statistics.median(secs):>11.2f}{calls / base[0][1]:>9.3f}"
                f"{speed:>9.2f}{100 * over:>9.1f}%"
            )
    print(f"speed x: median over {args.rounds} interleaved rounds of ancestral time / time")


if __name__ == "__main__":
    main()
