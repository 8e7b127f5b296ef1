"""What every task's `train` command does around the spine, written once: resolve settings
(flags > resumed run > task defaults, with a notice for each override), train, report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

__all__ = [
    "TrainFlags",
    "train_command",
    "task_train_defaults",
    "SPINE_DEFAULTS",
    "resolve_train_config",
    "check_new_run",
    "check_output",
    "output_suffix",
    "distinct_outputs",
    "train_flags",
]

#: shared training flag (the command's parameter name) -> TrainConfig field
_FLAG_FIELDS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup": "warmup_steps",
    "ema": "ema_decay",
    "weight_decay": "weight_decay",
    "grad_clip": "grad_clip",
    "precision": "precision",
    "eval_every": "eval_every",
    "eval_batches": "eval_batches",
    "ckpt_every": "ckpt_every",
    "log_every": "log_every",
    "skip_nonfinite": "skip_nonfinite",
    "compile": "compile",
    "cuda_graphs": "cuda_graphs",
    "time_budget": "time_budget",
}

#: the step cap of a run with --time-budget and no --steps: the budget alone decides
BUDGET_CAP = 10**9


def _shared_train_options() -> list[tuple[str, Any, Any]]:
    """(parameter name, Annotated option, default) of the flags every ``train`` command has:
    declared here once, so they are spelled, helped and defaulted alike in every task."""
    from discdiff.cli import _options as o

    return [
        ("resume", o.Resume, False),
        ("denoiser", o.DenoiserType, None),
        ("steps", o.Steps, None),
        ("batch_size", o.BatchSize, None),
        ("lr", o.Lr, None),
        ("warmup", o.Warmup, None),
        ("warmup_steps", o.WarmupOld, None),
        ("ema", o.Ema, None),
        ("ema_decay", o.EmaOld, None),
        ("weight_decay", o.WeightDecay, None),
        ("grad_clip", o.GradClip, None),
        ("precision", o.Precision, None),
        ("eval_every", o.EvalEvery, None),
        ("eval_batches", o.EvalBatches, None),
        ("ckpt_every", o.CkptEvery, None),
        ("log_every", o.LogEvery, None),
        ("skip_nonfinite", o.SkipNonfinite, None),
        ("time_budget", o.TimeBudget, None),
        ("compile", o.Compile, False),
        ("cuda_graphs", o.CudaGraphs, False),
        ("device", o.Device, "auto"),
        ("threads", o.Threads, 0),
        ("progress", o.Progress, True),
    ]


class TrainFlags:
    """The shared training flags a ``train`` command was given (attributes by parameter name):
    :meth:`given` turns them into TrainConfig fields (None = not given). ``explicit``: the
    command's parameters (its own and the shared ones) given on the command line."""

    def __init__(self, values: Mapping[str, Any], explicit: frozenset[str] = frozenset()) -> None:
        from discdiff.cli._options import deprecated

        self.__dict__.update(values)
        self.explicit = explicit
        self.arguments: frozenset[str] = frozenset()  # set by train_command: positional names
        self.warmup = deprecated(self.warmup, self.warmup_steps, "--warmup", "--warmup-steps")
        self.ema = deprecated(self.ema, self.ema_decay, "--ema", "--ema-decay")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    def given(self) -> dict[str, Any]:
        """The flags as TrainConfig fields (None: not given; a switch left off is not given)."""
        return train_flags(vars(self))

    def model_sizes(self, sizes: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
        """The sizes for ``Task.new_model`` (size name -> (parameter, value)): all of them for
        the task's own denoiser; for another (``--denoiser``) only those given on the command
        line, since the flags' defaults are the task's own denoiser's widths."""
        if self.denoiser is None:
            return {key: value for key, (_, value) in sizes.items()}
        return {key: value for key, (param, value) in sizes.items() if param in self.explicit}

    def refuse_changes(self, run: Path, pairs: Mapping[str, tuple[Any, Any]]) -> None:
        """On --resume: refuse each task or model setting given on the command line that
        differs from the run's own. ``pairs``: parameter name -> (value given, run's value).
        A run's task and model are fixed (its data, process, sizes...); training flags may
        change, with a notice (:func:`resolve_train_config`)."""
        for name, (given, saved) in pairs.items():
            if name in self.explicit and not _same(given, saved):
                flag = name.upper() if name in self.arguments else "--" + name.replace("_", "-")
                raise ValueError(
                    f"--resume: {flag} {given!r} differs from the run's {saved!r} in "
                    f"{str(run)!r}; a run's task and model are fixed (train a new --out)"
                )


def _same(given: Any, saved: Any) -> bool:
    if isinstance(given, float | int) and isinstance(saved, float | int):
        return float(given) == float(saved)
    return given == saved


def train_command(fn: Any) -> Any:
    """A task's ``train`` command with the shared training flags added to its own options:
    ``fn`` declares what is its own and takes ``flags: TrainFlags``; the command line shows
    both, the shared ones last, the same in every task."""
    import inspect

    from discdiff.cli._options import with_options

    shared = _shared_train_options()
    names = {name for name, _, _ in shared}
    clash = sorted(names & set(inspect.signature(fn).parameters))
    if clash:
        raise TypeError(f"{fn.__name__} declares the shared training flag(s) {clash} itself")

    def call(kwargs: dict[str, Any]) -> Any:
        ctx = kwargs.pop("_ctx", None)
        flags = TrainFlags({n: kwargs.pop(n) for n in names}, given_on_command_line(ctx))
        if ctx is not None:
            flags.arguments = frozenset(
                p.name
                for p in ctx.command.params
                if getattr(p, "param_type_name", "") == "argument"
            )
        return fn(**kwargs, flags=flags)

    return with_options(fn, [*shared, ("_ctx", typer.Context, None)], call, drop=("flags",))


def given_on_command_line(ctx: Any) -> frozenset[str]:
    """The parameters of the running command that the user gave (command line or
    environment), not left at their defaults."""
    if ctx is None:
        return frozenset()
    out = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            out.add(name)
    return frozenset(out)


def train_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    """The shared training flags among a command's parameters (its ``locals()``), as
    TrainConfig fields; None means not given."""
    out = {field: values[flag] for flag, field in _FLAG_FIELDS.items() if flag in values}
    for switch in ("compile", "cuda_graphs"):  # a switch left off is "not given" (resume keeps it)
        if out.get(switch) is False:
            out[switch] = None
    return out


#: what a task without training defaults of its own trains with (Task.train_defaults adds to it)
SPINE_DEFAULTS: dict[str, Any] = {"steps": 1000, "batch_size": 32, "lr": 1e-3, "warmup_steps": 100}


def task_train_defaults(task_cls: Any) -> dict[str, Any]:
    """A task class's training defaults: :data:`SPINE_DEFAULTS` under its ``train_defaults``
    (the same whether the task is trained by its own command or by ``discdiff task train``)."""
    return {**SPINE_DEFAULTS, **getattr(task_cls, "train_defaults", {})}


#: what a run dir holds (task.json, the training settings, checkpoints, logs, the lock) and
#: what a prepared data dir holds: no command's --out may name one of these
RUN_FILES = frozenset(
    {"task.json", "config.json", "metrics.csv", "loss_curve.png", ".lock", "tokenizer",
     "checkpoints", "tensorboard"}
)  # fmt: skip
DATA_FILES = frozenset({"meta.json", "tokenizer", "train.bin", "val.bin", "test.bin"})


def folder_kind(folder: Path) -> str | None:
    """``"run dir"``, ``"prepared data dir"`` or None: what ``folder`` holds, by its files."""
    if (folder / "task.json").is_file() or (
        (folder / "config.json").is_file() and (folder / "checkpoints").is_dir()
    ):
        return "run dir"
    if (folder / "meta.json").is_file() and any(
        (folder / f"{split}.bin").is_file() for split in ("train", "val", "test")
    ):
        return "prepared data dir"
    return None


def _task_files(run: Path) -> set[str]:
    """The task's own files at a run dir's top (the molecule task's graphs, ...), as the
    checkpoints' manifests list them."""
    import json

    names: set[str] = set()
    for manifest in run.glob("checkpoints/*/manifest.json"):
        try:
            files = json.loads(manifest.read_text()).get("run_files") or {}
        except (OSError, ValueError, AttributeError):
            continue
        names.update(Path(name).parts[0] for name in files if isinstance(name, str) and name)
    return names


def refuse_owned(path: Path, flag: str, own: str | None = None) -> None:
    """Refuse an output that would write over a file of a run dir (its checkpoints, settings,
    logs) or of a prepared data dir (its token files, tokenizer, meta), in one line naming the
    folder. ``own``: the kind of folder this command itself makes (``text prepare`` remakes a
    prepared data dir), whose files it may replace."""
    import os

    target = Path(os.path.realpath(path))
    for folder in target.parents:
        kind = folder_kind(folder)
        if kind is None or kind == own:
            continue
        first = target.relative_to(folder).parts[0]
        owned = RUN_FILES | _task_files(folder) if kind == "run dir" else DATA_FILES
        if first in owned:
            raise ValueError(
                f"{flag} {str(path)!r} would write over {first!r} of the {kind} {str(folder)!r}; "
                "name a file outside it"
            )


def check_run_folder(out: Path) -> None:
    """Refuse a run's --out that is not a run's folder to make: the current directory, a
    prepared data dir, or a folder inside a run or prepared data dir."""
    if str(out) in ("", "."):
        raise ValueError("--out: name a folder for the run (not the current directory)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder for the run")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
    kind = folder_kind(out)
    if kind is not None and kind != "run dir":
        raise ValueError(f"--out {str(out)!r} is a {kind}; name another folder for the run")
    for folder in out.resolve().parents:
        outer = folder_kind(folder)
        if outer is not None:
            raise ValueError(
                f"--out {str(out)!r} lies inside the {outer} {str(folder)!r}; name a folder "
                "outside it"
            )


def check_new_run(out: Path, resume: bool) -> bool:
    """Whether ``out`` holds a run to resume; refuses to overwrite one without --resume, and
    a folder that is not a run's (:func:`check_run_folder`)."""
    from discdiff.tasks.runs import latest_checkpoint

    check_run_folder(out)
    has_run = latest_checkpoint(out) is not None
    if has_run and not resume:
        raise ValueError(f"run dir {str(out)!r} already has checkpoints; pass --resume")
    if resume and not has_run:
        typer.echo(f"no run in {out} yet; starting a new one", err=True)
    return has_run and resume


def resolve_train_config(
    given: Mapping[str, Any],
    defaults: Mapping[str, Any],
    saved: Mapping[str, Any] | None = None,
) -> Any:
    """A TrainConfig from flags the user gave (not None), else the resumed run's values, else
    the task's defaults. On resume each flag that changes a saved value is announced."""
    from discdiff.tasks.runs import TrainConfig

    if saved is not None and "data_on_device" not in saved:
        saved = {**saved, "data_on_device": False}  # runs saved before it used the DataLoader
    if saved:
        try:  # the run's own settings must parse as saved, before any flag replaces one
            TrainConfig.from_dict({**defaults, **saved})
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"the run's saved training settings do not parse ({err}); config.json was "
                "edited or damaged: restore it, or start a new run"
            ) from None
    base = {**defaults, **(saved or {})}
    explicit = {k: v for k, v in given.items() if v is not None}
    budget = explicit.get("time_budget")
    if budget is not None and not (0 < budget < float("inf")):
        raise ValueError(f"--time-budget must be a finite number of seconds > 0, got {budget}")
    if saved:
        for key, value in explicit.items():
            if key in saved and saved[key] != value:
                typer.echo(
                    f"note: --resume with {key} {saved[key]!r} -> {value!r} (flag)", err=True
                )
    if (
        budget is not None
        and "steps" not in explicit
        and budget != (saved or {}).get("time_budget")
    ):
        explicit["steps"] = BUDGET_CAP  # a new budget: the steps are planned, not the default
    settings = {**base, **explicit}
    for off in ("ema_decay", "grad_clip"):  # 0 on the command line means off
        if settings.get(off) == 0:
            settings[off] = None
    if "warmup_steps" not in explicit and not saved and "steps" in settings:
        # the default warm-up, at most a tenth of the steps
        settings["warmup_steps"] = min(
            int(settings.get("warmup_steps", 1000)), max(int(settings["steps"]) // 10, 0)
        )
    return TrainConfig.from_dict(settings)


def check_output(
    path: Path,
    suffixes: tuple[str, ...] | None,
    flag: str,
    streams: bool = True,
    own: str | None = None,
) -> Path:
    """Refuse a bad output path before any work: a wrong suffix, a folder, a parent that is a
    file or not writable (the file itself is later written atomically), a file of a run or
    prepared data dir (:func:`refuse_owned`; ``own``: the kind this command makes). ``-``
    (standard output) and special files (/dev/stdout, a pipe, /dev/null) are written through,
    in the first of ``suffixes``' formats; ``streams=False`` refuses them (several files)."""
    from discdiff.files import check_writable, claim_stdout, is_stream

    if is_stream(path):
        if not streams:
            raise ValueError(f"{flag} {str(path)!r}: this output is several files; name a file")
        check_writable(path, flag)
        claim_stdout(path)
        return path
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {str(path)!r}: expected one of {', '.join(suffixes)}")
    refuse_owned(path, flag, own)
    return check_writable(path, flag)


def distinct_outputs(outputs: Mapping[str, Path | None]) -> None:
    """Refuse two outputs of one command (flag -> path) on standard output, or on one regular
    file: the second would interleave with the first, or replace it."""
    import os

    from discdiff.files import STDOUT, is_stream

    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        if str(path) == STDOUT or os.path.realpath(path) == os.path.realpath("/dev/stdout"):
            key, what = "stdout", "standard output"
        elif is_stream(path):
            continue  # /dev/null twice is harmless
        else:
            key, what = os.path.realpath(path), "file"
        if key in seen:
            raise ValueError(
                f"{flag} {str(path)!r} and {seen[key]} name the same {what}: give each output "
                "its own"
            )
        seen[key] = flag


def output_suffix(path: Path, suffixes: tuple[str, ...]) -> str:
    """The format an output is written in: its suffix, or the first of ``suffixes`` for ``-``
    and special files."""
    from discdiff.files import is_stream

    return suffixes[0] if is_stream(path) else path.suffix.lower()
