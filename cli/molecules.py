"""`discdiff molecules ...`: sample from, train and evaluate molecule graph diffusion models.

A thin layer over :mod:`discdiff.tasks.molecules`: it parses options, reads/writes files and
prints; the work is done by the task, the core samplers and the shared trainer.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from discdiff.cli._options import (
    BatchSize,
    CkptEvery,
    Device,
    Ema,
    EmaOld,
    EvalBatches,
    EvalEvery,
    LogEvery,
    Lr,
    Progress,
    Resume,
    SamplerOpt,
    Seed,
    SkipNonfinite,
    Steps,
    Threads,
    Warmup,
    WarmupOld,
    deprecated,
    sampler_help,
    sampler_options,
    set_threads,
)
from discdiff.cli._spine import check_new_run, check_output, resolve_train_config, train_flags
from discdiff.files import atomic_path

app = typer.Typer(
    help="Molecule graphs: sample (shipped QM9 model), train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OUT_FORMATS = (".sdf", ".smi", ".csv")
_GLOBAL_SIZES = {"global_dim": 64, "global_ff_dim": 128}


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _write_molecules(path: Path, mols: list, smiles: list[str | None]) -> None:
    """Write samples as .sdf (invalid ones as empty records, valid=0), .smi ("SMILES<TAB>
    sample_i", invalid ones left out) or .csv (valid column)."""
    with atomic_path(path) as tmp:
        _write_to(tmp, path.suffix.lower(), mols, smiles)


def _write_to(path: Path, suffix: str, mols: list, smiles: list[str | None]) -> None:
    from rdkit import Chem

    if suffix == ".sdf":
        with Chem.SDWriter(str(path)) as w:
            for i, (mol, smi) in enumerate(zip(mols, smiles, strict=True)):
                m = mol if smi is not None else Chem.Mol()
                m = Chem.Mol(m)
                m.SetProp("_Name", f"sample_{i}")
                m.SetProp("valid", "1" if smi is not None else "0")
                w.write(m)
    elif suffix == ".smi":  # "SMILES<TAB>name", invalid samples left out (counted by the caller)
        lines = [f"{s}\tsample_{i}\n" for i, s in enumerate(smiles) if s is not None]
        path.write_text("".join(lines), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(["index", "smiles", "valid"])
            for i, s in enumerate(smiles):
                wr.writerow([i, "" if s is None else s, int(s is not None)])


def _write_grid(path: Path, mols: list, smiles: list[str | None], num: int) -> int:
    """PNG grid of the first ``num`` samples, SMILES as legends (an invalid one: empty cell)."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    shown = [m if m is not None else Chem.Mol() for m in mols[:num]]
    legends = [s if s is not None else "invalid" for s in smiles[:num]]
    img = Draw.MolsToGridImage(
        shown, molsPerRow=min(5, len(shown)), subImgSize=(200, 200), legends=legends
    )
    with atomic_path(path) as tmp:
        img.save(str(tmp))
    return len(shown)


TimePower = Annotated[
    float,
    typer.Option(help="Ancestral steps at t_k = (1 - k/n)^P; P > 1 puts more of them near t = 0."),
]


def _sample_and_report(
    model,
    task,
    n: int,
    steps: int,
    sampler: str,
    seed: int,
    batch_size: int,
    novelty: bool,
    time_power: float,
    options: dict | None = None,
    valence_guard: bool = True,
) -> tuple[list, list, dict, float]:
    """Sample ``n`` graphs, decode them, compute metrics; returns (mols, smiles, metrics, s)."""
    from discdiff.chem.graph import canonical_smiles
    from discdiff.chem.metrics import canonical_set, largest_fragment, repair_mol, sanitize_or_none
    from discdiff.tasks.molecules import load_training_smiles

    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    graphs = task.sample_graphs(
        model,
        n,
        steps=steps,
        sampler=task.make_sampler(steps, sampler, time_power, valence_guard, **(options or {})),
        batch_size=batch_size,
        grid_power=time_power,
        generator=gen,
    )
    seconds = time.perf_counter() - start
    raw = task.to_mols(graphs)
    mols, smiles = [], []
    for r in raw:
        m = sanitize_or_none(r)
        if m is None:
            m = repair_mol(r)
        mols.append(None if m is None else largest_fragment(m))
        smiles.append(None if m is None else canonical_smiles(largest_fragment(m)))
    train = None
    if novelty and task.config.dataset is not None:
        src = task.config.dataset
        if src in ("qm9", "moses") or Path(src).is_file():
            smi = load_training_smiles(src, "train", download=False)
            train = canonical_set(smi) if smi else None
    metrics = task.metrics(graphs, train)
    metrics["sampling_seconds"] = seconds
    metrics["molecules_per_second"] = n / seconds
    return mols, smiles, metrics, seconds


def _print_metrics(metrics: dict, title: str) -> None:
    from discdiff.chem.metrics import format_metrics_table

    cols = [
        "num_samples",
        "validity",
        "validity_repaired",
        "validity_connected",
        "uniqueness",
        "novelty",
        "sampling_seconds",
    ]
    cols = [c for c in cols if c in metrics]
    typer.echo(format_metrics_table({title: metrics}, cols))


@app.command()
def sample(
    num: Annotated[int, typer.Option("-n", "--num", help="Number of molecules.")] = 1000,
    out: Annotated[Path, typer.Option("--out", help="Output file: .sdf, .smi or .csv.")] = Path(
        "mols.sdf"
    ),
    grid: Annotated[
        Path | None, typer.Option("--grid", help="PNG grid of the first molecules.")
    ] = None,
    grid_size: Annotated[int, typer.Option(help="Molecules in the grid.")] = 20,
    steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    sampler: Annotated[str, typer.Option(help=sampler_help())] = "ancestral",
    sampler_opt: SamplerOpt = None,
    valence_guard: Annotated[
        bool,
        typer.Option(
            "--valence-guard/--no-valence-guard",
            help="Ancestral sampling that never gives an atom more bonds than its element and "
            "charge allow (valid by construction; off: plain ancestral, for research).",
        ),
    ] = True,
    seed: Seed = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Weights (.safetensors, config JSON beside) or a training run dir."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Molecules per denoiser batch.")] = 250,
    threads: Threads = 0,
    novelty: Annotated[bool, typer.Option(help="Report novelty if the train set is cached.")] = (
        True
    ),
    time_power: TimePower = 3.0,  # discdiff.tasks.molecules.GRID_POWER (lazy import)
) -> None:
    """Sample molecules, write them (and a PNG grid), print validity/uniqueness/novelty."""
    from discdiff.tasks.molecules import load_pretrained, shipped_checkpoint

    _positive(num, "-n")
    _positive(steps, "--steps")
    _positive(batch_size, "--batch-size")
    _positive(grid_size, "--grid-size")
    if out.suffix.lower() not in OUT_FORMATS:
        raise ValueError(f"--out {str(out)!r}: unknown extension; expected one of {OUT_FORMATS}")
    if grid is not None and grid.suffix.lower() != ".png":
        raise ValueError(f"--grid {str(grid)!r}: expected a .png file")
    check_output(out, OUT_FORMATS, "--out")
    if grid is not None:
        check_output(grid, (".png",), "--grid")
    set_threads(threads)
    model, task = load_pretrained(checkpoint if checkpoint is not None else shipped_checkpoint())
    mols, smiles, metrics, seconds = _sample_and_report(
        model, task, num, steps, sampler, seed, batch_size, novelty, time_power,
        sampler_options(sampler_opt), valence_guard,
    )  # fmt: skip
    _write_molecules(out, mols, smiles)
    typer.echo(f"wrote {num} molecules to {out} ({seconds:.1f} s sampling, {steps} steps)")
    invalid = sum(s is None for s in smiles)
    if invalid and out.suffix.lower() == ".smi":
        typer.echo(
            f"left {invalid} invalid sample(s) out of {out} (.sdf and .csv keep them, flagged)"
        )
    if grid is not None:
        shown = _write_grid(grid, mols, smiles, grid_size)
        typer.echo(f"wrote a grid of the first {shown} molecules to {grid}")
    _print_metrics(metrics, "samples")


#: training defaults of the molecule task (flags override; --resume keeps the run's)
TRAIN_DEFAULTS = {
    "steps": 6000,
    "batch_size": 128,
    "lr": 1e-3,
    "warmup_steps": 200,
    "ema_decay": 0.999,
    "eval_every": 1000,
    "eval_batches": 4,
    "ckpt_every": 500,
    "log_every": 50,
}


@app.command()
def train(
    data: Annotated[str, typer.Option(help="qm9 | moses | a SMILES/CSV file.")] = "qm9",
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/molecules"),
    resume: Resume = False,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    warmup: Warmup = None,
    warmup_steps: WarmupOld = None,
    ema: Ema = None,
    ema_decay: EmaOld = None,
    seed: Seed = 0,
    process: Annotated[str, typer.Option(help="marginal | uniform | absorbing (registered).")] = (
        "marginal"
    ),
    schedule: Annotated[str, typer.Option(help="loglinear | cosine (registered).")] = "loglinear",
    edge_weight: Annotated[float, typer.Option(help="Loss weight of the bonds field.")] = 5.0,
    layers: Annotated[int, typer.Option(help="Graph transformer layers.")] = 4,
    node_dim: Annotated[int, typer.Option(help="Node width (feed-forward 2x).")] = 64,
    edge_dim: Annotated[int, typer.Option(help="Edge width (feed-forward 2x).")] = 32,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    max_nodes: Annotated[int, typer.Option(help="Largest graph (0 = from the data).")] = 0,
    max_train: Annotated[int, typer.Option(help="Use only the first N SMILES (0 = all).")] = 0,
    eval_every: EvalEvery = None,
    eval_batches: EvalBatches = None,
    ckpt_every: CkptEvery = None,
    log_every: LogEvery = None,
    skip_nonfinite: SkipNonfinite = None,
    device: Device = "auto",
    threads: Threads = 0,
    progress: Progress = True,
) -> None:
    """Train a graph denoiser; the run dir holds task.json, data, checkpoints and metrics."""
    from discdiff.tasks import runs
    from discdiff.tasks.molecule_data import prepare_molecule_data
    from discdiff.tasks.molecules import MoleculeTask

    warmup = deprecated(warmup, warmup_steps, "--warmup", "--warmup-steps")
    ema = deprecated(ema, ema_decay, "--ema", "--ema-decay")
    for name, v in (("--steps", steps), ("--batch-size", batch_size), ("--layers", layers)):
        if v is not None:
            _positive(v, name)
    set_threads(threads)
    saved_train = None
    if check_new_run(out, resume):
        task, model_entry, saved_train = runs.saved_settings(out)
        typer.echo(f"resuming {out} (task, model and data from the run dir)")
    else:
        prep = prepare_molecule_data(data, max_train=max_train or None, max_nodes=max_nodes or None)
        task = MoleculeTask.from_graphs(
            prep.graphs,
            prep.vocab,
            max_nodes=prep.max_nodes,
            process=process,
            schedule=schedule,
            edge_weight=edge_weight,
            dataset=prep.dataset,
        )
        typer.echo(f"{prep.report()}; max_nodes {task.config.max_nodes}")
        task.attach_data(
            task.graph_dataset(prep.graphs), task.graph_dataset(prep.val_graphs or prep.graphs[:1])
        )
        sizes = dict(
            _GLOBAL_SIZES,
            num_layers=layers,
            node_dim=node_dim,
            edge_dim=edge_dim,
            num_heads=heads,
            node_ff_dim=2 * node_dim,
            edge_ff_dim=2 * edge_dim,
        )
        torch.manual_seed(seed)
        model_entry = task.model_entry(task.new_model(**sizes))
    torch.manual_seed(seed)
    model = task.build_model(model_entry)
    n_params = sum(p.numel() for p in model.parameters())
    typer.echo(f"denoiser: {n_params:,} parameters; process {task.config.process}")
    given = {**train_flags(locals()), "seed": seed if saved_train is None else None}
    defaults = dict(TRAIN_DEFAULTS, seed=seed)
    n_train = len(task.dataset("train"))
    if saved_train is None:
        defaults["batch_size"] = min(given["batch_size"] or defaults["batch_size"], n_train)
        given["batch_size"] = None
    config = resolve_train_config(given, defaults, saved_train)
    result = runs.train(
        task, model, config, out, resume=resume, device=device, progress=progress, tensorboard=False
    )
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float))
    typer.echo(f"done at step {int(result.get('step', config.steps))}: {shown}")


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (or .safetensors).")],
    num: Annotated[int, typer.Option("-n", "--num", help="Molecules to sample.")] = 1000,
    steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    sampler: Annotated[str, typer.Option(help=sampler_help())] = "ancestral",
    seed: Seed = 0,
    batch_size: Annotated[int, typer.Option(help="Molecules per denoiser batch.")] = 250,
    out: Annotated[Path | None, typer.Option(help="Also write the samples (.sdf/.smi/.csv).")] = (
        None
    ),
    raw: Annotated[bool, typer.Option("--raw", help="Raw weights, not the EMA.")] = False,
    threads: Threads = 0,
    time_power: TimePower = 3.0,  # discdiff.tasks.molecules.GRID_POWER (lazy import)
) -> None:
    """Sample from a run (its latest checkpoint, EMA weights) and print the metrics table."""
    from discdiff.tasks.molecules import load_pretrained, load_run

    _positive(num, "-n")
    _positive(steps, "--steps")
    if out is not None and out.suffix.lower() not in OUT_FORMATS:
        raise ValueError(f"--out {str(out)!r}: unknown extension; expected one of {OUT_FORMATS}")
    if out is not None:
        check_output(out, OUT_FORMATS, "--out")
    set_threads(threads)
    if run_dir.is_dir():
        model, task = load_run(run_dir, use_ema=False if raw else None)
    else:
        model, task = load_pretrained(run_dir)
    mols, smiles, metrics, seconds = _sample_and_report(
        model, task, num, steps, sampler, seed, batch_size, True, time_power
    )
    if out is not None:
        _write_molecules(out, mols, smiles)
    _print_metrics(metrics, run_dir.name or str(run_dir))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Weights file (*_model.safetensors).")],
    raw: Annotated[bool, typer.Option("--raw", help="Raw weights, not the EMA.")] = False,
) -> None:
    """Write a run's latest weights (EMA by default) as safetensors + config JSON beside."""
    from discdiff.tasks.molecules import load_run, save_pretrained

    if out.suffix != ".safetensors":
        raise ValueError(f"--out {str(out)!r}: expected a .safetensors file")
    model, task = load_run(run_dir, use_ema=False if raw else None)
    weights, cfg = save_pretrained(model, task, out)
    typer.echo(f"wrote {weights} and {cfg}")
