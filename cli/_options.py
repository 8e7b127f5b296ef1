"""Options every task's commands share, declared once (same flag, help and meaning everywhere)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["Device", "Seed", "SeedOrSaved", "Threads", "set_threads"]

_SEED_HELP = "Random seed: the same seed gives the same result on CPU."
SEED_MAX = 2**63 - 1  # torch's generators take a 64-bit seed; derived seeds stay below this
Seed = Annotated[int, typer.Option(help=_SEED_HELP, min=0, max=SEED_MAX)]
#: for commands that resume a run: unset means the run's own seed (0 for a new run)
SeedOrSaved = Annotated[int | None, typer.Option(help=_SEED_HELP, min=0, max=SEED_MAX)]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (auto = cuda if present).")]
Threads = Annotated[
    int,
    typer.Option(
        help="CPU threads for torch (0 = the cores not already busy, measured over 0.1 s; at "
        "least 1)."
    ),
]
Temperature = Annotated[
    float,
    typer.Option(help="Temperature of the x0 prediction (0 = argmax: the most likely class)."),
]
SamplerTemperature = Annotated[
    float | None,
    typer.Option(
        "--temperature",
        help="Temperature of the x0 prediction (0 = argmax; default: the sampler's own, 1.0, "
        "sundae 0.6: SUNDAE samples cold).",
    ),
]
ModelArg = Annotated[
    Path,
    typer.Argument(
        metavar="MODEL",
        help="A run directory, one of its checkpoints, exported weights (.safetensors) or a "
        "shipped model's name (`discdiff models list`).",
    ),
]
RawWeights = Annotated[
    bool, typer.Option("--raw", hidden=True, help="The same as --no-ema (an older name).")
]
UseEma = Annotated[
    bool | None,
    typer.Option("--ema/--no-ema", help="Use EMA weights (default: if saved).", show_default=False),
]
StorageDtype = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="float32 | bfloat16 | float16: the stored weights' type (half the bytes, each weight "
        "rounded; loading casts back).",
    ),
]


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 0.1) -> float:
    """Cores other processes keep busy: /proc/stat over ``window`` seconds (the load average
    lags a minute behind a job that just ended); the 1-minute load where that is missing."""
    import os
    import time

    first = _cpu_times()
    if first is not None:
        time.sleep(window)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            share = (second[0] - first[0]) / (second[1] - first[1])
            return share * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; the CPU count elsewhere)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def safe_threads() -> int:
    """Threads that do not oversubscribe the machine: the usable cores minus the ones other
    processes keep busy (:func:`busy_cores`), at least 1. A 2-thread process beside a busy one
    can run 30x slower than with 1 thread; an idle machine gets every core."""
    cores = usable_cores()
    return max(1, min(cores, round(cores - busy_cores())))


def set_threads(threads: int) -> int:
    """Apply ``--threads`` (0 = :func:`safe_threads`); a negative count is an error, and more
    threads than usable cores are cut to the cores, with a notice (oversubscribed, torch's
    threads wait on each other: 1,000 threads on 2 cores ran about 300x slower)."""
    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    import torch

    cores = usable_cores()
    if threads > cores:
        typer.echo(
            f"notice: --threads {threads} is more than the {cores} usable cores; using {cores}",
            err=True,
        )
        threads = cores
    n = threads or safe_threads()
    torch.set_num_threads(n)
    import os

    # the tokenizers library's Rust pool (BPE training and encoding) sizes itself from this when
    # first used; without it `--threads 1` still ran on every core
    os.environ.setdefault("RAYON_NUM_THREADS", str(n))
    return n


# ---- training options every task shares (None = the task's default, or the resumed run's) --
Steps = Annotated[int | None, typer.Option(help="Optimizer steps in total (default: the task's).")]
BatchSize = Annotated[
    int | None, typer.Option(help="Examples per optimizer step (default: the task's).")
]
Lr = Annotated[float | None, typer.Option(help="Peak learning rate (default: the task's).")]
Warmup = Annotated[
    int | None,
    typer.Option("--warmup", help="Linear warm-up steps (default: the task's)."),
]
WarmupOld = Annotated[
    int | None, typer.Option("--warmup-steps", hidden=True, help="Deprecated: use --warmup.")
]
Ema = Annotated[
    float | None,
    typer.Option("--ema", help="EMA decay of the weights (0 = off; default: the task's)."),
]
EmaOld = Annotated[
    float | None, typer.Option("--ema-decay", hidden=True, help="Deprecated: use --ema.")
]
EvalEvery = Annotated[
    int | None, typer.Option(help="Held-out bound every N steps (0 = off; default: the task's).")
]
EvalBatches = Annotated[int | None, typer.Option(help="Held-out batches per evaluation.")]
CkptEvery = Annotated[int | None, typer.Option(help="Checkpoint every N steps.")]
LogEvery = Annotated[int | None, typer.Option(help="Log a metrics row every N steps.")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
SkipNonfinite = Annotated[
    int | None,
    typer.Option(
        help="Skip up to N batches with a non-finite loss (default 0: stop, naming the step)."
    ),
]
TimeBudget = Annotated[
    float | None,
    typer.Option(
        help="Seconds the training loop may take (resumed sessions included): the run times its "
        "own steps and fixes --steps (then a cap) so that warm-up and cosine decay end in time.",
    ),
]
WeightDecay = Annotated[float | None, typer.Option(help="AdamW weight decay (default 0).")]
GradClip = Annotated[float | None, typer.Option(help="Gradient norm clip (0 = off; default 1.0).")]
Precision = Annotated[str | None, typer.Option(help="auto | fp32 | bf16 (default auto).")]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile", help="torch.compile the model (the first call compiles; its time is printed)."
    ),
]

CudaGraphs = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs",
        help="CUDA only: compile the denoiser with CUDA graphs (torch.compile's "
        "reduce-overhead mode), so a step's small kernels are replayed as one graph.",
    ),
]


def compiled(model: Any, on: bool, cuda_graphs: bool = False) -> Any:
    """``model`` under ``torch.compile`` when ``on`` (dynamic shapes) or ``cuda_graphs`` (CUDA
    graphs: ``mode="reduce-overhead"``, a graph recorded per shape and replayed; each call's
    outputs are copied out, since the next replay reuses their memory and samplers may keep a
    prediction across steps). The first call's time (compile plus one forward) is printed
    once. Same parameters, config and modes."""
    if not (on or cuda_graphs):
        return model
    import time

    import torch

    if cuda_graphs:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if device.type != "cuda":
            raise ValueError(
                f"--cuda-graphs needs the model on a CUDA device (--device cuda), got {device}"
            )

    def copied(out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return out.clone()
        if isinstance(out, dict):
            return {k: copied(v) for k, v in out.items()}
        if isinstance(out, tuple | list):
            return type(out)(copied(v) for v in out)
        return out

    class Compiled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.config = getattr(model, "config", None)
            if cuda_graphs:
                self._fn = torch.compile(model, mode="reduce-overhead", dynamic=False)
            else:
                self._fn = torch.compile(model, dynamic=True)
            self._first = True

        def _call(self, *args: Any, **kwargs: Any) -> Any:
            if not cuda_graphs:
                return self._fn(*args, **kwargs)
            torch.compiler.cudagraph_mark_step_begin()
            return copied(self._fn(*args, **kwargs))

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if not self._first:
                return self._call(*args, **kwargs)
            start = time.perf_counter()
            out = self._call(*args, **kwargs)
            self._first = False
            typer.echo(f"torch.compile: first call {time.perf_counter() - start:.1f} s", err=True)
            return out

    return Compiled()


GradCheckpointing = Annotated[
    bool,
    typer.Option(
        "--grad-checkpointing",
        help="Recompute each transformer block in the backward pass: activation memory of one "
        "block instead of all, for about a third more compute.",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue the run in --out: its settings, unless a flag overrides one."
    ),
]


def deprecated(new: object, old: object, new_flag: str, old_flag: str) -> object:
    """The value of ``new_flag``, or of its deprecated alias ``old_flag`` (with a notice)."""
    if old is None:
        return new
    typer.echo(f"warning: {old_flag} is deprecated; use {new_flag}", err=True)
    return old if new is None else new


SamplerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sampler-opt",
        help="A setting of the chosen sampler as NAME=VALUE (repeatable; VALUE read as JSON, "
        "else as text), e.g. --sampler-opt strategy=loop --sampler-opt eta=0.02 for remdm.",
    ),
]


def sampler_options(
    pairs: list[str] | None, taken: tuple[str, ...] = ("steps",), **renamed: str
) -> dict[str, Any]:
    """``--sampler-opt NAME=VALUE`` pairs as keyword settings (JSON values where they parse).
    ``taken``: settings the command passes from flags of their own (``steps`` -> --steps;
    ``renamed``: setting -> a flag of another name): naming one here is one line, not a clash
    of two values."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, eq, value = pair.partition("=")
        key = name.strip().replace("-", "_")
        if not eq or not key:
            raise ValueError(f"--sampler-opt {pair!r}: expected NAME=VALUE")
        if key in taken or key in renamed:
            flag = renamed.get(key) or "--" + key.replace("_", "-")
            raise ValueError(f"--sampler-opt {pair!r}: use {flag} instead")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        if isinstance(out[key], float) and not math.isfinite(out[key]):
            raise ValueError(f"--sampler-opt {pair!r}: not a finite number")
    return out


