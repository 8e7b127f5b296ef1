"""What `discdiff molecules sample` and `eval` share: the conditioning flags checked against the
model, the sampler's settings, and the sampling run with its rejection and metrics."""

from __future__ import annotations

import time

import torch
import typer

from discdiff.cli import _molecule_output as mo
from discdiff.cli._options import sampler_options


def positive(value: int, name: str) -> int:
    """``value`` when >= 1, else one line naming the flag."""
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def conditioning(
    task,
    target: list[str] | None,
    guidance: float,
    scaffold: str | None = None,
    atoms: int = 0,
    bare: bool = True,
    target_mode: str = "bin",
) -> dict:
    """The sampling keywords of --target / --guidance / --scaffold / --num-atoms, checked
    against the model before any sampling (one line each)."""
    from discdiff.chem.properties import parse_targets

    goals = parse_targets(target or [], task.config.properties)
    if target_mode not in ("bin", "interpolate"):
        raise ValueError(f"--target-mode {target_mode!r} is not one of bin, interpolate")
    if guidance != 1.0 and not goals:
        raise ValueError("--guidance needs --target (a property-conditioned model)")
    if guidance < 0:
        raise ValueError(f"--guidance must be >= 0, got {guidance}")
    for name, value in goals.items():
        typer.echo(f"target {task.describe_target(name, value)}")
    out = {"target": goals or None, "guidance": guidance, "num_atoms": atoms or None}
    if atoms < 0:
        raise ValueError(f"--num-atoms must be >= 0, got {atoms}")
    if scaffold is not None and not scaffold.strip():
        raise ValueError("--scaffold '': give the scaffold's SMILES (or leave the flag out)")
    graph = task.scaffold_graph(scaffold) if scaffold else None
    grow = graph is not None and not bare
    task.node_counts(1, None, 0 if graph is None else int(graph[0].shape[0]) + grow, atoms or None)
    extra = {"grow": True} if grow else {}
    if goals and target_mode == "interpolate":
        extra["interpolate"] = True
    return out | {"scaffold": graph, "scaffold_smiles": scaffold} | extra


def sampler_settings(sampler_opt: list[str] | None, temperature: float) -> dict:
    """--sampler-opt settings with --temperature among them (given once, one line if twice)."""
    flags = ("steps", "valence_guard", "motif_guard", "guidance")
    options = sampler_options(sampler_opt, taken=flags, grid_power="--time-power")
    if temperature != 1.0:
        if "temperature" in options:
            raise ValueError("give the temperature once: --temperature or --sampler-opt")
        if temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {temperature}")
        options["temperature"] = temperature
    return options


def sample_and_report(
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
    repair: bool = True,
    progress: bool = True,
    scaffold_smiles: str | None = None,
    motif_guard: bool = True,
    reject: bool = False,
    unique: bool = False,
    novel: bool = False,
    reject_rounds: int = 5,
    reject_budget: int | None = None,
    stereo: str = "none",
    **conditioning,
) -> tuple[list, dict, float]:
    """Sample ``n`` graphs, decode them, compute metrics; returns (records, metrics, s)."""
    from discdiff.chem.export import decode_samples
    from discdiff.chem.rejection import Rejection, RejectionStats
    from discdiff.tasks.molecules.data import novelty_sets

    if (unique or novel) and not reject:
        raise ValueError("--unique and --novel work through --reject, which is off")
    positive(reject_rounds, "--reject-rounds")
    from discdiff.chem.stereo import STEREO_MODES

    if stereo not in STEREO_MODES:
        raise ValueError(f"--stereo {stereo!r} is not one of {', '.join(STEREO_MODES)}")
    if reject_budget is not None and reject_budget < 0:
        raise ValueError(f"--reject-budget must be >= 0 (0 = no bound), got {reject_budget}")
    budget = n if reject_budget is None else (reject_budget or None)
    task.check_sample_count(n)  # before the bar
    sets = None
    if novel:  # before any sampling: the known molecules are a check
        sets = novelty_sets(task.config.dataset)
        if sets[2] is not None:
            raise ValueError(f"--novel needs the data set's molecules: {sets[2]}")
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    sampler_obj = task.make_sampler(
        sampler, steps=steps, grid_power=time_power, valence_guard=valence_guard,
        guidance=conditioning.get("guidance", 1.0), motif_guard=motif_guard, **(options or {}),
    )  # fmt: skip
    stats = RejectionStats()
    start = time.perf_counter()
    with mo.bar(n, progress, "sampling") as bar:
        graphs = task.sample_graphs(
            model, n, steps=steps, sampler=sampler_obj, batch_size=batch_size,
            grid_power=time_power, generator=gen, progress=bar.update,
            reject=Rejection(
                rounds=reject_rounds, unique=unique, known=sets[1] if sets else None,
                max_draws=budget,
            ) if reject else None,
            stats=stats, **conditioning,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    if reject:
        typer.echo(stats.summary())
        if stats.kept_flawed and not stats.stopped_by_budget:
            typer.echo(f"(more --reject-rounds than {reject_rounds} would draw those again)")
    raw = task.to_mols(graphs)
    records = decode_samples(raw, repair=repair)
    records = _stereo(records, stereo, seed)
    train = whole = None
    if novelty:
        train, whole, why = sets or novelty_sets(task.config.dataset)
        if why is not None:
            typer.echo(f"novelty left out: {why}")
    metrics = _gauged_metrics(task, graphs, raw, records, train, whole, stats if reject else None)
    metrics["sampling_seconds"] = seconds
    metrics["molecules_per_second"] = n / seconds
    return records, metrics, seconds


def _gauged_metrics(task, graphs, raw, records, train, whole, stats) -> dict:
    """The task's metrics with the gauge (distances to the training data, printed, with its
    warnings) and, with rejection, what it did (``stats``): what --json writes."""
    import dataclasses

    from discdiff.chem.metrics import gauge_properties, gauge_reference, quality_gauge
    from discdiff.chem.rejection import LOW_PASS_RATE

    reference = gauge_reference(train) if train is not None else None
    metrics = task.metrics(graphs, train, whole, mols=raw, reference=reference)
    if reference is not None:
        metrics.update(gauge_properties((r.mol for r in records if r.valid), reference))
    gauge = quality_gauge(metrics)  # the pass rate is in the rejection summary
    for line in gauge:
        typer.echo(line)
    metrics["warnings"] = [ln for ln in gauge if ln.startswith("warning")]
    if stats is not None:
        metrics["rejection"] = {**dataclasses.asdict(stats), "pass_rate": stats.pass_rate}
        if stats.pass_rate < LOW_PASS_RATE:
            metrics["warnings"].append(f"only {stats.pass_rate:.1%} of first draws passed")
    return metrics


def _stereo(records: list, mode: str, seed: int) -> list:
    """The records with stereo as --stereo asks, and a line saying what it did."""
    from discdiff.chem.stereo import assign_stereo, unassigned_stereo

    valid = [r for r in records if r.valid]
    open_ = sum(unassigned_stereo(r.mol) > 0 for r in valid)
    out = assign_stereo(records, mode, seed)
    what = {
        "none": "none written (--stereo random|enumerate assigns them)",
        "random": "one stereoisomer drawn for each",
        "enumerate": f"every stereoisomer written: {len(out)} records",
    }[mode]
    typer.echo(
        f"stereo: {open_} of {len(valid)} valid samples have unassigned stereocentres or "
        f"double bonds; {what}"
    )
    return out
