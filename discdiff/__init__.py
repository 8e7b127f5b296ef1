"""discdiff: discrete (categorical) diffusion, exact to the last log-probability.

The public API, in the order things are used: schedules -> processes (forward corruption and
exact posteriors) -> losses (per-example nats) -> denoisers -> the training loop -> samplers.
Task-specific code lives in ``discdiff.tasks``, chemistry in ``discdiff.chem``, data in
``discdiff.datasets`` and the command line in ``discdiff.cli``.
"""

from discdiff.losses import (
    bits_per_token,
    continuous_elbo,
    hybrid_loss,
    sundae_loss,
    vlb_loss,
)
from discdiff.nn import (
    GraphTransformerConfig,
    GraphTransformerDenoiser,
    TransformerConfig,
    TransformerDenoiser,
    denoiser_config,
    denoiser_from_config,
)
from discdiff.processes import Absorbing, Dense, Marginal, MixingProcess, Process, Uniform
from discdiff.processes.gaussian import d3pm_gaussian_schedule, discretized_gaussian
from discdiff.samplers import (
    AncestralSampler,
    CachingSampler,
    ConfidenceSampler,
    FirstHittingSampler,
    Sampler,
    SampleResult,
    SundaeSampler,
)
from discdiff.schedules import (
    CosineAlpha,
    DiscreteSchedule,
    LogLinear,
    Schedule,
    absorbing_schedule,
    d3pm_cosine,
    d3pm_linear,
)
from discdiff.training import EMA, TrainConfig, Trainer, load_model

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
    "discretized_gaussian",
    "d3pm_gaussian_schedule",
    # losses
    "vlb_loss",
    "hybrid_loss",
    "continuous_elbo",
    "sundae_loss",
    "bits_per_token",
    # denoisers
    "TransformerConfig",
    "TransformerDenoiser",
    "GraphTransformerConfig",
    "GraphTransformerDenoiser",
    "denoiser_config",
    "denoiser_from_config",
    # training
    "TrainConfig",
    "Trainer",
    "EMA",
    "load_model",
    # samplers
    "Sampler",
    "SampleResult",
    "AncestralSampler",
    "CachingSampler",
    "FirstHittingSampler",
    "ConfidenceSampler",
    "SundaeSampler",
]