def sampler_help(extra: str = "") -> str:
    """Help of --sampler: the registered names (plug-ins included)."""
    from discdiff.tasks.base import sampler_names

    return f"A registered sampler: {' | '.join(sampler_names())}.{extra}"


DocSep = Annotated[
    str | None,
    typer.Option(
        "--doc-sep",
        help="Where a text file's documents end: 'blank' (blank lines) or a literal string "
        "(e.g. '<|endoftext|>'); default: a file is one document (a single file's only "
        "end-of-document mark then lands in the test split).",
    ),
]
TokenizerOpt = Annotated[
    str,
    typer.Option(
        "--tokenizer",
        help="char | bpe | a published tokenizer.json (GPT-2's from the Hugging Face hub, or a "
        "folder holding one): scores per token of its vocabulary.",
    ),
]
LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="'folders': CORPUS is a folder with one subfolder of *.txt per class (its name the "
        "label); each class is split 90/5/5 on its own and the model is told the class.",
    ),
]
ObjectiveOpt = Annotated[
    str | None,
    typer.Option(
        "--objective",
        help="A registered objective (default elbo): elbo | sundae (uniform only) | "
        "score_entropy (SEDD: the output read as log concrete scores; its loss is an ELBO too) "
        "| dfm (discrete flow matching's generalized KL; with --schedule kappa-poly or "
        "kappa-cosine) | your own (register_objective in a file given to --import). "
        "Continuous-time processes only.",
    ),
]
DenoiserType = Annotated[
    str | None,
    typer.Option(
        "--denoiser",
        metavar="TYPE",
        help="The denoiser to train: a registered name or module:Class (with --import FILE); "
        "default: the task's own. The task gives it its state counts and lengths; of the size "
        "flags it takes only those given.",
    ),
]
Imports = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        help="A Python file or module to import first (it registers its task, sampler, "
        "process, objective or denoiser).",
    ),
]


