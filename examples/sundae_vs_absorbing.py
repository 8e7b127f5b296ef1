"""SUNDAE vs absorbing diffusion on the same denoiser and the same wall-clock budget.

Trains two character models on a text corpus (default: Shakespeare in text8 style, 27 symbols)
with the same transformer and the same training time each:

- absorbing: masked diffusion trained on the continuous-time ELBO, sampled with the caching
  ancestral sampler; its test negative ELBO gives bits per character;
- SUNDAE: uniform corruption, ``--unroll-steps`` unrolled denoising steps fed back the model's
  own samples (``discdiff.losses.sundae_loss``), sampled with ``SundaeSampler``; SUNDAE's loss
  is not a likelihood bound, so it has no bpc here.

Both are then scored on proxies that need no likelihood: the bits per character of their
samples under a character 5-gram model (add-k smoothing) fit on the training split (lower =
closer to the training text's local statistics), and the share of generated words found in the
training vocabulary. Real test-split text of the same length is scored as a reference row.

    python examples/sundae_vs_absorbing.py --minutes 4
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from discdiff.nn import count_parameters
from discdiff.samplers import CachingSampler, SundaeSampler
from discdiff.tasks import runs
from discdiff.tasks.text import (
    CharNGram,
    TextTask,
    TextTaskConfig,
    load_corpus,
    seconds_per_step,
    word_coverage,
    words,
)
from discdiff.training import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="training budget per model")
    p.add_argument("--corpus", default="shakespeare-text8")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--unroll-steps", type=int, default=2, help="SUNDAE unrolled steps")
    p.add_argument("--samples", type=int, default=16, help="samples per model for the proxies")
    p.add_argument("--sample-steps", type=int, default=128, help="sampler steps")
    p.add_argument("--eval-samples", type=int, default=2, help="ELBO draws per test chunk")
    p.add_argument("--max-chunks", type=int, default=512, help="test chunks for the ELBO")
    p.add_argument("--ngram", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/sundae_vs_absorbing")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.minutes > 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    return args


def train_for_budget(task: TextTask, args: argparse.Namespace, name: str):
    """Build the shared denoiser for ``task``, train it for the budget; (model, steps, seconds)."""
    cfg = task.model_config(num_layers=args.layers, d_model=args.d_model, num_heads=args.heads)
    torch.manual_seed(args.seed)
    model = task.build_model({"type": "transformer", "config": cfg.to_dict()}).to(args.device)
    sps = seconds_per_step(
        model, task.loss_fn, task.chunks("train"), args.batch_size, device=args.device
    )
    steps = max(10, int(args.minutes * 60 / sps))
    print(f"[{name}] {count_parameters(model):,} parameters, {steps} steps", flush=True)
    config = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(500, steps // 10),
        ckpt_every=steps,
        keep_checkpoints=1,
        log_every=max(1, steps // 20),
        seed=args.seed,
    )
    start = time.perf_counter()
    runs.train(task, model, config, f"{args.out}/{name}", device=args.device, progress=False)
    return model, steps, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = dict(corpus=args.corpus, seq_len=args.seq_len)
    absorbing = TextTask.create(TextTaskConfig(**base, process="absorbing"))
    sundae = TextTask(
        TextTaskConfig(
            **base, process="uniform", objective="sundae", unroll_steps=args.unroll_steps
        ),
        absorbing.tokenizer,
    )
    train_text_ = load_corpus(args.corpus, "train")
    lm = CharNGram(train_text_, n=args.ngram, k=0.1)
    vocab = set(words(train_text_))

    rows = []
    shown = {}
    for name, task, sampler in (
        ("absorbing", absorbing, CachingSampler(args.sample_steps)),
        ("sundae", sundae, SundaeSampler(args.sample_steps)),
    ):
        model, steps, seconds = train_for_budget(task, args, name)
        bpc = "-"
        if name == "absorbing":
            gen = torch.Generator(device=args.device).manual_seed(args.seed)
            ev = task.evaluate(
                model, "test", samples=args.eval_samples, max_chunks=args.max_chunks, generator=gen
            )
            bpc = f"{ev.bpc:.3f} +- {ev.bpc_se:.3f}"
        gen = torch.Generator().manual_seed(args.seed)
        texts, _, calls = task.sample(model, args.samples, sampler, generator=gen)
        shown[name] = texts[:2]
        rows.append(
            (name, steps, seconds, bpc, lm.bits_per_char(texts), word_coverage(texts, vocab), calls)
        )

    test = load_corpus(args.corpus, "test")
    L = args.seq_len
    ref = [test[i * L : (i + 1) * L] for i in range(min(args.samples, len(test) // L))]
    rows.append(("test text", 0, 0.0, "-", lm.bits_per_char(ref), word_coverage(ref, vocab), 0))

    print(f"\nbudget: {args.minutes:g} min training per model; {args.samples} samples of {L} chars")
    head = f"{'model':<10} {'steps':>6} {'train s':>8} {'test bpc (ELBO)':>16} "
    print(head + f"{str(args.ngram) + '-gram bits/char':>17} {'words in vocab':>15} {'calls':>6}")
    for name, steps, seconds, bpc, ng, cov, calls in rows:
        print(
            f"{name:<10} {steps:>6} {seconds:>8.0f} {bpc:>16} {ng:>17.3f} {cov:>15.1%} {calls:>6}"
        )
    for name, texts in shown.items():
        print(f"\n{name} samples:")
        for t in texts:
            print(f"  {t!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
