"""Constraints on the sample: a rule a task supplies and a sampler applies to its x_0 draw.

A sampler of the ancestral family draws x_s from the posterior q(x_s | x_t, x_0) averaged over
the denoiser's x_0 prediction. Given a :class:`Constraint`, it instead draws x_0 explicitly,
through the constraint (``Constraint.draw``: the prediction restricted to what the rule
allows), at the steps the constraint asks for: the last, whose x_0 is the sample (the default),
or every one; then x_s ~ q(x_s | x_t, x_0) as before. At the other steps the sampler is its
plain self. The task knows the rule (molecules: valence and motifs, in ``discdiff.chem``); the
sampler knows nothing of it, and a sampler that cannot apply one does not take the option
(``make_sampler`` then refuses it in one line).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from discdiff.registry import import_object, import_path

__all__ = ["Constraint", "CONSTRAINT_STEPS", "as_constraint"]

#: which reverse steps draw x_0 through the constraint: the last one (the sample), or every one
CONSTRAINT_STEPS = ("last", "all")


class Constraint(ABC):
    """A rule on the sampled fields, applied to an x_0 draw.

    ``steps``: "last" (the draw that becomes the sample) or "all" (every step's x_0 draw, which
    moves the intermediate states off the model's own path). Subclasses implement :meth:`draw`
    and give their constructor's settings back in :meth:`settings` (for ``config``).
    """

    def __init__(self, steps: str = "last") -> None:
        if steps not in CONSTRAINT_STEPS:
            raise ValueError(f"constraint steps must be one of {CONSTRAINT_STEPS}, got {steps!r}")
        self.steps = steps

    def applies(self, last: bool) -> bool:
        """Whether the step (``last``: the one that makes the sample) draws x_0 through it."""
        return last or self.steps == "all"

    def check_processes(self, processes: Mapping[str, Any]) -> None:
        """Raise TypeError if the rule cannot apply to these fields (default: any)."""
        return None

    @abstractmethod
    def draw(
        self,
        logp: Mapping[str, Tensor],
        fixed: Mapping[str, tuple[Tensor, Tensor]],
        generator: torch.Generator | None,
        last: bool,
    ) -> dict[str, Tensor]:
        """x_0 for every field (ids, the field's shape) from the x_0 logits ``logp`` (B, ..., K:
        log-probabilities up to a constant per position) under the rule; ``fixed`` holds
        (values, mask) of given positions, which keep their values."""

    def settings(self) -> dict[str, Any]:
        """The constructor's JSON settings (``steps`` and the subclass's own)."""
        return {"steps": self.steps}

    def config(self) -> dict[str, Any]:
        """``{"type": import path, **settings}``: what :func:`as_constraint` reads back."""
        return {"type": import_path(type(self)), **self.settings()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({inner})"


def as_constraint(value: Constraint | Mapping[str, Any] | None) -> Constraint | None:
    """A constraint from itself, its :meth:`Constraint.config` or None."""
    if value is None or isinstance(value, Constraint):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("type"), str):
        cls = import_object(value["type"])
        if isinstance(cls, type) and issubclass(cls, Constraint):
            return cls(**{k: v for k, v in value.items() if k != "type"})
    raise TypeError(f"constraint must be a Constraint or its config, got {value!r}")
