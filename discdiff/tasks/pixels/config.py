"""The pixel task's configuration (data set, quantisation, process, loss settings) and the
options and construction of its denoiser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from discdiff.datasets.images import IMAGE_DATASETS, check_levels
from discdiff.nn import TransformerConfig, TransformerDenoiser, denoiser_from_config
from discdiff.processes import PROCESSES, Process
from discdiff.processes import make_process as _registry_process
from discdiff.schedules import make_schedule
from discdiff.tasks.base import TaskConfig, process_problem, task_objective, usable_processes

__all__ = [
    "IMAGE_SHAPES",
    "PROCESS_KINDS",
    "PixelConfig",
    "make_process",
    "pixel_processes",
    "ModelOptions",
    "make_denoiser",
    "model_config",
    "build_model",
]


def pixel_processes() -> tuple[str, ...]:
    """Registered processes a pixel task can use: built from the number of levels alone
    (continuous ones on the log-linear schedule, discrete ones on the config's betas)."""
    return tuple(usable_processes(continuous_elbo=False))


_ORDER = ("absorbing", "uniform", "gaussian")
#: the forward processes this task offers (registered ones, built-in first)
PROCESS_KINDS = tuple(
    sorted(
        pixel_processes(), key=lambda n: (n not in _ORDER, _ORDER.index(n) if n in _ORDER else 0, n)
    )
)

#: (height, width, number of class labels) of each image data set
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 10),
    "fashion-mnist": (28, 28, 10),
    "digits": (8, 8, 10),
}


# ---------------------------------------------------------------------------------------------
# Configuration and the task object
# ---------------------------------------------------------------------------------------------


def _check_data(name: str) -> str:
    if name not in IMAGE_SHAPES:
        raise ValueError(
            f"unknown image data set {name!r}; expected one of {', '.join(IMAGE_DATASETS)}"
        )
    return name


@dataclass(frozen=True)
class PixelConfig(TaskConfig):
    """What defines a pixel task: data set, quantisation, forward process and its training loss.

    timesteps, beta_start, beta_end: the discretized-Gaussian chain's T and linear betas
    (D3PM's 1e-4..0.02 over 1000 steps; only used by ``process="gaussian"``; with few levels
    these betas barely move mass, so the prior term of the bound stays large: raise beta_end).
    label_dropout: probability of replacing a training label by the null label (CFG).
    hybrid_lambda: weight of the x_0 cross-entropy in the Gaussian model's hybrid loss.
    objective: a registered objective (:mod:`discdiff.objectives`) for a continuous-time
    process ("elbo", "score_entropy", "dfm", ...); a discrete-time one trains on D3PM's hybrid
    loss and takes "elbo" only.
    """

    data: str = "mnist"
    levels: int = 16
    process: str = "absorbing"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    label_dropout: float = 0.1
    hybrid_lambda: float = 0.01
    objective: str = "elbo"

    def __post_init__(self) -> None:
        _check_data(self.data)
        check_levels(self.levels)
        if process_problem(self.process, continuous_elbo=False) is not None:
            raise ValueError(
                f"process must be one of {', '.join(pixel_processes())}, got {self.process!r}"
            )
        if (
            isinstance(self.timesteps, bool)
            or not isinstance(self.timesteps, int)
            or self.timesteps < 1
        ):
            raise ValueError(f"timesteps must be a positive integer, got {self.timesteps!r}")
        if not 0.0 <= self.beta_start <= self.beta_end <= 1.0:
            raise ValueError(
                f"need 0 <= beta_start <= beta_end <= 1, got {self.beta_start}, {self.beta_end}"
            )
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if not self.hybrid_lambda >= 0.0:
            raise ValueError(f"hybrid_lambda must be >= 0, got {self.hybrid_lambda}")
        task_objective(self)  # registered, and fit for the process by name
        discrete = getattr(PROCESSES.get(self.process), "discrete_time", False)
        if discrete and self.objective != "elbo":
            raise ValueError(
                f"objective={self.objective!r} needs a continuous-time process; "
                f"process={self.process!r} is discrete-time (trained on D3PM's hybrid loss)"
            )

    @property
    def height(self) -> int:
        return IMAGE_SHAPES[self.data][0]

    @property
    def width(self) -> int:
        return IMAGE_SHAPES[self.data][1]

    @property
    def num_labels(self) -> int:
        return IMAGE_SHAPES[self.data][2]

    @property
    def num_pixels(self) -> int:
        return self.height * self.width


def make_process(config: PixelConfig) -> Process:
    """The forward process of ``config`` over ``levels`` intensity classes (the registry's):
    a discrete-time one on the config's T linear betas, the others on the log-linear schedule."""
    if getattr(PROCESSES.get(config.process), "discrete_time", False):
        sched: Any = {
            "type": "d3pm-linear",
            "num_steps": config.timesteps,
            "beta_start": config.beta_start,
            "beta_end": config.beta_end,
        }
    else:
        sched = make_schedule("loglinear")
    return _registry_process(config.process, config.levels, schedule=sched)


# ---------------------------------------------------------------------------------------------
# The denoiser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    """Size of the transformer denoiser (the same for every process)."""

    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cond_dim: int = 128
    patch: int = 1  # p x p pixels per transformer token (p = 2: ~4x cheaper, see TransformerConfig)


def make_denoiser(
    config: PixelConfig, options: ModelOptions | None = None, num_states: int | None = None
) -> TransformerDenoiser:
    """A transformer over the H x W grid (2-D rotary), with labels and a null class.
    ``num_states``: the process's state count (asked of the config's process when None; a
    task passes its own, made outside any meta-device context)."""
    if not isinstance(config, PixelConfig):
        raise TypeError(f"config must be a PixelConfig, got {type(config).__name__}")
    o = options or ModelOptions()
    if num_states is None:
        num_states = make_process(config).num_states  # asked, not assumed (a mask state or none)
    cfg = TransformerConfig(
        num_states=num_states,
        num_classes=config.levels,
        num_layers=o.num_layers,
        d_model=o.d_model,
        num_heads=o.num_heads,
        mlp_ratio=o.mlp_ratio,
        dropout=o.dropout,
        max_len=config.num_pixels,
        grid=(config.height, config.width),
        num_labels=config.num_labels,
        cond_dim=o.cond_dim,
        patch=o.patch,
    )
    return TransformerDenoiser(cfg)


def model_config(task: Any, model: nn.Module) -> dict[str, Any]:
    """The JSON the run dir keeps under "model" (the spine's model entry)."""
    return task.model_entry(model)


def build_model(saved: Mapping[str, Any]) -> nn.Module:
    """Rebuild the denoiser from a run's "model" entry (for :func:`discdiff.training.load_model`)."""
    if not isinstance(saved, Mapping) or "denoiser" not in saved or "task" not in saved:
        raise ValueError("this run dir was not written by the pixels task (no 'task'/'denoiser')")
    return denoiser_from_config(dict(saved["denoiser"]))
