"""discdiff.reuse_freed_memory on and off, in alternating child processes (A B A B).

The setting is process-wide and one-way, so each measurement runs in its own process; the
rounds alternate, and the figure is the median over rounds of off-time / on-time.

    python benchmarks/memory_reuse.py --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

WORKLOADS = ("ce", "uniform", "softmax")


def child(name: str, mode: str, reps: int, K: int) -> float:
    import torch
    import torch.nn.functional as F

    import discdiff as dd

    if mode == "on":
        dd.reuse_freed_memory()
    g = torch.Generator().manual_seed(0)
    B, L = 4, 1024
    logits = torch.randn(B, L, K, generator=g).requires_grad_(True)
    x0 = torch.randint(0, K, (B, L), generator=g)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.98 + 0.01
    uni = dd.Uniform(K, dd.LogLinear())
    x_t = uni.sample_marginal(x0, t, generator=g)

    def run() -> None:
        logits.grad = None
        if name == "ce":
            F.cross_entropy(logits.view(-1, K), x0.view(-1), reduction="none").sum().backward()
        elif name == "uniform":
            uni.rate_kl(x_t, x0, logits, t).sum().backward()
        else:
            with torch.no_grad():
                torch.softmax(logits, -1)

    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--K", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(child(args.child[0], args.child[1], args.reps, args.K))
        return

    def measure(name: str, mode: str) -> float:
        cmd = [sys.executable, __file__, "--child", name, mode, "--reps", str(args.reps),
               "--K", str(args.K), "--threads", str(args.threads)]  # fmt: skip
        return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    print(
        f"(4, 1024, {args.K}) float32, {args.threads} thread(s): losses forward + backward, softmax forward"
    )
    print(f"{'workload':<10} {'off ms':>9} {'on ms':>9} {'off / on':>9}")
    for name in WORKLOADS:
        off, on = [], []
        for _ in range(args.rounds):
            off.append(measure(name, "off"))
            on.append(measure(name, "on"))
        ratio = statistics.median(a / b for a, b in zip(off, on, strict=True))
        print(f"{name:<10} {1e3 * statistics.median(off):>9.1f} {1e3 * statistics.median(on):>9.1f}"
              f" {ratio:>8.2f}x", flush=True)  # fmt: skip
    print("off / on: median over rounds of the per-round ratio (alternating processes)")


if __name__ == "__main__":
    main()
