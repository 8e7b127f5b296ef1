"""Value checks that read tensors (and so wait for the device), switched off where the inputs
are known good.

Public functions validate their inputs: ids in range, times in [0, 1], s <= t. Each such check
reads a tensor's values, which on CUDA is a host sync. A sampler validates its inputs once, at
the boundary, and then calls processes and schedules hundreds of times with values it made
itself: inside :func:`trusted_values` those value-reading checks are skipped (dtype and shape
checks stay, they cost nothing), so a sampling loop runs without a host sync per step.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["trusted_values", "check_values", "reads_are_free", "as_if_accelerator"]

_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("discdiff_trusted", default=False)
_ACCELERATOR: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "discdiff_as_if_accelerator", default=False
)


@contextlib.contextmanager
def trusted_values() -> Iterator[None]:
    """Within the block, ids and times are taken as valid without reading them."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_values() -> bool:
    """Whether value-reading checks should run (False inside :func:`trusted_values`)."""
    return not _TRUSTED.get()


def reads_are_free(t: Tensor) -> bool:
    """Whether reading ``t``'s values costs nothing: it lives on the CPU (no device to wait
    for), nothing is being compiled (a read would be a graph break) and no test asked for
    accelerator behaviour (:func:`as_if_accelerator`). Optional checks and shortcuts that read
    values ask this first."""
    import torch

    if torch.compiler.is_compiling():  # first: dynamo cannot trace a ContextVar's get
        return False
    return t.device.type == "cpu" and not _ACCELERATOR.get()


@contextlib.contextmanager
def as_if_accelerator() -> Iterator[None]:
    """Within the block CPU tensors are treated as if on an accelerator by
    :func:`reads_are_free` (and the Trainer), so a CPU test can show that a code path makes no
    host sync where a GPU would make it pay for one."""
    token = _ACCELERATOR.set(True)
    try:
        yield
    finally:
        _ACCELERATOR.reset(token)
