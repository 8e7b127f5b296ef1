"""Sample quality against cost: every sampler on one model per objective, judged by an AR model.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sampler_frontier.py --out frontier.png  # ~20 min
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sampler_frontier.py --quick   # a smoke run

Trains on Shakespeare (characters, seq_len 128, the same small transformer for all): an
absorbing ELBO model (MDLM), a score-entropy model (SEDD, absorbing), a discrete-flow-matching
model (uniform source, kappa = tau^2), a SUNDAE model (uniform), and the autoregressive
yardstick. Then samples each model with every sampler that serves it at several budgets of
denoiser calls and prints, per point, the generative perplexity of the samples under the AR
model (lower: more like the corpus to that judge) and their unigram entropy (nats; a sampler
that wins perplexity by repeating itself shows a low one), with the wall time. The PNG plots
perplexity against calls (log-log), each point labelled with its entropy. Figures depend on
the training budget: compare samplers within one run, not across runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from discdiff.samplers import make_sampler
from discdiff.tasks import runs
from discdiff.tasks.text import TextTask, TextTaskConfig
from discdiff.tasks.text.metrics import unigram_entropy
from discdiff.training import TrainConfig

SIZES = dict(num_layers=2, d_model=128, num_heads=4, cond_dim=64)

#: objective -> (task config options, [(label, sampler name, options)])
PLAN: dict[str, tuple[dict, list[tuple[str, str, dict]]]] = {
    "mdlm": (
        {"process": "absorbing"},
        [
            ("ancestral", "ancestral", {}),
            ("caching", "caching", {}),
            ("first-hitting", "first-hitting", {}),
            ("confidence", "confidence", {}),
            ("margin", "planned", {"order": "margin"}),
            ("p2", "planned", {"eta": 1.0}),
            ("remdm-loop", "remdm", {"strategy": "loop", "eta": 0.02}),
            ("tau-leaping", "tau-leaping", {}),
        ],
    ),
    "sedd": (
        {"process": "absorbing", "objective": "score_entropy"},
        [
            ("tweedie", "tweedie", {}),
            ("tau-leaping", "tau-leaping", {}),
            ("remdm-cap", "remdm", {"strategy": "cap", "eta": 0.02}),
        ],
    ),
    "dfm": (
        {"process": "uniform", "objective": "dfm", "schedule": "kappa-poly"},
        [
            ("euler", "dfm-euler", {}),
            ("euler+corrector", "dfm-euler", {"div_free": 1.0}),
            ("ancestral", "ancestral", {}),
        ],
    ),
    "sundae": (
        {"process": "uniform", "objective": "sundae"},
        [
            ("sundae", "sundae", {"temperature": 0.8}),
            ("sundae-argmax", "sundae", {"argmax": True, "starts": 2}),
        ],
    ),
}


def train(task: TextTask, model: torch.nn.Module, steps: int, folder: Path, ar: bool) -> None:
    cfg = TrainConfig(steps=steps, batch_size=32, lr=2e-3, warmup_steps=min(100, steps // 10),
                      eval_every=0, log_every=max(1, steps // 4), seed=0)  # fmt: skip
    loss = task.ar_loss_fn if ar else None
    runs.train(task, model, cfg, folder, loss_fn=loss, device="cpu", progress=False)


def plot(rows: list[dict], out: Path) -> None:
    """Perplexity against calls per (model, sampler), points labelled with their entropy."""
    from discdiff.plots import line_plot

    data = [r for r in rows if math.isfinite(r["ppl"])]
    series, labels = [], {}
    for name, (_, samplers) in PLAN.items():
        for label, _, _ in samplers:
            key = f"{name}/{label}"
            pts = sorted((r["calls"], r["ppl"], r["entropy"]) for r in data
                         if r["model"] == name and r["sampler"] == label)  # fmt: skip
            if pts:
                series.append((key, [(c, p) for c, p, _ in pts]))
                labels[key] = [f"{e:.2f}" for _, _, e in pts]
    line_plot(series, out, x_label="denoiser calls", y_label="generative perplexity",
              log_x=True, log_y=True, labels=labels, size=(1000, 640),
              title="perplexity under the AR judge; labels: unigram entropy")  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800, help="training steps per model")
    ap.add_argument("--calls", type=int, nargs="+", default=[8, 32, 128, 256])
    ap.add_argument("-n", type=int, default=16, help="samples per point")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("sampler_frontier.png"))
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, calls 4 and 8")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.calls, args.n, args.seq_len = 20, [4, 8], 4, 32
    torch.set_num_threads(2)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = TextTaskConfig(corpus="shakespeare", seq_len=args.seq_len)
        judge_task = TextTask.create(base)
        torch.manual_seed(0)
        judge = judge_task.build_model(
            {"type": "transformer", "config": judge_task.ar_model_config(**SIZES).to_dict()}
        )
        t0 = time.perf_counter()
        train(judge_task, judge, args.steps, folder / "ar", ar=True)
        judge.eval()
        print(f"trained the AR judge in {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"{'model':<8} {'sampler':<16} {'calls':>6} {'gen ppl':>9} {'entropy':>8} {'s':>7}")
        for name, (options, samplers) in PLAN.items():
            task = TextTask.create(
                TextTaskConfig(corpus="shakespeare", seq_len=args.seq_len, **options)
            )
            torch.manual_seed(0)
            model = task.new_model(**SIZES)
            t0 = time.perf_counter()
            train(task, model, args.steps, folder / name, ar=False)
            model.eval()
            print(f"# trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
            for label, sampler, extra in samplers:
                budgets = [args.seq_len] if sampler == "first-hitting" else args.calls
                for calls in budgets:
                    s = make_sampler(sampler, steps=calls, **extra)
                    gen = torch.Generator().manual_seed(1)
                    t0 = time.perf_counter()
                    _, ids, used = task.sample(model, args.n, s, generator=gen)
                    seconds = time.perf_counter() - t0
                    ppl, _ = judge_task.generative_perplexity(judge, ids)
                    ent = unigram_entropy(ids.tolist())
                    rows.append({"model": name, "sampler": label, "calls": used, "ppl": ppl,
                                 "entropy": ent, "seconds": seconds})  # fmt: skip
                    print(f"{name:<8} {label:<16} {used:>6} {ppl:>9.2f} {ent:>8.3f} {seconds:>7.1f}",
                          flush=True)  # fmt: skip
    plot(rows, args.out)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
