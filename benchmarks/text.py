"""Text benchmark: absorbing vs uniform diffusion vs an autoregressive yardstick, same budget.

Trains three models with the same transformer size and the same wall-clock training budget
(default 20 minutes each on 2 CPU threads) on one corpus, then prints their test bits per
character in one table:

- absorbing: masked diffusion, continuous-time ELBO (MDLM), time-free denoiser;
- uniform: uniform-state diffusion, continuous-time ELBO (UDLM-style), time-conditioned;
- AR: the same transformer with ``causal=True`` (logits at i predict x[i+1]), trained and
  scored exactly by teacher forcing.

Diffusion scores are Monte-Carlo upper bounds (negative ELBO with boundary terms, averaged over
``--eval-samples`` draws per chunk); the AR score is exact. The goal is absorbing within 15% of
the AR bpc and uniform within 25%. A budget becomes a step count by timing a few steps first
(so the cosine schedule anneals within the budget); the measured training time is printed.

``--ood CORPUS`` scores every model on an out-of-domain text too (a file, folder or built-in
name, encoded with the run's tokenizer), and ``--bigram`` adds an add-one character bigram fit
on the training split as a floor any model should beat, scored per chunk of ``--seq-len``
characters with the same ratio standard error.

The architecture scales with options only, e.g. on a GPU:
``python benchmarks/text.py --device cuda --layers 12 --d-model 768 --heads 12 --seq-len 256``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from discdiff.nn import count_parameters
from discdiff.tasks import runs
from discdiff.tasks.text import TextTask, TextTaskConfig, seconds_per_step
from discdiff.training import TrainConfig

GOALS = {"absorbing": 1.15, "uniform": 1.25}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    p.add_argument("--corpus", default="shakespeare-text8")
    p.add_argument("--tokenizer", default="char", choices=("char", "bpe"))
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-samples", type=int, default=4, help="ELBO draws per test chunk")
    p.add_argument("--max-chunks", type=int, default=None, help="score the first N test chunks")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        help="optimizer steps per model instead of a time budget (fair on a shared machine)",
    )
    p.add_argument("--models", default="absorbing,uniform,ar", help="comma-separated subset")
    p.add_argument("--ood", default=None, help="an out-of-domain corpus to score as well")
    p.add_argument("--bigram", action="store_true", help="add the add-one character bigram row")
    p.add_argument("--out", type=Path, default=Path("runs/bench_text"), help="run dirs + results")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.minutes > 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    if args.steps < 0:
        p.error(f"--steps must be >= 0, got {args.steps}")
    unknown = set(args.models.split(",")) - {"absorbing", "uniform", "ar"}
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; expected absorbing, uniform, ar")
    return args


def run_one(kind: str, args: argparse.Namespace, tasks: dict[str, TextTask]) -> dict:
    """Train one model for the budget and score it on the test split."""
    process = "uniform" if kind == "uniform" else "absorbing"
    task = tasks[process]
    sizes = dict(num_layers=args.layers, d_model=args.d_model, num_heads=args.heads)
    cfg = task.ar_model_config(**sizes) if kind == "ar" else task.model_config(**sizes)
    torch.manual_seed(args.seed)
    model = task.build_model({"type": "transformer", "config": cfg.to_dict()}).to(args.device)
    loss_fn = task.ar_loss_fn if kind == "ar" else task.loss_fn
    train = task.chunks("train")
    sps = seconds_per_step(model, loss_fn, train, args.batch_size, device=args.device)
    steps = args.steps or max(10, int(args.minutes * 60 / sps))
    config = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(500, steps // 10),
        eval_every=0,
        ckpt_every=steps,
        keep_checkpoints=1,
        log_every=max(1, steps // 20),
        seed=args.seed,
    )
    run_dir = args.out / kind
    print(
        f"[{kind}] {count_parameters(model):,} parameters, {sps * 1000:.0f} ms/step "
        + (
            f"-> {steps} steps (fixed)"
            if args.steps
            else f"-> {steps} steps for {args.minutes:g} min"
        ),
        flush=True,
    )
    start = time.perf_counter()
    metrics = runs.train(
        task,
        model,
        config,
        run_dir,
        loss_fn=loss_fn,
        eval_fn=task.ar_loss_fn if kind == "ar" else None,
        device=args.device,
        progress=False,
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    if kind == "ar":
        ev = task.evaluate_ar(model, "test", batch_size=64, max_chunks=args.max_chunks)
    else:
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        ev = task.evaluate(
            model,
            "test",
            batch_size=64,
            samples=args.eval_samples,
            max_chunks=args.max_chunks,
            generator=gen,
        )
    ood = None
    if args.ood is not None:
        split = task.outside_split(args.ood)
        if kind == "ar":
            ood = task.evaluate_ar(model, split, batch_size=64, max_chunks=args.max_chunks)
        else:
            ood = task.evaluate(model, split, batch_size=64, samples=args.eval_samples,
                                max_chunks=args.max_chunks, generator=gen)  # fmt: skip
    eval_s = time.perf_counter() - start
    print(
        f"[{kind}] trained {train_s:.0f} s (final train loss {metrics.get('train_loss', math.nan):.2f}"
        f" nats/chunk), test {ev.bpc:.4f} +- {ev.bpc_se:.4f} bpc"
        + (f", out of domain {ood.bpc:.4f} +- {ood.bpc_se:.4f}" if ood is not None else "")
        + f", eval {eval_s:.0f} s",
        flush=True,
    )
    return {
        "ood_bpc": ood.bpc if ood is not None else None,
        "ood_bpc_se": ood.bpc_se if ood is not None else None,
        "model": kind,
        "params": count_parameters(model),
        "steps": steps,
        "train_s": train_s,
        "bpc": ev.bpc,
        "bpc_se": ev.bpc_se,
        "bits_per_token": ev.bits_per_token,
        "exact": ev.exact,
        "test_chars": ev.num_chars,
    }


def bigram_row(task: TextTask, args: argparse.Namespace) -> dict:
    """An add-one character bigram fit on the training text, scored on the test text (and the
    out-of-domain one) in chunks of seq_len characters: bits per character with the ratio
    standard error the models get."""
    from discdiff.tasks.text.data import load_corpus
    from discdiff.tasks.text.metrics import CharNGram

    model = CharNGram(load_corpus(args.corpus, "train"), n=2, k=1.0)

    def score(text: str) -> tuple[float, float, int]:
        W = args.seq_len
        chunks = [text[i : i + W + 1] for i in range(0, max(len(text) - 1, 1), W)]
        if args.max_chunks is not None:
            chunks = chunks[: args.max_chunks]
        pairs = [model.bits(c) for c in chunks if len(c) > 1]
        bits = torch.tensor([b for b, _ in pairs], dtype=torch.float64)
        chars = torch.tensor([c for _, c in pairs], dtype=torch.float64)
        mean = float(bits.sum() / chars.sum())
        n = len(pairs)
        if n < 2:
            return mean, math.nan, int(chars.sum())
        resid = bits - mean * chars  # the ratio estimator's linearisation
        se = float(resid.std(unbiased=True) / chars.mean() / math.sqrt(n))
        return mean, se, int(chars.sum())

    bpc, se, count = score(load_corpus(args.corpus, "test"))
    row = {"model": "bigram", "params": model.vocab**2, "steps": 0, "train_s": 0.0,
           "bpc": bpc, "bpc_se": se, "bits_per_token": bpc, "exact": True, "test_chars": count,
           "ood_bpc": None, "ood_bpc_se": None}  # fmt: skip
    if args.ood is not None:
        row["ood_bpc"], row["ood_bpc_se"], _ = score(load_corpus(args.ood, "all"))
    print(f"[bigram] test {bpc:.4f} +- {se:.4f} bpc over {count} characters", flush=True)
    return row


def table(rows: list[dict], minutes: float, threads: int, device: str, steps: int = 0) -> str:
    ar = next((r for r in rows if r["model"] == "ar"), None)
    budget = f"{steps} steps" if steps else f"{minutes:g} min"
    ood = any(r.get("ood_bpc") is not None for r in rows)
    lines = [
        f"budget: {budget} training per model, {threads} thread(s), device {device}",
        f"{'model':<10} {'params':>10} {'steps':>7} {'train s':>8} {'test bpc':>18} "
        f"{'vs AR':>7} {'goal':>6}      "
        + (f"{'out-of-domain bpc':>18} {'vs AR':>7}" if ood else ""),
    ]
    for r in rows:
        bpc = f"{r['bpc']:.4f} +- {r['bpc_se']:.4f}"
        ratio = r["bpc"] / ar["bpc"] if ar else math.nan
        goal = GOALS.get(r["model"])
        verdict = "-" if goal is None or ar is None else ("pass" if ratio <= goal else "miss")
        goal_s = f"<={goal:.2f}" if goal else "exact"
        line = (
            f"{r['model']:<10} {r['params']:>10,} {r['steps']:>7} {r['train_s']:>8.0f} {bpc:>18} "
            f"{ratio:>7.3f} {goal_s:>6} {verdict:<4}"
        )
        if ood and r.get("ood_bpc") is not None:
            o = f"{r['ood_bpc']:.4f} +- {r['ood_bpc_se']:.4f}"
            o_ratio = r["ood_bpc"] / ar["ood_bpc"] if ar and ar.get("ood_bpc") else math.nan
            line += f" {o:>18} {o_ratio:>7.3f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    torch.set_num_threads(args.threads)
    kinds = args.models.split(",")
    base = TextTaskConfig(
        corpus=args.corpus,
        seq_len=args.seq_len,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
    )
    tasks = {"absorbing": TextTask.create(base)}
    if "uniform" in kinds:  # same tokenizer, uniform process
        cfg = TextTaskConfig(**{**base.to_dict(), "process": "uniform"})
        tasks["uniform"] = TextTask(cfg, tasks["absorbing"].tokenizer)
    rows = [run_one(kind, args, tasks) for kind in kinds]
    if args.bigram:
        rows.append(bigram_row(tasks["absorbing"], args))
    text = table(rows, args.minutes, args.threads, args.device, args.steps)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2)
    )
    (args.out / "results.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
