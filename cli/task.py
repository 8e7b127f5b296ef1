"""`discdiff task ...`: any registered task (built-in or a plug-in's) through the one spine.

    discdiff task list                                   # tasks, processes, samplers, ...
    discdiff task train dna --import examples/dna_task.py --config '{"length": 32}' --out runs/dna
    discdiff task eval runs/dna --import examples/dna_task.py
    discdiff task sample runs/dna --import examples/dna_task.py -n 8 --sampler first-hitting

A task installed as a plug-in needs no ``--import``; one in a file or module does.
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
    ModelArg,
    RawWeights,
    SamplerOpt,
    SamplerTemperature,
    Seed,
    StorageDtype,
    Threads,
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
    resolve_train_config,
    task_train_defaults,
    train_command,
)

app = typer.Typer(
    help="Any registered task (built-in or a plug-in's): list, train, eval, sample, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _json_arg(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


@app.command("list")
def list_() -> None:
    """What is registered: tasks, processes, schedules, samplers, denoisers and objectives."""
    import discdiff as dd

    for title, reg in (
        ("tasks", dd.TASKS),
        ("processes", dd.PROCESSES),
        ("schedules", dd.SCHEDULES),
        ("samplers", dd.SAMPLERS),
        ("denoisers", dd.DENOISERS),
        ("objectives", dd.OBJECTIVES),
    ):
        typer.echo(f"{title}:")
        for name, doc in reg.describe().items():
            typer.echo(f"  {name:<18} {doc}".rstrip())


@app.command()
@train_command
def train(
    name: Annotated[str, typer.Argument(help="A registered task (see `discdiff task list`).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory.")],
    config: Annotated[
        str | None, typer.Option(help="The task's config as JSON (or @FILE); unset keys: defaults.")
    ] = None,
    sizes: Annotated[
        str | None, typer.Option(help="Denoiser sizes as JSON, e.g. '{\"num_layers\": 2}'.")
    ] = None,
    seed: Seed = 0,
    *,
    flags: TrainFlags,
) -> None:
    """Train task NAME into --out (the spine's run layout; --resume continues it)."""
    set_threads(flags.threads)
    import torch

    from discdiff.tasks import TASKS, runs

    saved = None
    if check_new_run(out, flags.resume):
        task, entry, saved = runs.saved_settings(out)
        if TASKS.get(name) is not type(task):
            raise ValueError(f"--resume: {str(out)!r} is a {task.name} run, not {name!r}")
        own = {
            "--config": (
                type(task).comparable_settings(_json_arg(config, "--config")) if config else {},
                task.config.to_dict(),
            ),
            "--denoiser": (
                {"type": flags.denoiser} if flags.denoiser else {},
                {"type": (entry.get("denoiser") or {}).get("type")},
            ),
            "--sizes": (
                _json_arg(sizes, "--sizes") if sizes else {},
                (entry.get("denoiser") or {}).get("config") or {},
            ),
        }
        for flag, (given_doc, saved_doc) in own.items():
            for key, value in given_doc.items():
                if key not in saved_doc:
                    typer.echo(
                        f"note: --resume: {flag} {key} is not checked (the run keeps its own)",
                        err=True,
                    )
                elif saved_doc[key] != value:
                    raise ValueError(
                        f"--resume: {flag} {key}={value!r} differs from the run's "
                        f"{saved_doc[key]!r}; a run's task and model are fixed (train a new --out)"
                    )
        typer.echo(f"resuming {out} ({task.name})")
    else:
        task = TASKS.get(name).from_settings(_json_arg(config, "--config"), progress=flags.progress)
        torch.manual_seed(seed)
        entry = task.model_entry(task.new_model(flags.denoiser, **_json_arg(sizes, "--sizes")))
    torch.manual_seed(seed)
    model = task.build_model(entry)
    given = {**flags.given(), "seed": seed if saved is None else None}
    cfg = resolve_train_config(given, task_train_defaults(type(task)), saved)
    metrics = runs.train(
        task, model, cfg, out, resume=flags.resume, device=flags.device, progress=flags.progress
    )
    shown = {k: round(v, 4) for k, v in metrics.items() if k in ("step", "train_loss", "eval_loss")}
    typer.echo(f"trained {task.name} -> {out}: {shown}")


@app.command("eval")
def evaluate(
    run_dir: ModelArg,
    split: Annotated[str, typer.Option(help="The split to score (the task's names).")] = "test",
    samples: Annotated[int, typer.Option(help="Monte-Carlo draws of the bound per example.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 32,
    limit: Annotated[int | None, typer.Option(help="Score only the first N examples.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """The task's held-out bound in its own unit, with its standard error."""
    set_threads(threads)
    import torch

    from discdiff.tasks import runs

    if json_out is not None:
        check_output(json_out, (".json",), "--json")
    task, model = runs.from_pretrained(run_dir, device=device)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ev = task.evaluate(
        model, split, batch_size=batch_size, samples=samples, limit=limit, generator=gen
    )
    typer.echo(f"{split}: {ev.format()}")
    if json_out is not None:
        import json

        from discdiff.files import write_output

        doc = {"task": task.name, "split": split, "value": ev.value, "se": ev.se, "unit": ev.unit}
        write_output(json_out, (json.dumps(doc, indent=2) + "\n").encode())


@app.command()
def sample(
    run_dir: ModelArg,
    n: Annotated[int, typer.Option("-n", "--num", help="Number of samples.")] = 8,
    sampler: Annotated[str, typer.Option(help=sampler_help())] = "ancestral",
    steps: Annotated[int, typer.Option(help="Sampler steps (first-hitting: one per token).")] = 64,
    temperature: SamplerTemperature = None,
    sampler_opt: SamplerOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write samples here (.txt lines), not stdout.")
    ] = None,
    seed: Seed = 0,
    device: Device = "auto",
    compile: Compile = False,
    cuda_graphs: CudaGraphs = False,
    threads: Threads = 0,
) -> None:
    """Draw N samples from a run with any registered sampler; print or write them."""
    set_threads(threads)
    import torch

    from discdiff.tasks import runs

    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    if out is not None:
        check_output(out, (".txt",), "--out")
    task, model = runs.from_pretrained(run_dir, device=device)
    model = compiled(model, compile, cuda_graphs)
    s = task.make_sampler(
        sampler,
        steps=steps,
        temperature=temperature,
        **sampler_options(sampler_opt, taken=("steps", "temperature")),
    )
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    lines = task.format_samples(task.sample(model, n, s, generator=gen))
    body = "".join(f"{line}\n" for line in lines)
    if out is None:
        typer.echo(body, nl=False)
        return
    from discdiff.files import write_output

    write_output(out, body.encode("utf-8"))
    typer.echo(f"wrote {len(lines)} samples to {out}")


@app.command()
def export(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory of any task, or one of its checkpoints.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Weights file (NAME.safetensors).")],
    ema: UseEma = None,
    raw: RawWeights = False,
    dtype: StorageDtype = "float32",
) -> None:
    """Write a run's weights (EMA by default) and its model entry: one file pair any task's
    `from_pretrained` reads."""
    from discdiff.tasks import runs

    check_output(out, (".safetensors",), "--out", streams=False)
    task, model = runs.from_pretrained(run_dir, use_ema=False if raw else ema)
    weights, cfg = runs.export(task, model, out, dtype=dtype)
    typer.echo(f"wrote {weights} and {cfg}")
