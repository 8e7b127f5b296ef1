"""`discdiff molecules ...`: sample from, train and evaluate molecule graph diffusion models.

A thin layer over :mod:`discdiff.tasks.molecules`: it parses options, reads/writes files and
prints; the work is done by the task, the core samplers and the shared trainer.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from discdiff.cli._options import Device, Seed, Threads, set_threads

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
    """Write samples as .sdf (invalid ones as empty records), .smi or .csv (None = invalid)."""
    from rdkit import Chem

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        with Chem.SDWriter(str(path)) as w:
            for i, (mol, smi) in enumerate(zip(mols, smiles, strict=True)):
                m = mol if smi is not None else Chem.Mol()
                m = Chem.Mol(m)
                m.SetProp("_Name", f"sample_{i}")
                m.SetProp("valid", "1" if smi is not None else "0")
                w.write(m)
    elif suffix == ".smi":
        path.write_text("".join(f"{s}\n" for s in smiles), encoding="utf-8")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Draw.MolsToGridImage(
        shown, molsPerRow=min(5, len(shown)), subImgSize=(200, 200), legends=legends
    )
    img.save(str(path))
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
        sampler=sampler,
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
    sampler: Annotated[str, typer.Option(help="ancestral | first_hitting (absorbing).")] = (
        "ancestral"
    ),
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
    set_threads(threads)
    model, task = load_pretrained(checkpoint if checkpoint is not None else shipped_checkpoint())
    mols, smiles, metrics, seconds = _sample_and_report(
        model, task, num, steps, sampler, seed, batch_size, novelty, time_power
    )
    _write_molecules(out, mols, smiles)
    typer.echo(f"wrote {num} molecules to {out} ({seconds:.1f} s sampling, {steps} steps)")
    if grid is not None:
        shown = _write_grid(grid, mols, smiles, grid_size)
        typer.echo(f"wrote a grid of the first {shown} molecules to {grid}")
    _print_metrics(metrics, "samples")


def _load_data(source: str, max_train: int | None, split: str) -> list[str]:
    from discdiff.tasks.molecules import load_training_smiles

    smiles = load_training_smiles(source, split)
    if not smiles:
        raise ValueError(f"--data {source!r} holds no SMILES")
    return smiles[:max_train] if max_train else smiles


@app.command()
def train(
    data: Annotated[str, typer.Option(help="qm9 | moses | a SMILES/CSV file.")] = "qm9",
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/molecules"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    steps: Annotated[int, typer.Option(help="Optimizer steps in total.")] = 6000,
    batch_size: Annotated[int, typer.Option(help="Molecules per step.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 200,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of weights (0 = off).")] = 0.999,
    seed: Seed = 0,
    process: Annotated[str, typer.Option(help="marginal | uniform | absorbing.")] = "marginal",
    schedule: Annotated[str, typer.Option(help="loglinear | cosine.")] = "loglinear",
    edge_weight: Annotated[float, typer.Option(help="Loss weight of the bonds field.")] = 5.0,
    layers: Annotated[int, typer.Option(help="Graph transformer layers.")] = 4,
    node_dim: Annotated[int, typer.Option(help="Node width (feed-forward 2x).")] = 64,
    edge_dim: Annotated[int, typer.Option(help="Edge width (feed-forward 2x).")] = 32,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    max_nodes: Annotated[int, typer.Option(help="Largest graph (0 = from the data).")] = 0,
    max_train: Annotated[int, typer.Option(help="Use only the first N SMILES (0 = all).")] = 0,
    eval_every: Annotated[int, typer.Option(help="Held-out ELBO every N steps (0 = off).")] = 1000,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 500,
    log_every: Annotated[int, typer.Option(help="Log every N steps.")] = 50,
    device: Device = "auto",
    threads: Threads = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a graph denoiser; the run dir holds task.json, data, checkpoints and metrics."""
    from discdiff.chem.graph import GraphVocab, encode_smiles
    from discdiff.tasks.molecules import GraphDataset, MoleculeTask, MoleculeTaskConfig
    from discdiff.training import TrainConfig, Trainer

    for name, v in (("--steps", steps), ("--batch-size", batch_size), ("--layers", layers)):
        _positive(v, name)
    set_threads(threads)
    task_path, data_path, val_path = (
        out / "task.json",
        out / "train.safetensors",
        out / "val.safetensors",
    )
    if resume and task_path.is_file():
        doc = json.loads(task_path.read_text(encoding="utf-8"))
        task = MoleculeTask(MoleculeTaskConfig.from_dict(doc["task"]))
        model_doc = doc
        train_ds, val_ds = GraphDataset.load(data_path), GraphDataset.load(val_path)
        typer.echo(f"resuming {out} (task, model and data from the run dir)")
    else:
        if (out / "checkpoints").exists():
            raise ValueError(f"run dir {str(out)!r} already has checkpoints; pass --resume")
        if data == "qm9":
            vocab = GraphVocab.qm9()
        elif data == "moses":
            vocab = GraphVocab.moses()
        else:
            vocab = None
        smiles = _load_data(data, max_train or None, "train")
        if vocab is None:
            vocab = GraphVocab.from_smiles(smiles)
        graphs, skipped = encode_smiles(smiles, vocab)
        if max_nodes:
            kept = [g for g in graphs if g[0].shape[0] <= max_nodes]
            skipped += len(graphs) - len(kept)
            graphs = kept
        if not graphs:
            raise ValueError(f"no molecule of --data {data!r} fits the vocabulary and max_nodes")
        task = MoleculeTask.from_graphs(
            graphs,
            vocab,
            max_nodes=max_nodes or None,
            process=process,
            schedule=schedule,
            edge_weight=edge_weight,
            dataset=data if data in ("qm9", "moses") else str(Path(data).resolve()),
        )
        typer.echo(
            f"{len(graphs)} training graphs ({skipped} skipped), max_nodes {task.config.max_nodes}"
        )
        if data in ("qm9", "moses"):
            val_smiles = _load_data(data, 2000, "val")
        else:
            val_smiles = smiles[: max(1, min(500, len(smiles) // 10))]
        val_graphs, _ = task.encode(val_smiles)
        sizes = dict(
            _GLOBAL_SIZES,
            num_layers=layers,
            node_dim=node_dim,
            edge_dim=edge_dim,
            num_heads=heads,
            node_ff_dim=2 * node_dim,
            edge_ff_dim=2 * edge_dim,
        )
        model_doc = {
            "task": task.config.to_dict(),
            "denoiser": task.denoiser_config(**sizes).to_dict(),
        }
        out.mkdir(parents=True, exist_ok=True)
        train_ds = task.dataset(graphs)
        val_ds = task.dataset(val_graphs or graphs[:1])
        train_ds.save(data_path)
        val_ds.save(val_path)
        task_path.write_text(json.dumps(model_doc, indent=1) + "\n", encoding="utf-8")
    model = task.build_model(model_doc)
    n_params = sum(p.numel() for p in model.parameters())
    typer.echo(f"denoiser: {n_params:,} parameters; process {task.config.process}")
    config = TrainConfig(
        steps=steps,
        batch_size=min(batch_size, len(train_ds)),
        lr=lr,
        warmup_steps=min(warmup_steps, steps - 1) if steps > 1 else 0,
        ema_decay=ema_decay if ema_decay > 0 else None,
        eval_every=eval_every,
        eval_batches=4,
        ckpt_every=ckpt_every,
        log_every=log_every,
        seed=seed,
    )
    trainer = Trainer(
        model,
        task.loss_fn,
        train_ds,
        config,
        out,
        model_config=model_doc,
        eval_data=val_ds,
        eval_fn=task.nll_fn,
        device=device,
        progress=progress,
        tensorboard=False,
    )
    result = trainer.fit(resume=resume)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float))
    typer.echo(f"done at step {trainer.step}: {shown}")


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (or .safetensors).")],
    num: Annotated[int, typer.Option("-n", "--num", help="Molecules to sample.")] = 1000,
    steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    sampler: Annotated[str, typer.Option(help="ancestral | first_hitting.")] = "ancestral",
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
