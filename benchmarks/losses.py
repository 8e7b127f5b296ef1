"""Continuous-time ELBO integrands against plain cross-entropy, loss alone: time and memory.

    python benchmarks/losses.py [--K 256 8192 50257] [--batch 4] [--len 1024] [--rounds 5]
                                [--threads 2]

Fixed logits (B, L, K) with gradients, x_0 and x_t drawn once, one t per row; each function
is forward + backward of the per-position values summed:

- ``ce``: ``F.cross_entropy`` of the logits against x_0 (the yardstick);
- ``absorbing``: the absorbing process's rate KL (MDLM's weighted cross-entropy);
- ``uniform``: the uniform process's rate KL in closed form (what ``continuous_elbo`` uses:
  on a CPU the fused C kernel of :mod:`discdiff.native` where it is built);
- ``uniform-torch``: the same closed form on the torch path (``native=False``);
- ``uniform-mixing``: the same KL through the general mixing-process form (the old path);
- ``score-uniform`` / ``score-absorbing``: SEDD's score entropy integrand
  (:func:`discdiff.processes.scores.score_entropy`, the logits read as log concrete scores).

Times are interleaved (every function in this order, again ``--rounds`` times) and
each ratio is the median over rounds of that round's time / the round's CE time. Peak memory
is measured per function in a fresh subprocess (peak RSS growth over the inputs, polled every
0.5 ms while it runs: what the function adds, the logits' gradient included) and printed in
units of one logits buffer (B L K float32).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import discdiff as dd
from discdiff.processes.rates import rate_kl_mean, rate_kl_uniform
from discdiff.processes.scores import score_entropy

FUNCS = (
    "ce", "absorbing", "uniform", "uniform-torch", "uniform-mixing", "score-uniform",
    "score-absorbing",
)  # fmt: skip


def inputs(K: int, B: int, L: int):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, K, generator=g).requires_grad_(True)
    x0 = torch.randint(0, K, (B, L), generator=g)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.98 + 0.01
    uni = dd.Uniform(K, dd.LogLinear())
    absorb = dd.Absorbing(K, dd.LogLinear())
    x_uni = uni.sample_marginal(x0, t, generator=g)
    x_abs = absorb.sample_marginal(x0, t, generator=g)

    def run(name: str) -> None:
        logits.grad = None
        if name == "ce":
            v = F.cross_entropy(logits.view(-1, K), x0.view(-1), reduction="none")
        elif name == "absorbing":
            v = absorb.rate_kl(x_abs, x0, logits, t)
        elif name == "uniform":
            v = uni.rate_kl(x_uni, x0, logits, t)
        elif name == "uniform-torch":
            v = rate_kl_uniform(uni, x_uni, x0, logits, t, native=False)
        elif name == "score-uniform":
            v = score_entropy(uni, x_uni, x0, logits, t)
        elif name == "score-absorbing":
            v = score_entropy(absorb, x_abs, x0, logits, t)
        else:
            v = rate_kl_mean(uni, x_uni, x0, logits, t)
        v.sum().backward()

    return run


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(K: int, B: int, L: int, name: str) -> None:
    """Peak RSS growth during one call, polled every 0.5 ms from a thread."""
    import threading

    run = inputs(K, B, L)
    base = _rss()
    peak = [base]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    th = threading.Thread(target=poll)
    th.start()
    run(name)
    done.set()
    th.join()
    print(max(peak[0], _rss()) - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, nargs="+", default=[256, 8192, 50257])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--len", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="functions to leave out")
    ap.add_argument("--child", nargs=2, metavar=("K", "FUNC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    torch.set_num_threads(args.threads)
    if args.child:
        child(int(args.child[0]), args.batch, args.len, args.child[1])
        return
    funcs = [f for f in FUNCS if f not in args.skip]
    from discdiff import native

    print(f"{args.batch} x {args.len} positions, {args.threads} threads, {args.rounds} rounds")
    print(f"fused CPU kernel: {'built' if native.library() is not None else native.reason()}")
    print(f"{'K':>6} {'function':<15} {'ms':>9} {'x CE':>7} {'extra memory':>14} {'buffers':>8}")
    for K in args.K:
        run = inputs(K, args.batch, args.len)
        for name in funcs:
            run(name)  # warm-up
        times = {n: [] for n in funcs}
        for _ in range(args.rounds):
            for name in funcs:
                start = time.perf_counter()
                run(name)
                times[name].append(time.perf_counter() - start)
        buffer = args.batch * args.len * K * 4
        for name in funcs:
            ratio = statistics.median(a / c for a, c in zip(times[name], times["ce"], strict=True))
            cmd = [sys.executable, __file__, "--batch", str(args.batch), "--len", str(args.len),
                   "--threads", str(args.threads), "--child", str(K), name]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True)
            extra = int(res.stdout.strip()) if res.returncode == 0 else None
            mem = f"{extra / 2**20:.0f} MB" if extra is not None else "failed"
            bufs = f"{extra / buffer:.1f}" if extra is not None else "-"
            ms = 1000 * statistics.median(times[name])
            print(f"{K:>6} {name:<15} {ms:>9.1f} {ratio:>7.2f} {mem:>14} {bufs:>8}", flush=True)
    print("x CE: median over rounds of time / CE time in the same round")


if __name__ == "__main__":
    main()
