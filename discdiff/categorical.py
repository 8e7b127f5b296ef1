"""Categorical sampling utilities: temperature, nucleus (top-p) filtering, Gumbel-max draws,
one-hot codes.

Every draw goes through an explicit ``torch.Generator``. When the generator lives on another
device than the tensors (a CPU generator with CUDA logits), the noise is drawn on the
generator's device and moved, so one CPU seed gives the same numbers whatever the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "one_hot",
    "uniform",
    "gumbel",
    "apply_temperature",
    "top_p_filter",
    "process_logits",
    "sample_categorical",
    "sample_inverse_cdf",
]


def one_hot(ids: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot (..., num_classes) of ids by one comparison; an id outside [0, num_classes)
    gives a zero row. Unlike ``F.one_hot`` it reads no values: that one checks the range with
    two host reads on a CPU (none on CUDA), so hot paths built on it could not be held to "no
    host read per step" by the CPU suite."""
    classes = torch.arange(num_classes, device=ids.device)
    hot = ids.unsqueeze(-1) == classes
    return hot if dtype == torch.bool else hot.to(dtype)


def uniform(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniforms in [0, 1) of ``shape``, drawn on the generator's device and moved to ``device``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen_dev = generator.device if generator is not None else device
    u = torch.rand(tuple(shape), generator=generator, device=gen_dev, dtype=dtype)
    return u.to(device)


def gumbel(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard Gumbel noise -log(-log U) of ``shape``; finite (U is kept inside (0, 1))."""
    u = uniform(shape, generator, device, dtype)
    tiny = torch.finfo(dtype).tiny
    return -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - torch.finfo(dtype).eps)))


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / temperature (..., K); temperature 0 keeps only the argmax (greedy)."""
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if temperature == 1.0:
        return logits
    if temperature == 0.0:
        best = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -torch.inf).scatter_(-1, best, 0.0)
    return logits / temperature


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of classes whose
    probability adds up to at least ``top_p`` (always the most likely one), set the rest to -inf.

    logits (..., K) -> (..., K).
    """
    if not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., K)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    before = probs.cumsum(-1) - probs  # probability mass strictly before each class
    drop_sorted = before >= top_p  # the first class always has before = 0 and stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -torch.inf)


def process_logits(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Temperature then top-p, as log-probabilities (log_softmax), (..., K)."""
    out = apply_temperature(logits.float(), temperature)
    out = top_p_filter(out, top_p)
    return torch.log_softmax(out, dim=-1)


def sample_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ids from softmax(logits) (..., K) -> (...) by Gumbel-max.

    Consumes exactly one Gumbel per class and position, so two calls with the same shape use the
    generator identically (samplers rely on this to reproduce each other's draws).
    """
    g = gumbel(logits.shape, generator, logits.device, torch.float32)
    return (logits.float() + g).argmax(-1)


def sample_inverse_cdf(
    logits: Tensor, generator: torch.Generator | None = None, u: Tensor | None = None
) -> Tensor:
    """Draw ids from softmax(logits) (..., K) -> (...) with one uniform per position.

    The inverse of the float32 CDF: a class of probability 0 is never drawn (its interval is
    empty), every other class is drawn with its probability up to the CDF's rounding (about
    1e-7 absolute). Cheaper than :func:`sample_categorical` where a position has many classes
    (two uniforms' worth of noise instead of K Gumbels); the draws differ, the law is the same.
    ``u`` (...): the uniforms in [0, 1), float32, when the caller drew them (all of a run's at
    once, say); otherwise drawn here from ``generator``.
    """
    cdf = torch.softmax(logits.float(), dim=-1).cumsum_(-1)  # (..., K)
    if u is None:
        u = uniform(cdf.shape[:-1], generator, cdf.device)
    u = u.unsqueeze(-1).mul(cdf[..., -1:])
    return torch.searchsorted(cdf, u, right=True).squeeze_(-1).clamp_max_(cdf.shape[-1] - 1)
