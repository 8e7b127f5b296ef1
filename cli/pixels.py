"""`discdiff pixels ...`: train, sample and evaluate discrete diffusion on grey-scale images.

Thin over :mod:`discdiff.tasks.pixels`; every loop is the shared one. Examples::

    discdiff pixels train --data digits --levels 16 --process absorbing --out runs/digits
    discdiff pixels train --out runs/digits --resume --steps 4000
    discdiff pixels sample runs/digits -n 64 --label 3 --guidance 2.0 --out grid.png
    discdiff pixels eval runs/digits
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from discdiff.cli._options import (
    Compile,
    CudaGraphs,
    Device,
    GradCheckpointing,
    ModelArg,
    ObjectiveOpt,
    SamplerOpt,
    Seed,
    SeedOrSaved,
    Temperature,
    Threads,
    compiled,
    sampler_help,
    sampler_options,
    set_threads,
)
from discdiff.cli._spine import (
    TrainFlags,
    check_new_run,
    check_output,
    resolve_train_config,
    task_train_defaults,
    train_command,
)

app = typer.Typer(
    name="pixels",
    help="Discrete diffusion on image pixels (MNIST, Fashion-MNIST, 8x8 digits).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: training defaults used when neither the command line nor a resumed run sets a value
_TASK_DEFAULTS: dict[str, Any] = {"data": "mnist", "levels": 16, "process": "absorbing"}
_MODEL_DEFAULTS: dict[str, Any] = {"num_layers": 4, "d_model": 128, "num_heads": 4, "patch": 1}


def _merge(
    given: dict[str, Any], saved: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """Options left unset (None) take the resumed run's value, else the default."""
    out = {**defaults, **saved}
    out.update({k: v for k, v in given.items() if v is not None})
    return out


@app.command()
@train_command
def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory (checkpoints, metrics).")],
    data: Annotated[
        str | None, typer.Option(help="mnist | fashion-mnist | digits (default mnist)")
    ] = None,
    levels: Annotated[
        int | None, typer.Option(help="Intensity levels, 2..256 (default 16).")
    ] = None,
    process: Annotated[
        str | None, typer.Option(help="absorbing | uniform | gaussian (default absorbing)")
    ] = None,
    objective: ObjectiveOpt = None,
    layers: Annotated[int | None, typer.Option(help="Transformer blocks (default 4).")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width (default 128).")] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads (default 4).")] = None,
    patch: Annotated[
        int | None,
        typer.Option(help="p x p pixels per transformer token (default 1; 2 is ~4x cheaper)."),
    ] = None,
    timesteps: Annotated[
        int | None, typer.Option(help="Gaussian process: T discrete steps (default 1000).")
    ] = None,
    beta_end: Annotated[
        float | None, typer.Option(help="Gaussian process: last beta (default 0.02).")
    ] = None,
    label_dropout: Annotated[
        float | None,
        typer.Option(help="Probability of training with the null label (default 0.1)."),
    ] = None,
    grad_checkpointing: GradCheckpointing = False,
    seed: SeedOrSaved = None,
    *,
    flags: TrainFlags,
) -> None:
    """Train a denoiser on an image data set; --resume continues a run bit-for-bit."""
    import torch

    from discdiff.tasks import pixels as px
    from discdiff.tasks import runs
    from discdiff.tasks.runs import TrainConfig

    set_threads(flags.threads)
    saved_task: dict[str, Any] = {}
    saved_model: dict[str, Any] = {}
    saved_train: dict[str, Any] | None = None
    saved_type: str | None = None
    dcfg: dict[str, Any] = {}
    if check_new_run(out, flags.resume):
        saved, entry, saved_train = runs.saved_settings(out, expect="pixels")
        saved_task = saved.config.to_dict()
        dcfg = (entry.get("denoiser") or {}).get("config") or {}
        saved_model = {k: dcfg[k] for k in _MODEL_DEFAULTS if k in dcfg}
        saved_type = (entry.get("denoiser") or {}).get("type")
        if flags.denoiser is not None and flags.denoiser != saved_type:
            raise ValueError(
                f"--resume: --denoiser {flags.denoiser!r} differs from the run's {saved_type!r} "
                f"in {str(out)!r}; a run's task and model are fixed (train a new --out)"
            )

    task_opts = _merge(
        {
            "data": data,
            "levels": levels,
            "process": process,
            "timesteps": timesteps,
            "beta_end": beta_end,
            "label_dropout": label_dropout,
            "objective": objective,
        },
        saved_task,
        _TASK_DEFAULTS,
    )
    config = px.PixelConfig.from_dict(task_opts)
    size_flags = {  # parameter -> (size name, value given)
        "layers": ("num_layers", layers),
        "d_model": ("d_model", d_model),
        "heads": ("num_heads", heads),
        "patch": ("patch", patch),
    }
    given_model = dict(size_flags.values())
    model_opts = _merge(given_model, saved_model, _MODEL_DEFAULTS)
    train_config = resolve_train_config(
        {**flags.given(), "seed": seed},
        {**TrainConfig().to_dict(), **task_train_defaults(px.PixelTask)},
        saved_train or None,
    )
    task = px.PixelTask(config)
    torch.manual_seed(train_config.seed)
    denoiser = flags.denoiser or saved_type
    if denoiser in (None, px.PixelTask.default_denoiser):
        model = task.new_model(**model_opts)
    elif saved_train is not None:  # another denoiser resumed: its saved architecture
        flags.refuse_changes(out, {p: (v, dcfg.get(k)) for p, (k, v) in size_flags.items()})
        model = task.build_model(entry)
    else:  # another denoiser takes only the sizes given (the defaults are the transformer's)
        model = task.new_model(denoiser, **{k: v for k, v in given_model.items() if v is not None})
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    metrics = runs.train(
        task, model, train_config, out, resume=flags.resume, device=flags.device,
        progress=flags.progress,
    )  # fmt: skip
    shown = {k: round(v, 5) for k, v in metrics.items() if isinstance(v, float)}
    typer.echo(f"trained {config.process} on {config.data} ({config.levels} levels) -> {out}")
    typer.echo(json.dumps(shown))


