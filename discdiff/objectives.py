"""Training objectives by name, like processes and samplers: what a task trains with, the bound
it is evaluated with, what it needs of the process, and how its model's output reads.

``OBJECTIVES`` holds the built-ins ("elbo", "score_entropy", "dfm", "sundae"); a newcomer's
registers with :func:`register_objective` in a file of its own (``--import FILE`` brings it to
every command) and is then a valid ``objective`` of the text task, with no edit elsewhere.

An objective's ``loss(process, denoiser, x0, mask, *, cond, generator, boundary, config)``
returns (B,) nats; ``process`` and ``x0`` are one process and a tensor, or dicts by field (a
molecule's atoms and bonds); ``config`` is the task's config, for the settings it reads
(``t_min``, ``unroll_steps``, ``field_weights``, ``ce_weight``, ...). ``bound`` is the same
call for the held-out bound (default: the continuous-time ELBO of the output read as x_0
logits). Every task with a continuous-time process trains with one: text, pixels, molecules.

Field weights and the x_0 cross-entropy are training devices: they apply when ``boundary`` is
False; with boundary terms the loss is the unweighted bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from discdiff.losses import continuous_elbo, dfm_loss, score_entropy_loss, sundae_loss
from discdiff.registry import Registry

__all__ = ["Objective", "OBJECTIVES", "register_objective", "objective", "field_weights"]

LossCall = Callable[..., Tensor]


def field_weights(config: Any, boundary: bool) -> Any:
    """The config's per-field loss weights in training (None with boundary terms: a bound is
    unweighted, and for a task of one field)."""
    return None if boundary else getattr(config, "field_weights", None)


def _elbo(process: Any, den: Any, x0: Tensor, mask: Tensor, *, cond: Any, generator: Any,
          boundary: bool, config: Any) -> Tensor:  # fmt: skip
    ce = 0.0 if boundary else float(getattr(config, "ce_weight", 0.0))
    return continuous_elbo(process, den, x0, mask, cond=cond, t_min=getattr(config, "t_min", 1e-3),
                           boundary=boundary, generator=generator, ce_weight=ce,
                           weights=field_weights(config, boundary))  # fmt: skip


@dataclass(frozen=True)
class Objective:
    """``loss`` (training; ``boundary=True`` for a full bound), ``bound`` (evaluation; None:
    the continuous ELBO), ``needs_scores`` (a mixing process whose scores are defined),
    ``process`` (the one process it assumes, or None), ``output`` ("x0" logits or "scores":
    a score model is converted for samplers), ``time_conditioned`` (whether its network is
    told t by default; None: unless the process is absorbing), ``note`` (said beside its
    held-out bound) and ``takes_ce_weight`` (whether it adds the config's ``ce_weight`` x_0
    cross-entropy in training; a task refuses a ce_weight an objective would not use)."""

    loss: LossCall
    bound: LossCall | None = None
    needs_scores: bool = False
    process: str | None = None
    output: str = "x0"
    time_conditioned: bool | None = None
    note: str = ""
    takes_ce_weight: bool = False

    def evaluate(self, *args: Any, **kwargs: Any) -> Tensor:
        """The held-out bound (with boundary terms)."""
        return (self.bound or _elbo)(*args, **{**kwargs, "boundary": True})

    def problem(self, process_name: str, processes: Any = None) -> str | None:
        """Why this objective cannot train with the process ``process_name`` (and, given, the
        built ``processes``: one or a dict by field), or None."""
        if self.process is not None and process_name != self.process:
            return f"needs process={self.process!r}, got process={process_name!r}"
        if self.needs_scores and processes is not None:
            from discdiff.processes.scores import has_scores

            procs = processes.values() if isinstance(processes, dict) else [processes]
            if not all(has_scores(p) for p in procs):
                return (
                    f"needs a mixing process (uniform, absorbing, marginal), got "
                    f"process={process_name!r}"
                )
        return None


#: name -> Objective
OBJECTIVES: Registry[Objective] = Registry("objective")


def register_objective(
    name: str, obj: Objective | None = None, *, replace: bool = False, doc: str | None = None
) -> Any:
    """Register an :class:`Objective` under ``name`` (the text task's ``objective``); ``doc``
    is its line in ``discdiff task list`` (default: its loss function's docstring)."""
    if obj is None:
        return lambda o: register_objective(name, o, replace=replace, doc=doc)
    if not isinstance(obj, Objective):
        raise TypeError(f"register_objective needs an Objective, got {obj!r}")
    OBJECTIVES.register(name, obj, replace=replace, doc=doc or obj.loss.__doc__ or name)
    return obj


def objective(name: str) -> Objective:
    """The objective registered as ``name`` (one-line error naming the known ones)."""
    if name not in OBJECTIVES:
        raise ValueError(
            f"objective={name!r} is not one of {', '.join(map(repr, OBJECTIVES.names()))}"
        )
    return OBJECTIVES.get(name)


def _score_entropy(process: Any, den: Any, x0: Tensor, mask: Tensor, *, cond: Any,
                   generator: Any, boundary: bool, config: Any) -> Tensor:  # fmt: skip
    return score_entropy_loss(process, den, x0, mask, cond=cond, boundary=boundary,
                              t_min=getattr(config, "t_min", 1e-3), generator=generator,
                              weights=field_weights(config, boundary))  # fmt: skip


def _dfm(process: Any, den: Any, x0: Tensor, mask: Tensor, *, cond: Any, generator: Any,
         boundary: bool, config: Any) -> Tensor:  # fmt: skip
    return dfm_loss(process, den, x0, mask, cond=cond, t_min=getattr(config, "t_min", 1e-3),
                    boundary=boundary, generator=generator,
                    weights=field_weights(config, boundary))  # fmt: skip


def _sundae(process: Any, den: Any, x0: Tensor, mask: Tensor, *, cond: Any, generator: Any,
            boundary: bool, config: Any) -> Tensor:  # fmt: skip
    return sundae_loss(process, den, x0, mask, unroll_steps=getattr(config, "unroll_steps", 2),
                       cond=cond, generator=generator,
                       weights=field_weights(config, boundary))  # fmt: skip


register_objective(
    "elbo",
    Objective(loss=_elbo, takes_ce_weight=True),
    doc="The continuous-time ELBO (MDLM / SEDD's bound): any process with rate_kl.",
)
register_objective(
    "score_entropy",
    Objective(loss=_score_entropy, bound=_score_entropy, needs_scores=True, output="scores",
              time_conditioned=True),
    doc="SEDD's diffusion-weighted score entropy: the output read as log concrete scores.",
)  # fmt: skip
register_objective(
    "dfm", Objective(loss=_dfm, needs_scores=True),
    doc="Discrete flow matching's generalized KL on the process's mixture path.",
)  # fmt: skip
register_objective(
    "sundae",
    Objective(loss=_sundae, process="uniform", time_conditioned=False,
              note="SUNDAE is not trained on a likelihood bound; this is the ELBO of its "
              "denoiser read as an x0 predictor (an upper bound on that model's NLL, usually "
              "loose)"),
    doc="SUNDAE's unrolled denoising loss (uniform process only).",
)  # fmt: skip
