"""Time and peak memory of forward + posterior: structured processes vs the dense formulation.

For each K, one workload on 8 x 1024 tokens: x_t ~ q(x_t | x0) (sample_marginal), the marginal
log q(x_t | x0) and the exact posterior log q(x_s | x_t, x0), on a 4-step discrete schedule so
the Dense twin (explicit S x S matrices) computes the very same numbers. Each configuration
runs in its own process so its peak RSS is its own. Figures are printed with the dense/structured
ratio from the same run.

    python benchmarks/processes.py [--ks 2,256,8192,50257] [--tokens 8x1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DENSE_MAX_K = 8192  # S x S float32 matrices beyond this do not fit comfortably in 24 GB


def _worker(kind: str, k: int, batch: int, length: int, reps: int) -> dict:
    import torch

    import discdiff as dd

    torch.set_num_threads(2)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sched = dd.d3pm_cosine(4)
    if kind == "dense":
        proc = dd.Dense.from_process(dd.Uniform(k, sched))
        proc = dd.Dense(
            proc.step_matrices.float(), prior=proc.prior_log_probs().exp(), dtype=torch.float32
        )
    else:
        proc = {"uniform": dd.Uniform, "absorbing": dd.Absorbing}[kind](k, sched)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, k, (batch, length), generator=g)
    t = torch.full((batch,), 0.5)
    s = torch.full((batch,), 0.25)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        xt = proc.sample_marginal(x0, t, generator=g)
        lm = proc.marginal_log(x0, t)
        del lm
        post = proc.posterior_log(xt, x0, s, t)
        assert post.shape[-1] == proc.num_states
        del post
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": sorted(times)[len(times) // 2], "peak_mb": (peak - base) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ks", default="2,256,8192,50257")
    ap.add_argument("--tokens", default="8x1024", help="batch x length")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    batch, length = (int(v) for v in args.tokens.split("x"))
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]), batch, length, args.reps)))
        return

    def run(kind: str, k: int) -> dict | None:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            kind,
            str(k),
            "--tokens",
            args.tokens,
            "--reps",
            str(args.reps),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  {kind} K={k} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(
        f"forward + posterior on {batch} x {length} tokens (median of {args.reps}; peak = RSS growth)"
    )
    head = f"{'K':>7} {'process':>10} {'time s':>9} {'peak MB':>9} {'dense/struct time':>18} {'dense/struct mem':>17}"
    print(head)
    print("-" * len(head))
    for k in (int(v) for v in args.ks.split(",")):
        dense = run("dense", k) if k <= DENSE_MAX_K else None
        for kind in ("uniform", "absorbing"):
            r = run(kind, k)
            if r is None:
                continue
            rt = f"{dense['seconds'] / r['seconds']:.1f}x" if dense else "does not fit"
            rm = f"{dense['peak_mb'] / max(r['peak_mb'], 1.0):.1f}x" if dense else "-"
            print(f"{k:>7} {kind:>10} {r['seconds']:>9.4f} {r['peak_mb']:>9.0f} {rt:>18} {rm:>17}")
        if dense:
            print(f"{k:>7} {'dense':>10} {dense['seconds']:>9.4f} {dense['peak_mb']:>9.0f}")
        else:
            print(
                f"{k:>7} {'dense':>10} {'-':>9} {'-':>9}   (S x S = {k * k * 4 / 2**30:.1f} GiB per matrix)"
            )


if __name__ == "__main__":
    main()
