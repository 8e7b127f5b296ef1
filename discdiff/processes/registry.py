"""Forward processes by name: ``make_process("absorbing", K, schedule="loglinear")``.

A process factory is ``factory(num_classes, schedule=..., **options) -> Process`` whose options
are JSON values; :func:`make_process` remembers the name and options so that a run can save
the process (:func:`process_config`) and rebuild it (:func:`process_from_config`). A factory
whose process cannot be built from ``num_classes`` alone gives an ``example_options(K)``
attribute, which the conformance suite uses.
"""

from __future__ import annotations

from typing import Any

import torch

from discdiff.processes.absorbing import Absorbing
from discdiff.processes.base import Process
from discdiff.processes.gaussian import d3pm_gaussian_schedule, discretized_gaussian
from discdiff.processes.marginal import Marginal
from discdiff.processes.uniform import Uniform
from discdiff.registry import Registry
from discdiff.schedules import (
    Schedule,
    make_schedule,
    register_schedule,
    schedule_config,
)

__all__ = [
    "PROCESSES",
    "register_process",
    "make_process",
    "process_config",
    "process_from_config",
]

#: name -> factory(num_classes, schedule=..., **options) -> Process
PROCESSES: Registry[Any] = Registry("process")


def register_process(name: str, factory: Any = None, *, replace: bool = False) -> Any:
    """Register a process factory ``factory(num_classes, schedule=..., **options)``.

    A Process subclass whose constructor is ``(num_classes, schedule, ...)`` is a factory as it
    is. Registered processes are found by every task config, the CLI and the conformance tests.
    Usable as a decorator when ``factory`` is omitted.
    """
    return PROCESSES.register(name, factory, replace=replace)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def make_process(
    name: str,
    num_classes: int,
    schedule: str | dict[str, Any] | Schedule | None = None,
    **options: Any,
) -> Process:
    """The process registered as ``name`` over ``num_classes`` data classes.

    schedule: a Schedule, a registered schedule name, a schedule config dict, or None for the
    factory's default. ``options`` go to the factory (e.g. ``prior=`` for "marginal").
    """
    factory = PROCESSES.get(name)
    kwargs = dict(options)
    sched = None
    if schedule is not None:
        sched = make_schedule(schedule)
        kwargs["schedule"] = sched
    try:
        proc = factory(num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(f"process {name!r} cannot be built with {sorted(kwargs)}: {err}") from err
    if not isinstance(proc, Process):
        raise TypeError(f"process factory {name!r} returned {type(proc).__name__}, not a Process")
    config: dict[str, Any] = {"type": name, "num_classes": num_classes}
    if sched is not None:
        try:
            config["schedule"] = schedule_config(sched)
        except ValueError:
            config = None  # type: ignore[assignment]
    if config is not None:
        config.update({k: _jsonable(v) for k, v in options.items()})
    proc._config = config  # type: ignore[attr-defined]
    return proc


def process_config(process: Process) -> dict[str, Any]:
    """``{"type", "num_classes", "schedule", **options}`` of a process made by :func:`make_process`."""
    cfg = getattr(process, "_config", None)
    if cfg is None:
        raise ValueError(
            f"{process!r} was not built through the process registry (make_process) with a "
            "registered schedule, so it cannot be saved by name"
        )
    return dict(cfg)


def process_from_config(config: dict[str, Any]) -> Process:
    """Inverse of :func:`process_config`."""
    if not isinstance(config, dict) or "type" not in config or "num_classes" not in config:
        raise ValueError(f"a process config needs 'type' and 'num_classes', got {config!r}")
    options = {k: v for k, v in config.items() if k not in ("type", "num_classes")}
    return make_process(config["type"], config["num_classes"], **options)


# ---- the built-in processes ------------------------------------------------------------------
def _uniform(num_classes: int, schedule: Schedule | None = None, **kw: Any) -> Process:
    """Uniform noise over the classes (D3PM uniform, multinomial diffusion)."""
    return Uniform(num_classes, schedule or make_schedule("loglinear"), **kw)


def _absorbing(num_classes: int, schedule: Schedule | None = None, **kw: Any) -> Process:
    """Tokens jump to a mask state (D3PM absorbing, MDLM)."""
    return Absorbing(num_classes, schedule or make_schedule("loglinear"), **kw)


def _marginal(
    num_classes: int, schedule: Schedule | None = None, *, prior: Any = None, **kw: Any
) -> Process:
    """Tokens jump to a draw from the data's class frequencies ``prior`` (DiGress).

    ``prior``: K non-negative numbers (counts or probabilities; normalised here).
    """
    if prior is None:
        raise ValueError("process 'marginal' needs prior= (the class frequencies of the data)")
    p = torch.as_tensor(prior, dtype=torch.float64).flatten()
    if p.numel() != num_classes:
        raise ValueError(f"prior has {p.numel()} classes, expected {num_classes}")
    if bool((p >= 0).all()) and float(p.sum()) > 0:
        p = p / p.sum()  # counts or frequencies
    return Marginal(p, schedule or make_schedule("loglinear"), **kw)


_marginal.example_options = lambda k: {"prior": [float(i + 1) for i in range(k)]}  # type: ignore[attr-defined]


def _gaussian(
    num_classes: int, schedule: Schedule | None = None, *, dtype: str = "auto"
) -> Process:
    """D3PM's discretized Gaussian (ordinal) transition on a discrete schedule of betas."""
    if dtype not in ("auto", "float64", "float32"):
        raise ValueError(f"dtype must be 'auto', 'float64' or 'float32', got {dtype!r}")
    # float64 keeps the T cumulative (K, K) products exact; above 64 levels float32 halves the
    # memory (2 T K^2 x 8 bytes = 1 GB at K = 256, T = 1000).
    if dtype == "auto":
        dtype = "float64" if num_classes <= 64 else "float32"
    sched = schedule if schedule is not None else d3pm_gaussian_schedule()
    return discretized_gaussian(num_classes, sched, dtype=getattr(torch, dtype))


_gaussian.discrete_time = True  # type: ignore[attr-defined]  # takes a DiscreteSchedule of betas
_gaussian.example_options = lambda k: {
    "schedule": {"type": "d3pm-gaussian", "num_steps": 50, "beta_start": 0.1, "beta_end": 1.0}
}  # type: ignore[attr-defined]

register_schedule("d3pm-gaussian", d3pm_gaussian_schedule)
register_process("uniform", _uniform)
register_process("absorbing", _absorbing)
register_process("marginal", _marginal)
register_process("gaussian", _gaussian)
