"""`discdiff text ...`: train, sample from and evaluate text diffusion models.

A thin layer over :mod:`discdiff.tasks.text`: it parses options, reads/writes files and prints;
the work is done by the task, the core samplers and the shared trainer.

Infill syntax (``--infill``): text with blanks ``[MASK]`` (one token) or ``[MASK:n]`` (n tokens;
with the character tokenizer, n characters), e.g. ``"The [MASK:20] of the"``. The given text
stays exactly as written; the blanks and every position after the template are generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from discdiff.cli._options import Device, Seed, Threads, set_threads

app = typer.Typer(
    help="Text: train a character/BPE diffusion model on a corpus, sample, evaluate (bits/char).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def train(
    corpus: Annotated[
        str,
        typer.Argument(
            help="shakespeare | shakespeare-text8 | text8[:PATH] | a text file or folder of *.txt"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory (checkpoints, metrics).")],
    process: Annotated[str, typer.Option(help="absorbing | uniform")] = "absorbing",
    steps: Annotated[int, typer.Option(help="Optimizer steps in total.")] = 10_000,
    objective: Annotated[str, typer.Option(help="elbo | sundae (uniform only)")] = "elbo",
    unroll_steps: Annotated[int, typer.Option(help="SUNDAE unrolled steps.")] = 2,
    schedule: Annotated[str, typer.Option(help="loglinear | cosine")] = "loglinear",
    tokenizer: Annotated[str, typer.Option(help="char | bpe")] = "char",
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size (>= 256).")] = 1024,
    seq_len: Annotated[int, typer.Option(help="Tokens per training chunk.")] = 256,
    time_conditioning: Annotated[
        bool | None,
        typer.Option(
            "--time-conditioning/--no-time-conditioning",
            help="Give the denoiser t (default: off for absorbing, on for uniform).",
            show_default=False,
        ),
    ] = None,
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 6,
    d_model: Annotated[int, typer.Option(help="Model width.")] = 384,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 6,
    mlp_ratio: Annotated[float, typer.Option(help="MLP width / model width.")] = 4.0,
    cond_dim: Annotated[int, typer.Option(help="Width of the time conditioning vector.")] = 128,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Chunks per optimizer step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    warmup: Annotated[
        int | None, typer.Option(help="Warm-up steps (default: steps // 10, at most 1000).")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    grad_clip: Annotated[float, typer.Option(help="Gradient norm clip.")] = 1.0,
    ema: Annotated[
        float | None, typer.Option(help="EMA decay of the weights (off if unset).")
    ] = None,
    eval_every: Annotated[int, typer.Option(help="Validation ELBO every N steps (0 = off).")] = 500,
    eval_batches: Annotated[int, typer.Option(help="Validation batches per evaluation.")] = 8,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 1000,
    log_every: Annotated[int, typer.Option(help="Log a metrics row every N steps.")] = 10,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    device: Device = "auto",
    threads: Threads = 0,
    seed: Seed = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out (task and model as saved).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a text diffusion model on CORPUS into --out."""
    set_threads(threads)
    import json

    import torch

    from discdiff.tasks.text import TextTask, TextTaskConfig, train_text
    from discdiff.training import TrainConfig, latest_checkpoint

    if warmup is None:
        warmup = min(1000, max(steps, 0) // 10)
    train_config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        ema_decay=ema,
        precision=precision,
        compile=compile,
        eval_every=eval_every,
        eval_batches=eval_batches,
        ckpt_every=ckpt_every,
        log_every=log_every,
        seed=seed,
    )
    if resume and latest_checkpoint(out) is not None:
        task = TextTask.load(out)
        saved = json.loads((out / "config.json").read_text())["model"]
        torch.manual_seed(seed)
        model = task.build_model(saved)
        typer.echo(f"resuming {out} ({task.config.process}, {task.config.corpus})", err=True)
    else:
        config = TextTaskConfig(
            corpus=corpus,
            process=process,
            schedule=schedule,
            objective=objective,
            unroll_steps=unroll_steps,
            seq_len=seq_len,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            time_conditioning=time_conditioning,
        )
        sizes = dict(
            num_layers=layers,
            d_model=d_model,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            cond_dim=cond_dim,
            dropout=dropout,
        )
        task = TextTask.create(config)
        model_cfg = task.model_config(**sizes)
        torch.manual_seed(seed)
        model = task.build_model({"type": "transformer", "config": model_cfg.to_dict()})
    metrics = train_text(
        task, model, train_config, out, resume=resume, device=device, progress=progress
    )
    shown = {
        k: round(v, 4)
        for k, v in metrics.items()
        if k in ("step", "train_loss", "eval_nats_per_token")
    }
    typer.echo(f"trained {out}: {shown}")


