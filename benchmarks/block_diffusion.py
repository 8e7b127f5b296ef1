"""Block diffusion with a key/value cache against the semi-autoregressive sliding window.

Two transformers of the same size (``--layers`` x ``--d-model``, context ``--context``): an
ordinary absorbing model sampled past its context by :func:`discdiff.sample_blocks` (a window of
``--context`` ids sliding by ``--step``; every call runs the whole window) and a block model
(``block_size = --block``) sampled by :func:`discdiff.sample_block_diffusion` (every call runs one
block against the cache of the finished ones). Both generate ``--length`` ids with the same
inner sampler: first-hitting (one call per token, the model's exact law: equal quality for equal
models), and the caching sampler at one step per new token. Timed interleaved (A B A B,
``--rounds``), the speed-up the median of the rounds' ratios. The weights are random (time does
not depend on them): quality is measured by training both, ``--runs A B`` (the test split's
bits per character of two trained runs, their bounds read by the same code, printed beside).

    python benchmarks/block_diffusion.py [--length 1024] [--context 256] [--block 16]
        [--batch 8] [--rounds 3] [--threads 2] [--device cpu] [--runs MDLM_RUN BD3_RUN]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import discdiff as dd
from discdiff.nn import TransformerConfig, TransformerDenoiser

K = 28  # the character vocabulary of shakespeare-text8


def model(block: int, args: argparse.Namespace, device: torch.device) -> TransformerDenoiser:
    torch.manual_seed(0)
    cfg = TransformerConfig(num_states=K + 1, num_classes=K, num_layers=args.layers,
                            d_model=args.d_model, num_heads=args.heads, max_len=args.context,
                            time_conditioning=False, block_size=block)  # fmt: skip
    m = TransformerDenoiser(cfg).to(device).eval()
    for p in m.parameters():  # adaLN-Zero starts as the identity: a forward that does the work
        torch.nn.init.normal_(p, std=0.05)
    return m


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--step", type=int, default=None, help="window slide (default context/2)")
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", nargs=2, default=None, metavar=("MDLM_RUN", "BD3_RUN"))
    ap.add_argument("--eval-tokens", type=int, default=65536)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    step = args.step or args.context // 2
    print("python " + " ".join(sys.argv))
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}")
    plain, block = model(0, args, device), model(args.block, args, device)
    proc = dd.Absorbing(K, dd.LogLinear())
    n_par = sum(p.numel() for p in plain.parameters())
    print(f"{args.layers} x {args.d_model} transformer ({n_par:,} parameters, both), "
          f"context {args.context}; {args.batch} samples of {args.length} ids")  # fmt: skip
    print(f"A: sliding window of {args.context}, {step} new ids per window (sample_blocks)")
    print(f"B: block diffusion, blocks of {args.block}, key/value cache (sample_block_diffusion)")

    def run_a(sampler: dd.Sampler) -> tuple[float, int]:
        sync(device)
        t0 = time.perf_counter()
        res = dd.sample_blocks(sampler, plain, proc, args.batch, args.length, args.context, step,
                               generator=torch.Generator(device).manual_seed(0), device=device)  # fmt: skip
        sync(device)
        return time.perf_counter() - t0, res.num_calls

    def run_b(sampler: dd.Sampler) -> tuple[float, int]:
        sync(device)
        t0 = time.perf_counter()
        res = dd.sample_block_diffusion(sampler, block, proc, args.batch, args.length,
                                        generator=torch.Generator(device).manual_seed(0),
                                        device=device)  # fmt: skip
        sync(device)
        return time.perf_counter() - t0, res.num_calls

    settings = [
        ("first-hitting", dd.FirstHittingSampler(), dd.FirstHittingSampler()),
        ("caching, a step per new id", dd.CachingSampler(step), dd.CachingSampler(args.block)),
    ]
    for name, sa, sb in settings:
        run_a(sa), run_b(sb)  # warm-up
        ratios, ta, tb = [], [], []
        for _ in range(args.rounds):
            a, calls_a = run_a(sa)
            b, calls_b = run_b(sb)
            ta.append(a), tb.append(b), ratios.append(a / b)
        tok = args.batch * args.length
        print(f"{name}: A {statistics.median(ta):.2f} s ({tok / statistics.median(ta):,.0f} tokens/s, "
              f"{calls_a} calls), B {statistics.median(tb):.2f} s ({tok / statistics.median(tb):,.0f} "
              f"tokens/s, {calls_b} calls); B is {statistics.median(ratios):.2f}x faster "
              f"(median of {args.rounds} interleaved rounds: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    if args.runs:
        for path in args.runs:
            task, m = dd.load_run(path)
            m = m.to(device)
            ev = task.evaluate(m, "test", batch_size=16, max_tokens=args.eval_tokens,
                               generator=torch.Generator(device).manual_seed(0))  # fmt: skip
            kind = f"block {m.config.block_size}" if m.config.block_size else "ordinary"
            print(f"{path} ({kind}): test {ev.format()}")


if __name__ == "__main__":
    main()
