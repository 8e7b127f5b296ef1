"""The Process interface: one categorical field's forward corruption and its exact posteriors.

Conventions (shared by every process):
- ``x0`` holds clean data ids in [0, num_classes); ``x_t`` holds noisy ids in [0, num_states)
  (absorbing processes have one more state than classes: the mask).
- Time is a float tensor in [0, 1], either a scalar or one value per example (shape (B,)),
  broadcast over the remaining dimensions of the field (B, ...).
- Wherever a distribution over x_0 is accepted, it is given as *logits* (..., num_classes):
  unnormalised log-probabilities, normalised inside with log_softmax. Passing integer ids
  instead means the exact one-hot distribution. Log-space keeps probabilities of 0 and values
  near t = 0 or 1 free of NaN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from discdiff.checks import check_values

__all__ = ["Process", "check_ids", "check_time", "expand_time"]


def check_ids(x: Tensor, high: int, name: str = "x0") -> Tensor:
    """Validate an integer id tensor with values in [0, high)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer ids, got {type(x).__name__}")
    if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer ids, got dtype {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension, got a scalar")
    if x.numel() and check_values():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} has id {bad} outside [0, {high})")
    return x.long()


def check_time(t: Tensor | float, batch: int, name: str = "t") -> Tensor:
    """Validate a time: a float scalar or (B,) tensor with values in [0, 1]; returns (B,) float."""
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t))
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    if t.numel() and check_values() and not bool(((t >= 0) & (t <= 1)).all()):
        bad = t[(t < 0) | (t > 1) | t.isnan()][0].item()
        raise ValueError(f"{name} must lie in [0, 1], got {bad}")
    return t


def expand_time(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example (B,) tensor to (B, 1, ..., 1) so it broadcasts against ``like``."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


class Process(ABC):
    """Forward corruption q(x_t | x_0) of one categorical field, with its exact posteriors."""

    #: number of clean-data categories K (the denoiser predicts logits over these)
    num_classes: int
    #: number of states of x_t (K, or K + 1 for absorbing processes)
    num_states: int
    #: T for a discrete-time process (times on the grid k / T), None for continuous time
    num_steps: int | None

    # ---- forward -------------------------------------------------------------------------
    @abstractmethod
    def marginal_log(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """log q(x_t | x_0), (..., S). ``x0``: ids (...) or logits over x_0 (..., K)."""

    def marginal(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """q(x_t | x_0) as probabilities (..., S)."""
        return self.marginal_log(x0, t).exp()

    @abstractmethod
    def sample_marginal(
        self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) for ids ``x0`` (...) -> ids (...), without any (..., S) tensor."""

    # ---- reverse -------------------------------------------------------------------------
    @abstractmethod
    def posterior_log(
        self, x_t: Tensor, x0: Tensor, s: Tensor | float, t: Tensor | float
    ) -> Tensor:
        """log p(x_s | x_t) for any s <= t, (..., S).

        With ids ``x0`` this is the exact posterior q(x_s | x_t, x_0). With logits over x_0 it is
        D3PM's x0-parameterised reverse step, p(x_s | x_t) proportional to
        sum_x0 q(x_t | x_s) q(x_s | x_0) softmax(logits)[x_0].
        """

    def posterior(self, x_t: Tensor, x0: Tensor, s: Tensor | float, t: Tensor | float) -> Tensor:
        """Probabilities of :meth:`posterior_log`, (..., S)."""
        out = self.posterior_log(x_t, x0, s, t)
        return out.exp_() if not out.requires_grad else out.exp()

    def sample_posterior(
        self,
        x_t: Tensor,
        x0: Tensor,
        s: Tensor | float,
        t: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw x_s ~ :meth:`posterior` for every position, ids (...): the samplers' reverse step.

        This default draws from the (..., S) posterior by Gumbel-max (one Gumbel per state and
        position); a process whose reverse step has structure overrides it with a cheaper draw of
        the same law (the conformance suite checks each against :meth:`posterior`).
        """
        from discdiff.categorical import sample_categorical

        return sample_categorical(self.posterior_log(x_t, x0, s, t), generator)

    # ---- prior ---------------------------------------------------------------------------
    @abstractmethod
    def prior_log_probs(self) -> Tensor:
        """log of the prior pi(x_1) that sampling starts from, (S,)."""

    @abstractmethod
    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw x_1 ~ pi for a field of the given shape -> ids."""

    @abstractmethod
    def kl_prior(self, x0: Tensor) -> Tensor:
        """KL(q(x_1 | x_0) || pi) per element, (...): the prior term of every ELBO."""

    # ---- shared checks -------------------------------------------------------------------
    def _x0_is_ids(self, x0: Tensor) -> bool:
        if not isinstance(x0, Tensor):
            raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
        if torch.is_floating_point(x0):
            if x0.dim() < 2 or x0.shape[-1] != self.num_classes:
                raise ValueError(
                    f"x0 logits must have shape (..., {self.num_classes}), got {tuple(x0.shape)}"
                )
            return False
        check_ids(x0, self.num_classes, "x0")
        return True


def has_uniform_noise(process: Process) -> bool:
    """Whether ``process`` corrupts towards the uniform distribution over its classes (no mask
    state): the capability SUNDAE's sampler and loss assume (Uniform, or any process alike)."""
    limit = getattr(process, "limit", None)
    if not isinstance(limit, Tensor) or getattr(process, "mask_id", None) is not None:
        return False
    K = process.num_classes
    return process.num_states == K and bool(torch.allclose(limit, torch.full_like(limit, 1 / K)))