def _write_samples(texts: list[str]) -> str:
    return "".join(f"=== sample {i} ===\n{t}\n" for i, t in enumerate(texts))


@app.command()
def sample(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `text train`.")],
    n: Annotated[int, typer.Option("-n", "--num", help="Number of samples.")] = 16,
    steps: Annotated[int, typer.Option(help="Sampler steps (first-hitting: one per token).")] = 256,
    sampler: Annotated[
        str, typer.Option(help="ancestral | caching | first-hitting | confidence | sundae")
    ] = "ancestral",
    length: Annotated[
        int | None, typer.Option(help="Tokens per sample (default: seq_len).")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Text every sample starts with.")] = None,
    infill: Annotated[
        str | None,
        typer.Option(
            help="Template with blanks [MASK] (1 token) or [MASK:n] (n tokens; characters for the "
            'char tokenizer), e.g. "The [MASK:20] of the"; the given text is kept exactly.'
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Temperature of the x0 prediction.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus filtering of the x0 prediction.")] = 1.0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write samples here, not stdout.")
    ] = None,
    ema: Annotated[
        bool | None,
        typer.Option(
            "--ema/--no-ema", help="Use EMA weights (default: if saved).", show_default=False
        ),
    ] = None,
    device: Device = "auto",
    threads: Threads = 0,
    seed: Seed = 0,
) -> None:
    """Sample texts from a trained run, optionally with a fixed prefix or infill template."""
    set_threads(threads)
    import torch

    from discdiff.tasks.text import load_text_run, make_sampler

    s = make_sampler(sampler, steps, temperature=temperature, top_p=top_p)
    task, model = load_text_run(run_dir, device=device, use_ema=ema)
    gen = torch.Generator().manual_seed(seed)
    texts, _, calls = task.sample(
        model, n, s, length=length, prefix=prefix, infill=infill, generator=gen
    )
    body = _write_samples(texts)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body, encoding="utf-8")
        typer.echo(f"wrote {n} samples to {out} ({calls} denoiser calls)")
    else:
        typer.echo(body, nl=False)
        typer.echo(f"{sampler}: {calls} denoiser calls", err=True)


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `text train`.")],
    split: Annotated[str, typer.Option(help="test | val | train")] = "test",
    samples: Annotated[int, typer.Option(help="Monte-Carlo ELBO draws per chunk.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Chunks per batch.")] = 32,
    max_chunks: Annotated[int | None, typer.Option(help="Score only the first N chunks.")] = None,
    ema: Annotated[
        bool | None,
        typer.Option(
            "--ema/--no-ema", help="Use EMA weights (default: if saved).", show_default=False
        ),
    ] = None,
    device: Device = "auto",
    threads: Threads = 0,
    seed: Seed = 0,
) -> None:
    """Print the negative ELBO of a split in bits per character (+ per token, perplexity for BPE)."""
    set_threads(threads)
    import torch

    from discdiff.tasks.text import load_text_run

    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r} is not one of 'train', 'val', 'test'")
    task, model = load_text_run(run_dir, device=device, use_ema=ema)
    if getattr(getattr(model, "config", None), "causal", False):
        result = task.evaluate_ar(model, split, batch_size=batch_size, max_chunks=max_chunks)
    else:
        dev = next(model.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed)
        result = task.evaluate(
            model,
            split,
            batch_size=batch_size,
            samples=samples,
            max_chunks=max_chunks,
            generator=gen,
        )
    typer.echo(f"{split}: {result.format(per_token=task.config.tokenizer == 'bpe')}")
