"""`discdiff text ...`: train, sample from and evaluate text diffusion models.

A thin layer over :mod:`discdiff.tasks.text`: it parses options, reads/writes files and prints;
the work is done by the task, the core samplers and the shared trainer.

Infill syntax (``--infill``): text with blanks ``[MASK]`` (one token) or ``[MASK:n]`` (n tokens;
with the character tokenizer, n characters), e.g. ``"The [MASK:20] of the"``. The given text
stays exactly as written; the blanks and every position after the template are generated.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from discdiff.cli._options import (
    Compile,
    CudaGraphs,
    Device,
    DocSep,
    GradCheckpointing,
    LabelsOpt,
    ModelArg,
    ObjectiveOpt,
    Progress,
    SamplerOpt,
    SamplerTemperature,
    Seed,
    Threads,
    TokenizerOpt,
    UseEma,
    compiled,
    sampler_help,
    sampler_options,
    set_threads,
)
from discdiff.cli._spine import (
    TrainFlags,
    check_new_run,
    check_output,
    folder_kind,
    resolve_train_config,
    task_train_defaults,
    train_command,
)

app = typer.Typer(
    help="Text: train a character/BPE diffusion model on a corpus, sample, evaluate (bits/char).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _vocab_needs_bpe(tokenizer: str, given: bool) -> None:
    """--vocab-size sizes a BPE vocabulary; a character tokenizer's is the corpus's alphabet."""
    if given and tokenizer != "bpe":
        own = "the corpus's own symbols" if tokenizer == "char" else "its file's vocabulary"
        raise ValueError(
            f"--vocab-size sizes a BPE vocabulary we train; --tokenizer {tokenizer} takes {own} "
            "(add --tokenizer bpe)"
        )


def _not_a_run(corpus: str) -> None:
    """A run dir named as CORPUS is one line saying so (it read as a folder without text)."""
    if folder_kind(Path(corpus)) == "run dir":
        raise ValueError(
            f"CORPUS {corpus!r} is a run dir, not text (continue it with --out {corpus} --resume)"
        )


@app.command()
def prepare(
    corpus: Annotated[
        str,
        typer.Argument(
            help="shakespeare | shakespeare-text8 | text8[:PATH] | a text file, a folder of "
            "*.txt / *.jsonl (JSON lines with a 'text' field)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The data dir to write (token files).")],
    tokenizer: TokenizerOpt = "char",
    vocab_size: Annotated[
        int | None, typer.Option(help="BPE vocabulary size (>= 256; default 1024).")
    ] = None,
    doc_sep: DocSep = None,
    labels: LabelsOpt = None,
    progress: Progress = True,
    threads: Threads = 0,
) -> None:
    """Tokenize CORPUS once into flat token files (train/val/test.bin + meta.json) that
    `text train DATA_DIR` reads through memory maps."""
    set_threads(threads)
    from discdiff.tasks.text.data import prepare_corpus

    _not_a_run(corpus)
    _vocab_needs_bpe(tokenizer, vocab_size is not None)
    vocab_size = 1024 if vocab_size is None else vocab_size
    if str(out) in ("", "."):
        raise ValueError("--out: name a folder for the prepared data (not the current directory)")
    if folder_kind(out) == "run dir":
        raise ValueError(f"--out {str(out)!r} is a run dir; name another folder for the data")
    check_output(out / "meta.json", None, "--out", own="prepared data dir")
    meta = prepare_corpus(
        corpus, out, tokenizer=tokenizer, vocab_size=vocab_size, progress=progress,
        doc_sep=doc_sep, labels=labels,
    )  # fmt: skip
    sp = meta["splits"]
    typer.echo(
        f"prepared {corpus} -> {out}: {meta['tokenizer']} tokenizer, {meta['vocab_size']} ids "
        f"({meta['dtype']}); tokens train {sp['train']['tokens']:,} / val {sp['val']['tokens']:,}"
        f" / test {sp['test']['tokens']:,}"
    )
    docs = sum(sp[k].get("documents", 0) for k in sp)
    typer.echo(f"documents: train {sp['train'].get('documents', 0):,} / val "
               f"{sp['val'].get('documents', 0):,} / test {sp['test'].get('documents', 0):,}")  # fmt: skip
    if docs <= 1 and doc_sep is None:
        typer.echo(
            "note: the corpus is one document, so its end-of-document mark is in the test "
            "split only; --doc-sep blank (or a separator string) cuts a file into documents",
            err=True,
        )


def same_corpus(given: str, saved: str) -> str:
    """The run's corpus as given now where both name the same file or folder (a path may be
    written another way, or from another directory), else as the run saved it."""
    a, b = Path(given).expanduser(), Path(saved).expanduser()
    if a.exists() and b.exists() and a.resolve() == b.resolve():
        return given
    return saved


@app.command()
@train_command
def train(
    corpus: Annotated[
        str,
        typer.Argument(
            help="shakespeare | shakespeare-text8 | text8[:PATH] | a text file or folder of *.txt "
            "| a data dir written by `text prepare` (read through memory maps)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory (checkpoints, metrics).")],
    process: Annotated[
        str, typer.Option(help="A registered process with a continuous ELBO: absorbing | uniform.")
    ] = "absorbing",
    objective: ObjectiveOpt = None,
    unroll_steps: Annotated[int, typer.Option(help="SUNDAE unrolled steps.")] = 2,
    schedule: Annotated[
        str,
        typer.Option(
            help="A registered continuous schedule: loglinear | cosine | kappa-poly | "
            "kappa-cosine | a plug-in's; options as NAME:VALUE or NAME:KEY=VALUE,... "
            "(kappa-poly:2 is the path kappa = tau^2), recorded in the run."
        ),
    ] = "loglinear",
    tokenizer: TokenizerOpt = "char",
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size (>= 256).")] = 1024,
    doc_sep: DocSep = None,
    labels: LabelsOpt = None,
    label_dropout: Annotated[
        float,
        typer.Option(help="With --labels: probability of training with the null label (CFG)."),
    ] = 0.1,
    seq_len: Annotated[int, typer.Option(help="Tokens per training chunk.")] = 256,
    time_conditioning: Annotated[
        bool | None,
        typer.Option(
            "--time-conditioning/--no-time-conditioning",
            help="Give the denoiser t (default: off for absorbing and SUNDAE, on for uniform "
            "and score entropy).",
            show_default=False,
        ),
    ] = None,
    autoregressive: Annotated[
        bool,
        typer.Option(
            "--autoregressive",
            help="Train the autoregressive yardstick instead (the same transformer, causal; "
            "exact NLL): the judge of `text sample --judge`.",
        ),
    ] = False,
    self_conditioning: Annotated[
        bool,
        typer.Option(
            "--self-conditioning",
            help="The denoiser also sees its previous x0 estimate (trained with it half the "
            "time; used in eval and by every sampler).",
        ),
    ] = False,
    block_size: Annotated[
        int,
        typer.Option(
            help="Block diffusion (BD3-LM): denoise blocks of this many tokens, each given the "
            "clean blocks before it; sampled block by block with a key/value cache (needs a "
            "model not told t). 0: an ordinary model.",
        ),
    ] = 0,
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 6,
    d_model: Annotated[int, typer.Option(help="Model width.")] = 384,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 6,
    mlp_ratio: Annotated[float, typer.Option(help="MLP width / model width.")] = 4.0,
    cond_dim: Annotated[int, typer.Option(help="Width of the time conditioning vector.")] = 128,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = 0.0,
    grad_checkpointing: GradCheckpointing = False,
    seed: Seed = 0,
    *,
    flags: TrainFlags,
) -> None:
    """Train a text diffusion model on CORPUS into --out."""
    set_threads(flags.threads)

    import torch

    from discdiff.tasks import runs
    from discdiff.tasks.text import TextTask, TextTaskConfig

    _not_a_run(corpus)
    saved_train = None
    if check_new_run(out, flags.resume):
        task, model_entry, saved_train = runs.saved_settings(out, expect="text")
        c, m = task.config, ((model_entry.get("denoiser") or {}).get("config") or {})
        flags.refuse_changes(
            out,
            {
                "corpus": (corpus, same_corpus(corpus, c.corpus)),
                "process": (process, c.process),
                "schedule": (schedule, c.schedule),
                "objective": (objective, c.objective),
                "unroll_steps": (unroll_steps, c.unroll_steps),
                "seq_len": (seq_len, c.seq_len),
                "tokenizer": (
                    tokenizer if tokenizer in ("char", "bpe") else "pretrained",
                    c.tokenizer,
                ),
                "vocab_size": (vocab_size, c.vocab_size),
                "doc_sep": (doc_sep, c.doc_sep),
                "labels": (labels, c.labels),
                "label_dropout": (label_dropout, c.label_dropout),
                "time_conditioning": (time_conditioning, c.time_conditioning),
                "self_conditioning": (self_conditioning, c.self_conditioning),
                "block_size": (block_size, c.block_size),
                "autoregressive": (autoregressive, bool(m.get("causal", False))),
                "denoiser": (flags.denoiser, (model_entry.get("denoiser") or {}).get("type")),
                "layers": (layers, m.get("num_layers")),
                "d_model": (d_model, m.get("d_model")),
                "heads": (heads, m.get("num_heads")),
                "mlp_ratio": (mlp_ratio, m.get("mlp_ratio")),
                "cond_dim": (cond_dim, m.get("cond_dim")),
                "dropout": (dropout, m.get("dropout")),
            },
        )
        torch.manual_seed(seed)
        model = task.build_model(model_entry)
        typer.echo(f"resuming {out} ({task.config.process}, {task.config.corpus})")
    else:
        _vocab_needs_bpe(tokenizer, "vocab_size" in flags.explicit)
        if autoregressive and flags.denoiser is not None:
            raise ValueError(
                "--autoregressive trains the causal transformer yardstick; --denoiser does not "
                "apply to it"
            )
        if autoregressive and block_size:
            raise ValueError(
                "--autoregressive trains the causal yardstick; --block-size does not apply to it"
            )
        if autoregressive and objective not in (None, "elbo"):
            raise ValueError(
                f"--autoregressive trains the AR yardstick on its exact NLL; --objective "
                f"{objective!r} does not apply to it"
            )
        config = TextTaskConfig(  # validated before any corpus is read
            corpus=corpus,
            process=process,
            schedule=schedule,
            objective=objective or "elbo",
            unroll_steps=unroll_steps,
            seq_len=seq_len,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            time_conditioning=time_conditioning,
            self_conditioning=self_conditioning,
            doc_sep=doc_sep,
            block_size=block_size,
            labels=labels,
            label_dropout=label_dropout,
        )
        from discdiff.tasks.text.data import prepared_cache

        data_dir, made = prepared_cache(
            corpus, tokenizer=tokenizer, vocab_size=vocab_size, progress=flags.progress,
            doc_sep=doc_sep, labels=labels,
        )  # fmt: skip
        if made:
            typer.echo(f"prepared {corpus} into {data_dir} (reused by the next run)")
        task = TextTask.create(config)  # from the prepared files (the run names the corpus)
        torch.manual_seed(seed)
        sizes = flags.model_sizes(
            {
                "num_layers": ("layers", layers),
                "d_model": ("d_model", d_model),
                "num_heads": ("heads", heads),
                "mlp_ratio": ("mlp_ratio", mlp_ratio),
                "cond_dim": ("cond_dim", cond_dim),
                "dropout": ("dropout", dropout),
            }
        )
        if autoregressive:
            ar = task.ar_model_config(**sizes)
            model = task.build_model({"type": "transformer", "config": ar.to_dict()})
        else:
            model = task.new_model(flags.denoiser, **sizes)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    defaults = dict(task_train_defaults(TextTask), seed=seed)
    given = {**flags.given(), "seed": seed if saved_train is None else None}
    train_config = resolve_train_config(given, defaults, saved_train)
    causal = getattr(getattr(model, "config", None), "causal", False)
    metrics = runs.train(
        task,
        model,
        train_config,
        out,
        resume=flags.resume,
        loss_fn=task.ar_loss_fn if causal else None,
        device=flags.device,
        progress=flags.progress,
        tensorboard=True,
    )
    shown = {
        k: round(v, 4)
        for k, v in metrics.items()
        if k in ("step", "train_loss", "eval_nats_per_token")
    }
    typer.echo(f"trained {out}: {shown}")


def _write_samples(texts: list[str]) -> str:
    """The samples as text; an end-of-document mark inside one (U+001E) is a line break."""
    return "".join(
        f"=== sample {i} ===\n{t.replace(EOD_MARK, chr(10))}\n" for i, t in enumerate(texts)
    )


EOD_MARK = "\x1e"  # the token files' end-of-document character (discdiff.datasets.token_files)


@app.command()
def sample(
    run_dir: ModelArg,
    n: Annotated[int, typer.Option("-n", "--num", help="Number of samples.")] = 16,
    batch_size: Annotated[
        int, typer.Option(help="Samples drawn at once (memory grows with it).")
    ] = 64,
    steps: Annotated[
        int,
        typer.Option(
            help="Sampler steps (first-hitting: one per token; a block-diffusion model: per block)."
        ),
    ] = 256,
    sampler: Annotated[str, typer.Option(help=sampler_help())] = "ancestral",
    length: Annotated[
        int | None,
        typer.Option(
            help="Tokens per sample (default: seq_len); longer is generated block by block "
            "(semi-autoregressive)."
        ),
    ] = None,
    block: Annotated[
        int | None,
        typer.Option(help="New tokens per window past the first (default: seq_len // 2)."),
    ] = None,
    stop_at_eod: Annotated[
        bool,
        typer.Option("--stop-at-eod", help="End each sample at its first end-of-document token."),
    ] = False,
    prefix: Annotated[str | None, typer.Option(help="Text every sample starts with.")] = None,
    infill: Annotated[
        str | None,
        typer.Option(
            help="Template with blanks [MASK] (1 token) or [MASK:n] (n tokens; characters for the "
            'char tokenizer), e.g. "The [MASK:20] of the"; the given text is kept exactly.'
        ),
    ] = None,
    temperature: SamplerTemperature = None,
    top_p: Annotated[float, typer.Option(help="Nucleus filtering of the x0 prediction.")] = 1.0,
    label: Annotated[
        str | None,
        typer.Option(help="The class to draw (a name or id) of a model trained with --labels."),
    ] = None,
    guidance: Annotated[
        float,
        typer.Option(
            help="Classifier-free guidance scale with --label (1 = off, 0 = unconditional)."
        ),
    ] = 1.0,
    proportion: Annotated[
        str | None,
        typer.Option(
            help="sundae: share of positions updated per step, or START,END annealed linearly "
            "(default 0.8)."
        ),
    ] = None,
    argmax: Annotated[
        bool,
        typer.Option("--argmax", help="sundae: argmax-unrolled decoding (deterministic)."),
    ] = False,
    starts: Annotated[
        int | None,
        typer.Option(help="sundae --argmax: chains per sample, the model's best-scored kept."),
    ] = None,
    early_stop: Annotated[
        bool | None,
        typer.Option(
            "--early-stop/--no-early-stop",
            help="sundae: stop a sample once steps leave it unchanged; a stopped sample is not evaluated again (default: on for --argmax; off when sampling: at temperature 0.6 it saved 9% of the work at 100 steps for +-0.03 bits/char, 49% at 300 for 0.13).",
        ),
    ] = None,
    sampler_opt: SamplerOpt = None,
    judge: Annotated[
        Path | None,
        typer.Option(
            help="An autoregressive run (`text train --autoregressive`) of the same tokenizer: "
            "print the samples' generative perplexity under it and their unigram entropy."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write samples here, not stdout.")
    ] = None,
    ema: UseEma = None,
    device: Device = "auto",
    threads: Threads = 0,
    compile: Compile = False,
    cuda_graphs: CudaGraphs = False,
    seed: Seed = 0,
    progress: Progress = True,
) -> None:
    """Sample texts from a trained run, optionally with a fixed prefix or infill template."""
    set_threads(threads)
    import torch

    from discdiff.tasks import runs

    if out is not None:
        check_output(out, None, "--out")
    for value, flag in ((n, "-n"), (batch_size, "--batch-size")):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    options = sampler_options(sampler_opt, taken=("steps", "temperature", "top_p", "guidance"))
    given = {"proportion": proportion, "argmax": argmax or None, "starts": starts,
             "early_stop": early_stop}  # fmt: skip
    for name in sorted(set(options) & {k for k, v in given.items() if v is not None}):
        raise ValueError(f"give {name} once: --{name.replace('_', '-')} or --sampler-opt")
    if proportion is not None:
        try:
            parts = [float(p) for p in proportion.split(",")]
        except ValueError:
            raise ValueError(
                f"--proportion {proportion!r}: expected a number or START,END (two numbers)"
            ) from None
        options["proportion"] = parts[0] if len(parts) == 1 else tuple(parts)
    for name, value in (("argmax", argmax or None), ("starts", starts), ("early_stop", early_stop)):
        if value is not None:
            options[name] = value
    task, model = runs.from_pretrained(run_dir, device=device, use_ema=ema, expect="text")
    s = task.make_sampler(sampler, steps=steps, temperature=temperature, top_p=top_p,
                          guidance=guidance, **options)  # fmt: skip
    if label is not None:
        task.label_id(label)  # one line naming the classes, before any sampling
    model = compiled(model, compile, cuda_graphs)
    judge_run = None
    if judge is not None:
        judge_run = runs.from_pretrained(judge, device=device, expect="text")
        from discdiff.tasks.text.task import _same_tokenizer

        if not _same_tokenizer(judge_run[0].tokenizer, task.tokenizer):
            raise ValueError(f"--judge {judge}: its tokenizer is not the sampled run's")
        if not getattr(judge_run[1].config, "causal", False):
            raise ValueError(f"--judge {judge} is not an autoregressive run (--autoregressive)")
    gen = torch.Generator().manual_seed(seed)
    total_len = length or task.config.seq_len
    if total_len < 1:
        raise ValueError(f"--length must be >= 1, got {total_len}")
    from discdiff.tasks.probes import check_sampling_size

    mc = getattr(model, "config", None)
    check_sampling_size(
        min(n, batch_size), min(total_len, task.config.seq_len), task.process.num_states,
        getattr(mc, "d_model", 0), getattr(mc, "num_heads", 0),
        output_bytes=n * total_len * 9,  # int64 ids and about a byte of text per token
        device=next(model.parameters()).device,
    )  # fmt: skip
    if getattr(mc, "causal", False) and infill is not None:
        raise ValueError("an autoregressive run samples left to right: no --infill")
    texts, parts, calls = [], [], 0
    bar = None
    if progress and n > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="sampling", unit="sample", disable=None)
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        if getattr(mc, "causal", False):
            ids_b = task.sample_ar(
                model, m, total_len, temperature=1.0 if temperature is None else temperature,
                top_p=top_p,
                prefix=task.tokenizer.encode(prefix) if prefix else None, generator=gen,
            )  # fmt: skip
            texts_b, calls_b = [task.tokenizer.decode(row) for row in ids_b], ids_b.shape[1]
            sampler = "autoregressive"
        else:
            texts_b, ids_b, calls_b = task.sample(
                model, m, s, length=length, prefix=prefix, infill=infill, generator=gen,
                block=block, stop_at_eod=stop_at_eod, label=label,
                progress=progress and bar is None and sys.stderr.isatty(),  # a terminal only
            )  # fmt: skip
        texts += texts_b
        parts.append(ids_b)
        calls += calls_b
        if bar is not None:
            bar.update(m)
    if bar is not None:
        bar.close()
    ids = torch.cat(parts)
    if judge_run is not None:
        from discdiff.tasks.text.metrics import unigram_entropy

        scored = None
        eod = task._eod_id() if stop_at_eod else None
        if eod is not None:  # up to each sample's end-of-document token, not the padding after
            hit = (ids == eod).long()
            scored = (hit.cumsum(1) - hit) == 0
        ppl, count = judge_run[0].generative_perplexity(judge_run[1], ids, scored)
        typer.echo(
            f"generative perplexity under {judge}: {ppl:.3f} ({count} tokens); unigram "
            f"entropy {unigram_entropy(ids.tolist()):.3f} nats",
            err=True,
        )
    body = _write_samples(texts)
    if out is not None:
        from discdiff.files import write_output

        write_output(out, body.encode("utf-8"))
        typer.echo(f"wrote {n} samples to {out} ({calls} denoiser calls)")
    else:
        typer.echo(body, nl=False)
        typer.echo(f"{sampler}: {calls} denoiser calls", err=True)


@app.command("eval")
def evaluate(
    run_dir: ModelArg,
    split: Annotated[str, typer.Option(help="test | val | train")] = "test",
    samples: Annotated[int, typer.Option(help="Monte-Carlo ELBO draws per chunk.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Chunks per batch.")] = 32,
    max_chunks: Annotated[int | None, typer.Option(help="Score only the first N chunks.")] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(help="Score only the first N tokens (whole chunks; streams from disk)."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            help="Score this corpus instead (a text file, folder or built-in name), encoded "
            "with the run's tokenizer: out-of-domain bits per character.",
        ),
    ] = None,
    ema: UseEma = None,
    device: Device = "auto",
    threads: Threads = 0,
    seed: Seed = 0,
    progress: Progress = True,
) -> None:
    """Print the negative ELBO of a split in bits per character (+ per token, perplexity for BPE)."""
    set_threads(threads)
    import torch

    from discdiff.tasks import runs

    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r} is not one of 'train', 'val', 'test'")
    task, model = runs.from_pretrained(run_dir, device=device, use_ema=ema, expect="text")
    if file is not None:
        split = task.outside_split(str(file))
    if getattr(getattr(model, "config", None), "causal", False):
        result = task.evaluate_ar(
            model, split, batch_size=batch_size, max_chunks=max_chunks, max_tokens=max_tokens
        )
    else:
        dev = next(model.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed)
        result = task.evaluate(
            model,
            split,
            batch_size=batch_size,
            samples=samples,
            max_chunks=max_chunks,
            max_tokens=max_tokens,
            generator=gen,
            progress=progress,
        )
    shown = split if file is None else str(file)
    typer.echo(f"{shown}: {result.format(per_token=task.config.tokenizer == 'bpe')}")
    if task.objective.note:
        typer.echo(f"note: {task.objective.note}")
