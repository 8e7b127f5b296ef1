"""discdiff beside NVIDIA's bionemo-moco and Meta's flow_matching: losses and samplers, as ratios.

    python benchmarks/peers.py --setup            # installs the peers into benchmarks/.peers
    python benchmarks/peers.py [--K 256 8192] [--rounds 5] [--threads 2] [--tables losses samplers]

The peers are installed into ``benchmarks/.peers`` (``pip install --no-deps --target``, with
the few pure-Python packages they import), never into discdiff's environment, and put on
``sys.path`` by this script only. Both tables run interleaved (discdiff, moco, flow_matching,
again ``--rounds`` times); each ratio is the median over rounds of peer time / discdiff time
in the same round (> 1: discdiff is faster).

Losses (fixed logits (4, 1024, K) with gradients, copied first as if a model made them,
forward + backward of the summed values):
- absorbing: discdiff's absorbing rate KL (MDLM's weighted CE), moco ``MDLM.loss``,
  flow_matching ``MixturePathGeneralizedKL`` on a mask-source path (vocabulary K + 1);
- uniform: discdiff's uniform continuous ELBO (the true rate KL), flow_matching's generalized
  KL on a uniform-source path (a cheaper objective, not the ELBO); moco has no uniform ELBO.

Samplers (64 x 256 tokens, K = 64, the same 2-layer time-free transformer for all): the time
outside the denoiser per step (total wall time minus the time inside its calls, over the
steps): discdiff's ancestral sampler, moco's ``MDLM.step`` loop, flow_matching's
``MixtureDiscreteEulerSolver`` (mask source), each at ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import discdiff as dd
from discdiff.nn import TransformerConfig, TransformerDenoiser

PEERS = Path(__file__).resolve().parent / ".peers"
PACKAGES = ["bionemo-moco==0.0.2.2", "flow-matching==1.0.10", "jaxtyping", "wadler_lindig",
            "pot", "torchdiffeq"]  # fmt: skip


def setup() -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(PEERS), *PACKAGES]
    subprocess.run(cmd, check=True)


def _peers():
    sys.path.insert(0, str(PEERS))
    try:
        from bionemo.moco.distributions.prior import DiscreteMaskedPrior
        from bionemo.moco.distributions.time import UniformTimeDistribution
        from bionemo.moco.interpolants import MDLM
        from bionemo.moco.schedules.noise.continuous_noise_transforms import (
            LogLinearExpNoiseTransform,
        )
        from flow_matching.loss import MixturePathGeneralizedKL
        from flow_matching.path import MixtureDiscreteProbPath
        from flow_matching.path.scheduler import PolynomialConvexScheduler
        from flow_matching.solver import MixtureDiscreteEulerSolver
        from flow_matching.utils import ModelWrapper
    except ImportError as err:
        raise SystemExit(f"the peers are not installed ({err}); run: {__file__} --setup") from None
    return {
        "mdlm": lambda K: MDLM(
            UniformTimeDistribution(),
            DiscreteMaskedPrior(num_classes=K + 1),
            LogLinearExpNoiseTransform(),
        ),  # fmt: skip
        "kl": MixturePathGeneralizedKL,
        "path": lambda: MixtureDiscreteProbPath(PolynomialConvexScheduler(n=1.0)),
        "solver": MixtureDiscreteEulerSolver,
        "wrapper": ModelWrapper,
    }


def _ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(b / a for a, b in zip(ours, theirs, strict=True))


def losses(K: int, rounds: int, P) -> list[str]:
    g = torch.Generator().manual_seed(0)
    B, L = 4, 1024
    x0 = torch.randint(0, K, (B, L), generator=g)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.98 + 0.01
    absorb, uni = dd.Absorbing(K, dd.LogLinear()), dd.Uniform(K, dd.LogLinear())
    xa = absorb.sample_marginal(x0, t, generator=g)
    xu = uni.sample_marginal(x0, t, generator=g)
    lk = torch.randn(B, L, K, generator=g).requires_grad_(True)
    lk1 = torch.randn(B, L, K + 1, generator=g).requires_grad_(True)  # peers: mask in the vocab
    mdlm, kl = P["mdlm"](K), P["kl"](P["path"](), reduction="none")
    tf = (1.0 - t).float()  # flow_matching: t = 0 is the source, t = 1 the data

    def run(fn, leaf):
        leaf.grad = None
        fn(leaf.clone()).sum().backward()  # as from a model (moco edits its logits in place)

    table = {
        "absorbing": [("discdiff", lambda z: absorb.rate_kl(xa, x0, z, t), lk),
                      ("moco", lambda z: mdlm.loss(z, x0, xa, t.float()), lk1),
                      ("flow_matching", lambda z: kl(z, x0, xa, tf), lk1)],
        "uniform": [("discdiff", lambda z: uni.rate_kl(xu, x0, z, t), lk),
                    ("flow_matching", lambda z: kl(z, x0, xu, tf), lk)],
        "ce": [("torch", lambda z: F.cross_entropy(z.view(-1, K), x0.view(-1), reduction="none"),
                lk)],
    }  # fmt: skip
    lines = []
    for name, entries in table.items():
        times = {who: [] for who, _, _ in entries}
        for _, fn, leaf in entries:
            run(fn, leaf)
        for _ in range(rounds):
            for who, fn, leaf in entries:
                start = time.perf_counter()
                run(fn, leaf)
                times[who].append(time.perf_counter() - start)
        base = times[entries[0][0]]
        for who, _, _ in entries:
            ms = 1000 * statistics.median(times[who])
            rel = "" if who == entries[0][0] else f"{_ratio(base, times[who]):.2f}x"
            lines.append(f"{K:>6} {name:<10} {who:<14} {ms:>9.1f} ms {rel:>8}")
    return lines


class Timed(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, K: int, probs: bool = False, pad: bool = False):
        super().__init__()
        self.model, self.K, self.probs, self.pad, self.seconds = model, K, probs, pad, 0.0

    def forward(self, x, t, *args, **kwargs):
        start = time.perf_counter()
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        out = self.model(x, t.float())
        if self.pad:  # the peers' vocabulary holds the mask: its logit is never predicted
            out = torch.cat([out, torch.full_like(out[..., :1], -torch.inf)], dim=-1)
        if self.probs:  # flow_matching's solver takes p_{1|t}
            out = torch.softmax(out, dim=-1)
        self.seconds += time.perf_counter() - start
        return out


def samplers(steps: int, rounds: int, P) -> list[str]:
    K, B, L = 64, 64, 256
    cfg = TransformerConfig(num_states=K + 1, num_classes=K, num_layers=2, d_model=128,
                            num_heads=4, max_len=L, time_conditioning=False)  # fmt: skip
    torch.manual_seed(0)
    net = TransformerDenoiser(cfg).eval()
    proc = dd.Absorbing(K, dd.LogLinear())
    mdlm = P["mdlm"](K)
    path = P["path"]()

    def ours():
        m = Timed(net, K)
        dd.AncestralSampler(steps).sample(
            m, proc, (B, L), generator=torch.Generator().manual_seed(0)
        )
        return m.seconds

    def moco():
        m = Timed(net, K, pad=True)
        x = torch.full((B, L), K, dtype=torch.long)
        dt = torch.full((B,), 1.0 / steps)
        with torch.no_grad():
            for i in range(steps):
                tt = torch.full((B,), 1.0 - i / steps)
                x = mdlm.step(m(x, tt), tt, x, dt)
        return m.seconds

    def fm():
        m = Timed(net, K, probs=True, pad=True)

        class W(P["wrapper"]):
            def forward(self, x, t, **extras):
                return m(x, 1.0 - t)  # flow_matching's t = 1 is the data; ours t = 0

        solver = P["solver"](model=W(m), path=path, vocabulary_size=K + 1)
        with torch.no_grad():
            solver.sample(torch.full((B, L), K, dtype=torch.long), step_size=1.0 / steps)
        return m.seconds

    runs = {"discdiff": ours, "moco": moco, "flow_matching": fm}
    over = {k: [] for k in runs}
    inner = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(rounds):
        for who, fn in runs.items():
            start = time.perf_counter()
            inside = fn()
            over[who].append((time.perf_counter() - start - inside) / steps)
            inner[who].append(inside / steps)
    lines = []
    for who in runs:
        ms = 1000 * statistics.median(over[who])
        den = 1000 * statistics.median(inner[who])
        rel = "" if who == "discdiff" else f"{_ratio(over['discdiff'], over[who]):.2f}x"
        lines.append(
            f"{'sampler':<10} {who:<14} {ms:>9.2f} ms/step outside the denoiser "
            f"({100 * ms / den:.1f}% of its {den:.1f} ms) {rel:>8}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", action="store_true", help="install the peers, then exit")
    ap.add_argument("--K", type=int, nargs="+", default=[256, 8192])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tables", nargs="+", choices=["losses", "samplers"],
                    default=["losses", "samplers"], help="which tables to run")  # fmt: skip
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    if args.setup:
        setup()
        return
    torch.set_num_threads(args.threads)
    P = _peers()
    print(f"{args.threads} threads, {args.rounds} interleaved rounds; x: peer / discdiff")
    from discdiff import native

    print(f"fused CPU kernel: {'built' if native.library() is not None else native.reason()}")
    for K in args.K if "losses" in args.tables else []:
        for line in losses(K, args.rounds, P):
            print(line, flush=True)
    for line in samplers(args.steps, args.rounds, P) if "samplers" in args.tables else []:
        print(line, flush=True)


if __name__ == "__main__":
    main()