def import_plugins(paths: list[str] | None) -> None:
    """Import ``--import`` files (``x.py``, once per file) and modules, so that what they
    register is found by name like the built-in things."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    for item in paths or []:
        path = Path(item)
        if path.suffix == ".py":
            if not path.is_file():
                raise FileNotFoundError(f"--import {item!r}: no such file")
            loaded = sys.modules.get(path.stem)
            if (
                loaded is not None
                and Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve()
            ):
                continue
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            try:
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            except (Exception, SystemExit) as err:
                del sys.modules[path.stem]
                raise ValueError(_import_failure(item, err)) from err
        else:
            try:
                importlib.import_module(item)
            except ImportError as err:
                raise ValueError(f"--import {item!r}: {err}") from err
            except (Exception, SystemExit) as err:
                raise ValueError(_import_failure(item, err)) from err


def _import_failure(item: str, err: BaseException) -> str:
    """One line for an ``--import`` whose code failed: where (its last frame in the user's
    file) and what."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    mine = [f for f in frames if "discdiff" not in f.filename.replace("\\", "/").split("/")]
    where = f" at {mine[-1].filename}:{mine[-1].lineno}" if mine else ""
    if isinstance(err, SystemExit):
        return f"--import {item!r} called sys.exit({err.code!r}) while being imported{where}"
    return f"--import {item!r} failed{where}: {type(err).__name__}: {err}"


def with_options(
    fn: Any,
    added: list[tuple[str, Any, Any]],
    call: Any,
    *,
    drop: tuple[str, ...] = (),
) -> Any:
    """``fn`` as a Typer command with the options ``added`` ((name, Annotated type, default))
    after its own (less ``drop``); ``call(kwargs)`` runs it. Typer reads the signature and
    annotations made here, so options shared by many commands are declared once."""
    import inspect
    import typing

    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    kind = inspect.Parameter.KEYWORD_ONLY
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation), kind=kind)
        for p in sig.parameters.values()
        if p.name not in drop
    ]
    params += [inspect.Parameter(n, kind, default=d, annotation=a) for n, a, d in added]

    def command(**kwargs: Any) -> Any:
        return call(kwargs)

    command.__name__, command.__qualname__ = fn.__name__, fn.__qualname__
    command.__doc__, command.__module__ = fn.__doc__, fn.__module__
    command.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
