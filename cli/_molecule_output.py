"""What `discdiff molecules sample` and `eval` print and write: the metrics table, the counts
a chemist wants (repairs, filters, scaffold hits, the property against a target), the output
files and the progress bar."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import typer

from discdiff.cli._spine import check_output
from discdiff.files import is_stream, output_path

OUT_FORMATS = (".sdf", ".smi", ".csv")


class _NoBar:
    def update(self, k: int) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int, on: bool, what: str):
    """A tqdm bar on stderr (or nothing) whose ``update(k)`` the sampler calls per batch."""
    if not on:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="mol", leave=False)


def print_metrics(metrics: dict, title: str) -> None:
    from discdiff.chem.metrics import format_metrics_table

    cols = [
        "num_samples",
        "validity",
        "validity_repaired",
        "validity_connected",
        "uniqueness",
        "novelty",
        "novelty_whole",
        "fcd",
        "sampling_seconds",
    ]
    cols = [c for c in cols if c in metrics]
    typer.echo(format_metrics_table({title: metrics}, cols))
    if "novelty" in metrics:
        typer.echo("novelty: against the training split; novelty_whole: against every split")


def report_records(records: list, conditioning: dict, task) -> None:
    """Counts a chemist wants: repairs, filters, the scaffold, the property against a target."""
    from discdiff.chem.filters import count_flags

    valid = [r for r in records if r.valid]
    repaired = sum(r.repaired for r in valid)
    dropped = sum(r.fragments_dropped for r in valid)
    typer.echo(
        f"{len(valid)} of {len(records)} valid ({repaired} repaired, {dropped} with fragments "
        "dropped; the files say which)"
    )
    counts = count_flags(r.flags for r in valid)  # computed once per record (files too)
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("any", "checked"))
    typer.echo(f"filters (of {len(valid)} valid): {shown}; flagged by any: {counts['any']}")
    scaffold = conditioning.get("scaffold_smiles")
    if scaffold:
        from rdkit import Chem

        from discdiff.chem.graph import contains_scaffold

        query = Chem.MolFromSmiles(scaffold)
        hits = sum(r.mol.HasSubstructMatch(query) for r in valid)
        kekule = sum(contains_scaffold(r.mol, query) for r in valid) - hits
        more = f" ({kekule} more in Kekulé form only)" if kekule else ""
        typer.echo(
            f"scaffold {scaffold}: in {hits} of {len(valid)} valid samples (RDKit match){more}"
        )
    target = conditioning.get("target") or {}
    if target:
        from discdiff.chem.properties import mol_properties

        for name, goal in target.items():
            vals = [mol_properties(r.mol, [name])[0] for r in valid]
            vals = [v for v in vals if v == v]
            mean = sum(vals) / len(vals) if vals else float("nan")
            known = "" if len(vals) == len(valid) else f" of {len(valid)} valid with a value"
            typer.echo(
                f"{name}: target {goal:g}, samples' mean {mean:.4f} (n = {len(vals)}{known})"
            )


def medchem_rules(spec: str | None) -> dict | None:
    """The --filter rules, parsed before any sampling (one line for a bad name)."""
    if not spec:
        return None
    from discdiff.chem.medchem import parse_medchem

    return parse_medchem(spec)


def write_report(path, metrics: dict, title: str) -> None:
    """--json: the metrics, the gauge's distances and warnings and what rejection did."""
    import json
    import math

    from discdiff.files import write_output

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    doc = {"model": title, **{k: clean(v) for k, v in metrics.items()}}
    write_output(path, (json.dumps(doc, indent=2) + "\n").encode())


def report_medchem(records: list, rules: dict) -> None:
    """The --filter counts over the valid samples."""
    from discdiff.chem.medchem import medchem_counts

    valid = [r.mol for r in records if r.valid]
    counts = medchem_counts(valid, rules)
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("any", "checked"))
    typer.echo(f"medchem filters (of {len(valid)} valid): {shown}; flagged by any: {counts['any']}")


def write_outputs(out, grid, grid_size, records, keep_invalid, hydrogens, conformers, seed):
    from discdiff.chem.export import write_grid, write_molecules

    fmt = stream_format(conformers, hydrogens) if is_stream(out) else out.suffix.lower()
    with output_path(out, fmt) as tmp:
        written = write_molecules(
            tmp, records, keep_invalid=keep_invalid, hydrogens=hydrogens,
            conformers=conformers, seed=seed,
        )  # fmt: skip
    typer.echo(f"wrote {written} molecules to {out}")
    invalid = sum(not r.valid for r in records)
    if invalid and fmt == ".smi" and not keep_invalid:
        typer.echo(
            f"left {invalid} invalid sample(s) out of {out} (--keep-invalid keeps them, flagged)"
        )
    elif invalid and fmt == ".sdf":
        typer.echo(
            f"left {invalid} invalid sample(s) out of {out}: an .sdf holds molecules only "
            "(a .smi with --keep-invalid, or a .csv, lists them)"
        )
    if grid is not None:
        with output_path(grid, ".png") as tmp:
            shown = write_grid(tmp, records, grid_size)
        typer.echo(f"wrote a grid of the first {shown} molecules to {grid}")


def stream_format(conformers: bool, hydrogens: bool) -> str:
    """The format of ``--out -`` (standard output) and special files: SMILES lines, or SDF
    where only SDF can carry what was asked (hydrogens, 3-D coordinates)."""
    return ".sdf" if conformers or hydrogens else ".smi"


def check_outputs(out, grid, conformers, hydrogens) -> None:
    if is_stream(out):
        check_output(out, OUT_FORMATS, "--out")
        if grid is not None:
            check_output(grid, (".png",), "--grid")
        return
    if out.suffix.lower() not in OUT_FORMATS:
        raise ValueError(f"--out {str(out)!r}: unknown extension; expected one of {OUT_FORMATS}")
    if (conformers or hydrogens) and out.suffix.lower() != ".sdf":
        raise ValueError("--hydrogens and --conformers need an .sdf --out")
    check_output(out, OUT_FORMATS, "--out")
    if grid is not None:
        if grid.suffix.lower() != ".png":
            raise ValueError(f"--grid {str(grid)!r}: expected a .png file")
        check_output(grid, (".png",), "--grid")


@contextlib.contextmanager
def encoding_bar(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar for encoding the training SMILES (checked one by one: minutes for MOSES)."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total < 20_000:  # seconds at most: no bar
            return
        if bar is None:
            bar = tqdm(total=total, desc="encoding molecules", unit="mol", leave=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
