"""Self-conditioning (Chen et al. 2022, "Analog bits"): the denoiser also sees its own previous
estimate of x_0.

:class:`SelfConditioned` wraps any denoiser ``(x_t, t, cond) -> logits`` whose model accepts
``cond["self_cond"]`` (B, ..., K) probabilities (a :class:`TransformerDenoiser` with
``self_conditioning=True``). It behaves by context:

- training (the wrapped module in train mode, gradients on): for a random half of the rows
  (``prob``) a first pass without self-conditioning is run without gradient and its softmax is
  fed to the second pass; the other rows get zeros. The loss sees the second pass.
- evaluation (eval mode, outside sampling): two passes at the same input, the second
  conditioned on the first: a deterministic function of x_t, so every bound stays a bound.
- sampling (between :meth:`begin_sampling` and :meth:`end_sampling`, which every sampler
  calls): the estimate of the previous denoiser call (the previous step) is fed in, zeros at
  the first call; a call on other rows than the last one's (the caching sampler's subsets)
  falls back to the two passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SelfConditioned"]


class SelfConditioned(nn.Module):
    """``denoiser`` with self-conditioning in training, evaluation and sampling."""

    def __init__(self, denoiser: nn.Module, prob: float = 0.5) -> None:
        super().__init__()
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
            raise ValueError(f"prob must be a number in [0, 1], got {prob!r}")
        self.denoiser = denoiser
        self.prob = float(prob)
        self._sampling = False
        self._prev: Tensor | None = None
        self.time_conditioned = getattr(denoiser, "time_conditioned", False)

    def begin_sampling(self) -> None:
        """Start a sampling run: the first call gets no previous estimate."""
        self._sampling, self._prev = True, None

    def end_sampling(self) -> None:
        self._sampling, self._prev = False, None

    def _call(self, x_t: Tensor, t: Tensor, cond: Any, self_cond: Tensor) -> Tensor:
        return self.denoiser(x_t, t, {**(cond or {}), "self_cond": self_cond})

    def forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Tensor:
        model = getattr(self.denoiser, "model", self.denoiser)
        K = model.config.num_classes
        zeros = torch.zeros(*x_t.shape, K, device=x_t.device)
        if self.training and torch.is_grad_enabled():
            use = torch.rand(x_t.shape[0], device=x_t.device) < self.prob  # (B,)
            sc = zeros
            if bool(use.any()):
                with torch.no_grad():
                    first = self._call(x_t, t, cond, zeros).float().softmax(-1)
                sc = torch.where(use.reshape(-1, *([1] * (x_t.dim()))), first, zeros)
            return self._call(x_t, t, cond, sc)
        if self._sampling and self._prev is not None and self._prev.shape[:-1] == x_t.shape:
            out = self._call(x_t, t, cond, self._prev)
        elif self._sampling and self._prev is None:
            out = self._call(x_t, t, cond, zeros)
        else:
            first = self._call(x_t, t, cond, zeros).float().softmax(-1)
            out = self._call(x_t, t, cond, first)
        if self._sampling:
            self._prev = out.detach().float().softmax(-1)
        return out
