"""`discdiff molecules ...`: sample from, train and evaluate molecule graph diffusion models.

A thin layer over :mod:`discdiff.tasks.molecules`: it parses options, reads/writes files and
prints; the work is done by the task, the core samplers and the shared trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from discdiff.cli import _molecule_init as mi
from discdiff.cli import _molecule_output as mo
from discdiff.cli import _molecule_sampling as ms
from discdiff.cli._molecule_options import (
    BareScaffold,
    Guidance,
    JsonReport,
    MedchemFilter,
    MotifGuard,
    Novel,
    NumAtoms,
    Reject,
    RejectBudget,
    RejectRounds,
    Repair,
    Scaffold,
    Stereo,
    Target,
    TargetMode,
    TimePower,
    Unique,
    ValenceGuard,
)
from discdiff.cli._options import (
    Compile,
    CudaGraphs,
    Device,
    ModelArg,
    ObjectiveOpt,
    Progress,
    RawWeights,
    SamplerOpt,
    Seed,
    StorageDtype,
    Temperature,
    Threads,
    UseEma,
    compiled,
    sampler_help,
    set_threads,
)
from discdiff.cli._spine import (
    TrainFlags,
    check_new_run,
    check_output,
    distinct_outputs,
    resolve_train_config,
    task_train_defaults,
    train_command,
)

app = typer.Typer(
    help="Molecule graphs: sample (shipped QM9 model), train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_GLOBAL_SIZES = {"global_dim": 64, "global_ff_dim": 128}


@app.command()
def sample(
    model_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[MODEL]",
            help="A run directory, one of its checkpoints, exported weights (.safetensors) or a "
            "shipped model: qm9 (default) | qm9-qed (conditioned on QED: --target qed=...).",
        ),
    ] = None,
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
    temperature: Temperature = 1.0,
    valence_guard: ValenceGuard = True,
    motif_guard: MotifGuard = True,
    target: Target = None,
    guidance: Guidance = 1.0,
    scaffold: Scaffold = None,
    bare_scaffold: BareScaffold = True,
    target_mode: TargetMode = "bin",
    num_atoms: NumAtoms = 0,
    repair: Repair = True,
    reject: Reject = True,
    unique: Unique = False,
    novel: Novel = False,
    reject_rounds: RejectRounds = 5,
    reject_budget: RejectBudget = None,
    medchem: MedchemFilter = None,
    stereo: Stereo = "none",
    json_out: JsonReport = None,
    keep_invalid: Annotated[
        bool, typer.Option(help="Keep invalid samples in a .smi (status 'invalid').")
    ] = False,
    model_alone: Annotated[
        bool,
        typer.Option(
            "--model-alone",
            help="The model alone: no valence or motif guard, no repair, no rejection, invalid "
            "samples kept (status 'invalid' in a .smi): what the network itself draws.",
        ),
    ] = False,
    hydrogens: Annotated[bool, typer.Option(help="Explicit hydrogens in the .sdf.")] = False,
    conformers: Annotated[
        bool, typer.Option(help="3-D coordinates in the .sdf (ETKDG + MMFF; adds hydrogens).")
    ] = False,
    seed: Seed = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", hidden=True, help="The same as MODEL (an older name)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Molecules per denoiser batch.")] = 250,
    device: Device = "cpu",
    threads: Threads = 0,
    novelty: Annotated[
        bool, typer.Option(help="Report novelty (fetches the training data if it must).")
    ] = True,
    compile: Compile = False,
    cuda_graphs: CudaGraphs = False,
    progress: Progress = True,
    time_power: TimePower = 3.0,  # discdiff.tasks.molecules.GRID_POWER (lazy import)
) -> None:
    """Sample molecules, write them (and a PNG grid), print validity, novelty and filters."""
    from discdiff.tasks import runs

    if model_alone:  # one flag for the five that put the pipeline around the model
        valence_guard = motif_guard = repair = reject = False
        keep_invalid = True

    rules = mo.medchem_rules(medchem)
    if json_out is not None:
        check_output(json_out, (".json",), "--json")
    ms.positive(num, "-n")
    ms.positive(steps, "--steps")
    ms.positive(batch_size, "--batch-size")
    ms.positive(grid_size, "--grid-size")
    distinct_outputs({"--out": out, "--grid": grid, "--json": json_out})
    mo.check_outputs(out, grid, conformers, hydrogens)
    set_threads(threads)
    dev = _device(device)
    if model_path is not None and checkpoint is not None:
        raise ValueError("give the model once: MODEL or --checkpoint (its older name)")
    checkpoint = model_path or checkpoint
    task, model = runs.from_pretrained(checkpoint or "qm9", device=dev, expect="molecules")
    model = compiled(model, compile, cuda_graphs)
    cond = ms.conditioning(task, target, guidance, scaffold, num_atoms, bare_scaffold, target_mode)
    records, metrics, seconds = ms.sample_and_report(
        model, task, num, steps, sampler, seed, batch_size, novelty, time_power,
        ms.sampler_settings(sampler_opt, temperature), valence_guard, repair, progress,
        motif_guard=motif_guard, reject=reject, unique=unique, novel=novel,
        reject_rounds=reject_rounds, reject_budget=reject_budget, stereo=stereo, **cond,
    )  # fmt: skip
    typer.echo(f"sampled {num} molecules in {seconds:.1f} s ({steps} steps)")
    mo.write_outputs(out, grid, grid_size, records, keep_invalid, hydrogens, conformers, seed)
    mo.report_records(records, cond, task)
    if rules:
        mo.report_medchem(records, rules)
    mo.print_metrics(metrics, "samples")
    if json_out is not None:
        mo.write_report(json_out, metrics, str(checkpoint or "qm9"))


def _device(spec: str) -> str:
    from discdiff.tasks.runs import resolve_device

    return str(resolve_device(spec))


@app.command()
@train_command
def train(
    data: Annotated[str, typer.Option(help="qm9 | moses | a SMILES/CSV file.")] = "qm9",
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/molecules"),
    seed: Seed = 0,
    process: Annotated[str, typer.Option(help="marginal | uniform | absorbing (registered).")] = (
        "marginal"
    ),
    schedule: Annotated[
        str,
        typer.Option(help="loglinear | cosine (registered); options as NAME:VALUE or NAME:K=V."),
    ] = "loglinear",
    objective: ObjectiveOpt = None,
    edge_weight: Annotated[float, typer.Option(help="Loss weight of the bonds field.")] = 5.0,
    ce_weight: Annotated[
        float,
        typer.Option(
            help="Add this multiple of the x_0 cross-entropy to the ELBO (rare classes such as "
            "charged atoms are learnt only with it; 0 = the ELBO alone). Also with --init."
        ),
    ] = 0.0,
    aromatic: Annotated[
        bool,
        typer.Option(
            help="Aromatic bonds as a bond class of their own (DiGress's representation) "
            "instead of kekulized single/double bonds. With --init from a kekulized model, its "
            "aromatic class starts from its single and double bonds."
        ),
    ] = False,
    layers: Annotated[int, typer.Option(help="Graph transformer layers.")] = 4,
    node_dim: Annotated[int, typer.Option(help="Node width (feed-forward 2x).")] = 64,
    edge_dim: Annotated[int, typer.Option(help="Edge width (feed-forward 2x).")] = 32,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    max_nodes: Annotated[int, typer.Option(help="Largest graph (0 = from the data).")] = 0,
    max_train: Annotated[int, typer.Option(help="Use only the first N SMILES (0 = all).")] = 0,
    properties: Annotated[
        str,
        typer.Option(
            help="Condition on these properties (comma-separated) for sampling with --target "
            "and --guidance: qed, logp, mw, tpsa, sa (RDKit), or QM9's DFT values mu, alpha, "
            "homo, lumo, gap, r2, zpve, cv (eV for energies; QM9 molecules only)."
        ),
    ] = "",
    property_bins: Annotated[
        int, typer.Option(help="Equal-mass bins per property (the labels of the condition).")
    ] = 16,
    label_dropout: Annotated[
        float, typer.Option(help="Probability of training a label as 'no target' (CFG).")
    ] = 0.1,
    init: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune from these weights ('shipped' = the shipped QM9 model): their "
            "processes, priors and sizes are kept; new label tables start at zero."
        ),
    ] = None,
    *,
    flags: TrainFlags,
) -> None:
    """Train a graph denoiser; the run dir holds task.json, data, checkpoints and metrics."""
    from discdiff.tasks import runs
    from discdiff.tasks.molecules import MoleculeTask
    from discdiff.tasks.molecules.data import prepare_molecule_data

    ms.positive(layers, "--layers")
    if init is not None and flags.denoiser is not None:
        raise ValueError("--init continues the starting model's own denoiser; drop --denoiser")
    for value, flag in ((max_train, "--max-train"), (max_nodes, "--max-nodes")):
        if value < 0:
            raise ValueError(f"{flag} must be >= 0 (0 = all), got {value}")
    workers = set_threads(flags.threads)
    saved_train, start = None, None
    if check_new_run(out, flags.resume):
        task, model_entry, saved_train = runs.saved_settings(out, expect="molecules")
        c, m = task.config, ((model_entry.get("denoiser") or {}).get("config") or {})
        saved_data = c.dataset if c.dataset in ("qm9", "moses") else str(c.dataset)
        given_data = data if data in ("qm9", "moses") else str(Path(data).resolve())
        flags.refuse_changes(
            out,
            {
                "data": (given_data, saved_data),
                "process": (process, c.process),
                "schedule": (schedule, c.schedule),
                "edge_weight": (edge_weight, c.edge_weight),
                "ce_weight": (ce_weight, c.ce_weight),
                "objective": (objective, c.objective),
                "aromatic": (aromatic, not c.vocab.get("kekulize", True)),
                "max_nodes": (max_nodes, c.max_nodes if max_nodes else max_nodes),
                "properties": (properties.replace(" ", ""), ",".join(c.properties)),
                "label_dropout": (label_dropout, c.label_dropout),
                "layers": (layers, m.get("num_layers")),
                "node_dim": (node_dim, m.get("node_dim")),
                "edge_dim": (edge_dim, m.get("edge_dim")),
                "heads": (heads, m.get("num_heads")),
                "init": (init, None),
                "denoiser": (flags.denoiser, (model_entry.get("denoiser") or {}).get("type")),
            },
        )
        typer.echo(f"resuming {out} (task, model and data from the run dir)")
    else:
        names = [p.strip().lower() for p in properties.split(",") if p.strip()]
        start = mi.initial_model(init) if init is not None else None
        limit = start[0].config.max_nodes if start is not None else max_nodes or None
        with mo.encoding_bar(flags.progress) as bar:
            prep = prepare_molecule_data(
                data,
                max_train=max_train or None,
                max_nodes=limit,
                pad_to=limit if start is not None else None,
                workers=workers,
                progress=bar,
                aromatic=aromatic,
            )
        if start is not None:
            task = mi.init_task(start[0], prep, ce_weight, objective)
            start = (start[0], mi.init_denoiser(start[1], start[0], prep))
            sizes = mi.denoiser_sizes(start[1])
        else:
            task = MoleculeTask.from_graphs(
                prep.graphs,
                prep.vocab,
                max_nodes=prep.max_nodes,
                process=process,
                schedule=schedule,
                edge_weight=edge_weight,
                dataset=prep.dataset,
                ce_weight=ce_weight,
                objective=objective or "elbo",
            )
            sizes = flags.model_sizes(
                {
                    "num_layers": ("layers", layers),
                    "node_dim": ("node_dim", node_dim),
                    "edge_dim": ("edge_dim", edge_dim),
                    "num_heads": ("heads", heads),
                }
            )
            if flags.denoiser is None:  # the graph transformer's widths that follow from these
                sizes |= dict(_GLOBAL_SIZES, node_ff_dim=2 * node_dim, edge_ff_dim=2 * edge_dim)
        typer.echo(f"{prep.report()}; max_nodes {task.config.max_nodes}")
        task = task.with_data(prep, names, property_bins, label_dropout, say=typer.echo)
        torch.manual_seed(seed)
        model_entry = task.model_entry(task.new_model(flags.denoiser, **sizes))
    torch.manual_seed(seed)
    model = task.build_model(model_entry)
    if start is not None:
        from discdiff.tasks.runs import warm_start

        fresh = warm_start(model, start[1], new=("labels.",))
        typer.echo(f"initialised from {init}" + (f" ({len(fresh)} new tensors)" if fresh else ""))
    n_params = sum(p.numel() for p in model.parameters())
    typer.echo(f"denoiser: {n_params:,} parameters; process {task.config.process}")
    given = {**flags.given(), "seed": seed if saved_train is None else None}
    defaults = dict(task_train_defaults(MoleculeTask), seed=seed)
    n_train = len(task.dataset("train"))
    if saved_train is None:
        defaults["batch_size"] = min(given["batch_size"] or defaults["batch_size"], n_train)
        given["batch_size"] = None
    config = resolve_train_config(given, defaults, saved_train)
    result = runs.train(
        task, model, config, out, resume=flags.resume, device=flags.device,
        progress=flags.progress, tensorboard=False,
    )  # fmt: skip
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float))
    typer.echo(f"done at step {int(result.get('step', config.steps))}: {shown}")


@app.command("eval")
def evaluate(
    run_dir: ModelArg,
    num: Annotated[int, typer.Option("-n", "--num", help="Molecules to sample.")] = 1000,
    steps: Annotated[int, typer.Option(help="Reverse diffusion steps.")] = 50,
    sampler: Annotated[str, typer.Option(help=sampler_help())] = "ancestral",
    sampler_opt: SamplerOpt = None,
    temperature: Temperature = 1.0,
    valence_guard: ValenceGuard = True,
    motif_guard: MotifGuard = True,
    reject: Reject = False,
    reject_rounds: RejectRounds = 5,
    reject_budget: RejectBudget = None,
    medchem: MedchemFilter = None,
    stereo: Stereo = "none",
    json_out: JsonReport = None,
    target: Target = None,
    guidance: Guidance = 1.0,
    seed: Seed = 0,
    batch_size: Annotated[int, typer.Option(help="Molecules per denoiser batch.")] = 250,
    out: Annotated[Path | None, typer.Option(help="Also write the samples (.sdf/.smi/.csv).")] = (
        None
    ),
    ema: UseEma = None,
    raw: RawWeights = False,
    novelty: Annotated[
        bool, typer.Option(help="Report novelty (fetches the training data if it must).")
    ] = True,
    device: Device = "cpu",
    threads: Threads = 0,
    compile: Compile = False,
    cuda_graphs: CudaGraphs = False,
    fcd: Annotated[
        bool, typer.Option(help="Add FCD to the test split (pip install 'discdiff[fcd]').")
    ] = False,
    progress: Progress = True,
    time_power: TimePower = 3.0,  # discdiff.tasks.molecules.GRID_POWER (lazy import)
) -> None:
    """Sample from a run (its latest checkpoint, EMA weights) and print the metrics table
    (every first draw unless --reject: eval measures the model, sample rejects by default)."""
    if fcd:
        try:
            import fcd as _fcd  # noqa: F401  (optional; checked before any sampling)
        except ImportError:
            raise ValueError(
                "--fcd needs the optional package: pip install 'discdiff[fcd]'"
            ) from None
    from discdiff.tasks import runs

    rules = mo.medchem_rules(medchem)
    if json_out is not None:
        check_output(json_out, (".json",), "--json")
    ms.positive(num, "-n")
    ms.positive(steps, "--steps")
    ms.positive(batch_size, "--batch-size")
    distinct_outputs({"--out": out, "--json": json_out})
    if out is not None:
        mo.check_outputs(out, None, False, False)
    set_threads(threads)
    dev = _device(device)
    ema = False if raw else ema
    task, model = runs.from_pretrained(run_dir, device=dev, use_ema=ema, expect="molecules")
    model = compiled(model, compile, cuda_graphs)
    cond = ms.conditioning(task, target, guidance)
    records, metrics, _ = ms.sample_and_report(
        model, task, num, steps, sampler, seed, batch_size, novelty, time_power,
        ms.sampler_settings(sampler_opt, temperature), valence_guard, True, progress,
        motif_guard=motif_guard, reject=reject, reject_rounds=reject_rounds,
        reject_budget=reject_budget, stereo=stereo, **cond,
    )  # fmt: skip
    if fcd:
        from discdiff.chem.metrics import frechet_chemnet_distance
        from discdiff.tasks.molecules.data import reference_smiles

        ref = reference_smiles(task.config.dataset)
        metrics["fcd"] = frechet_chemnet_distance([r.smiles for r in records if r.valid], ref)
    if out is not None:
        mo.write_outputs(out, None, 0, records, False, False, False, seed)
    mo.report_records(records, cond, task)
    if rules:
        mo.report_medchem(records, rules)
    mo.print_metrics(metrics, run_dir.name or str(run_dir))
    if json_out is not None:
        mo.write_report(json_out, metrics, str(run_dir))


@app.command()
def export(
    run_dir: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="Weights file (*_model.safetensors).")],
    ema: UseEma = None,
    raw: RawWeights = False,
    dtype: StorageDtype = "float32",
) -> None:
    """Write a run's latest weights (EMA by default) as safetensors + config JSON beside."""
    from discdiff.tasks import runs

    check_output(out, (".safetensors",), "--out", streams=False)
    task, model = runs.from_pretrained(run_dir, use_ema=False if raw else ema, expect="molecules")
    weights, cfg = runs.export(task, model, out, dtype=dtype)
    typer.echo(f"wrote {weights} and {cfg}")
