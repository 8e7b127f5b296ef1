"""discdiff: discrete (categorical) diffusion, exact to the last log-probability."""

from discdiff.processes import Absorbing, Dense, Marginal, MixingProcess, Process, Uniform
from discdiff.schedules import (
    CosineAlpha,
    DiscreteSchedule,
    LogLinear,
    Schedule,
    absorbing_schedule,
    d3pm_cosine,
    d3pm_linear,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # schedules
    "Schedule",
    "DiscreteSchedule",
    "LogLinear",
    "CosineAlpha",
    "d3pm_cosine",
    "d3pm_linear",
    "absorbing_schedule",
    # processes
    "Process",
    "MixingProcess",
    "Uniform",
    "Absorbing",
    "Marginal",
    "Dense",
]
