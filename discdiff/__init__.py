"""discdiff: discrete (categorical) diffusion, exact to the last log-probability.

The public API, in the order things are used: schedules -> processes (forward corruption and
exact posteriors) -> losses (per-example nats) -> denoisers -> the training loop -> samplers.
Task-specific code lives in ``discdiff.tasks``, chemistry in ``discdiff.chem``, data in
``discdiff.datasets`` and the command line in ``discdiff.cli``.
"""

from typing import Any

from discdiff import startup as _startup  # noqa: F401  (first: Ctrl-C while the CLI starts)
from discdiff.catalogue import ModelCard, model_card, model_cards
from discdiff.constraints import Constraint
from discdiff.losses import (
    bits_per_token,
    continuous_elbo,
    dfm_loss,
    elbo_kernel,
    hybrid_loss,
    masked_ce_kernel,
    score_entropy_loss,
    sundae_loss,
    vlb_loss,
)
from discdiff.memory import reuse_freed_memory
from discdiff.nn import (
    DENOISERS,
    GraphTransformerConfig,
    GraphTransformerDenoiser,
    SelfConditioned,
    TransformerConfig,
    TransformerDenoiser,
    denoiser_config,
    denoiser_from_config,
    register_denoiser,
)
from discdiff.objectives import OBJECTIVES, Objective, register_objective
from discdiff.processes import (
    PROCESSES,
    Absorbing,
    Dense,
    Marginal,
    MixingProcess,
    Process,
    Uniform,
    make_process,
    process_config,
    process_from_config,
    register_process,
)
from discdiff.processes.gaussian import d3pm_gaussian_schedule, discretized_gaussian
from discdiff.registry import Registry, load_plugins
from discdiff.samplers import (
    SAMPLERS,
    AncestralSampler,
    CachingSampler,
    ConfidenceSampler,
    DFMEulerSampler,
    FirstHittingSampler,
    PlannedSampler,
    ReMDMSampler,
    Sampler,
    SampleResult,
    SundaeSampler,
    TauLeapingSampler,
    TweedieSampler,
    make_sampler,
    register_sampler,
    sample_block_diffusion,
    sample_blocks,
)
from discdiff.schedules import (
    SCHEDULES,
    ContinuousSchedule,
    CosineAlpha,
    CosineKappa,
    DiscreteSchedule,
    LogLinear,
    PolynomialKappa,
    Schedule,
    absorbing_schedule,
    d3pm_cosine,
    d3pm_linear,
    make_schedule,
    register_schedule,
)
from discdiff.training import EMA, TrainConfig, Trainer, load_model

#: the task layer (text, pixels, molecules and the spine) loads torch-heavy data libraries,
#: so its public names are imported on first use
_TASK_API = {
    "Task": ("discdiff.tasks.base", "Task"),
    "TaskConfig": ("discdiff.tasks.base", "TaskConfig"),
    "Evaluation": ("discdiff.tasks.base", "Evaluation"),
    "TASKS": ("discdiff.tasks.base", "TASKS"),
    "register_task": ("discdiff.tasks.base", "register_task"),
    "train_task": ("discdiff.tasks.runs", "train"),
    "load_run": ("discdiff.tasks.runs", "load_run"),
    "from_pretrained": ("discdiff.tasks.runs", "from_pretrained"),
    "export_model": ("discdiff.tasks.runs", "export"),
}


def __getattr__(name: str) -> Any:
    if name in _TASK_API:
        import importlib

        module, attr = _TASK_API[name]
        importlib.import_module("discdiff.tasks")  # registers the built-in tasks
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'discdiff' has no attribute {name!r}")


from discdiff.version import __version__  # noqa: E402

__all__ = [
    "Constraint",
    "__version__",
    "reuse_freed_memory",
    # registries and plug-ins
    "Registry",
    "load_plugins",
    "PROCESSES",
    "SCHEDULES",
    "SAMPLERS",
    "DENOISERS",
    "TASKS",
    "OBJECTIVES",
    "Objective",
    "register_objective",
    "register_process",
    "register_schedule",
    "register_sampler",
    "register_denoiser",
    "SelfConditioned",
    "register_task",
    "make_process",
    "make_schedule",
    "make_sampler",
    "process_config",
    "process_from_config",
    # the task spine
    "Task",
    "TaskConfig",
    "Evaluation",
    "train_task",
    "load_run",
    "from_pretrained",
    "export_model",
    # the shipped models
    "model_cards",
    "model_card",
    "ModelCard",
    # schedules
    "Schedule",
    "ContinuousSchedule",
    "DiscreteSchedule",
    "LogLinear",
    "CosineAlpha",
    "CosineKappa",
    "PolynomialKappa",
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
    "score_entropy_loss",
    "dfm_loss",
    "sundae_loss",
    "elbo_kernel",
    "masked_ce_kernel",
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
    "ReMDMSampler",
    "PlannedSampler",
    "sample_block_diffusion",
    "sample_blocks",
    "DFMEulerSampler",
    "TauLeapingSampler",
    "TweedieSampler",
]