def _load(run_dir: Path, device: str) -> tuple[Any, Any]:
    from discdiff.tasks import runs

    return runs.from_pretrained(run_dir, device=device, expect="pixels")


@app.command()
def sample(
    run_dir: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="PNG file for the image grid.")] = Path(
        "grid.png"
    ),
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 64,
    label: Annotated[
        int | None, typer.Option(help="Class label to draw (default: cycle through all labels).")
    ] = None,
    guidance: Annotated[
        float, typer.Option(help="Classifier-free guidance scale (1 = off, 0 = unconditional).")
    ] = 1.0,
    steps: Annotated[int | None, typer.Option(help="Reverse steps (default min(T, 100)).")] = None,
    sampler: Annotated[str, typer.Option(help=sampler_help())] = "ancestral",
    temperature: Temperature = 1.0,
    sampler_opt: SamplerOpt = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    compile: Compile = False,
    cuda_graphs: CudaGraphs = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Draw images from a trained run with any registered sampler; save them as one PNG grid."""
    import torch

    from discdiff.tasks import pixels as px

    set_threads(threads)
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    check_output(out, (".png",), "--out")
    task, model = _load(run_dir, device)
    model = compiled(model, compile, cuda_graphs)
    task.check_sample_count(n)  # before the labels: 10^9 of them are 8 GB already
    k = task.config.num_labels
    labels = torch.full((n,), label) if label is not None else torch.arange(n) % k
    px.check_labels(task, labels)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    s = task.make_sampler(
        sampler, steps=steps, guidance=guidance, temperature=temperature,
        **sampler_options(sampler_opt, taken=("steps", "guidance", "temperature")),
    )  # fmt: skip
    ids = task.sample(model, n, s, labels=labels, generator=generator, progress=progress)
    c = task.config
    from discdiff.files import output_path

    with output_path(out, ".png") as tmp:
        px.save_grid(ids, tmp, c.levels, c.height, c.width)
    typer.echo(f"wrote {n} samples ({c.data}, {c.levels} levels, {c.process}) to {out}")


@app.command("eval")
def evaluate(
    run_dir: ModelArg,
    split: Annotated[str, typer.Option(help="train | valid | test")] = "test",
    limit: Annotated[int | None, typer.Option(help="Score only the first N images.")] = None,
    repeats: Annotated[int, typer.Option(help="Monte-Carlo draws of the bound per image.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 100,
    quality: Annotated[
        bool, typer.Option(help="Also sample and report label agreement and NN distances.")
    ] = False,
    per_label: Annotated[int, typer.Option(help="Samples per label for --quality.")] = 10,
    guidance: Annotated[float, typer.Option(help="CFG scale of the --quality samples.")] = 1.0,
    steps: Annotated[int | None, typer.Option(help="Reverse steps for --quality.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
) -> None:
    """Test negative ELBO in bits per dimension (with its standard error), optionally more."""
    import torch

    from discdiff.tasks import pixels as px

    set_threads(threads)
    if json_out is not None:
        check_output(json_out, None, "--json")
    task, model = _load(run_dir, device)
    data = px.load_data(task.config, split)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    bpd, se, count = px.bits_per_dim(
        task, model, data, batch_size=batch_size, limit=limit, repeats=repeats, generator=generator
    )
    c = task.config
    report: dict[str, Any] = {
        "data": c.data,
        "levels": c.levels,
        "process": c.process,
        "split": split,
        "images": count,
        "bits_per_dim": bpd,
        "bits_per_dim_se": se,
    }
    typer.echo(f"{split} bits/dim: {bpd:.4f} +- {se:.4f} (SE over {count} images, {c.process})")
    if quality:
        train_data = px.load_data(c, "train")
        q = px.sample_quality(
            task,
            model,
            train_data,
            data,
            per_label=per_label,
            guidance=guidance,
            steps=steps,
            generator=generator,
        )
        typer.echo(
            f"label agreement: {q['agreement']:.3f} +- {q['agreement_se']:.3f} over "
            f"{q['num_samples']} samples (guidance {guidance}; classifier on real {split} "
            f"images: {q['classifier_accuracy']:.3f})"
        )
        typer.echo(
            f"nearest training image, L2: samples {q['nn_samples']:.3f} +- {q['nn_samples_se']:.3f}, "
            f"held-out real {q['nn_heldout']:.3f} +- {q['nn_heldout_se']:.3f}; exact copies {q['copies']}"
        )
        report.update({k: v for k, v in q.items() if k not in ("samples", "labels")})
        report["guidance"] = guidance
    if json_out is not None:
        from discdiff.files import write_output

        write_output(json_out, (json.dumps(report, indent=2) + "\n").encode())
