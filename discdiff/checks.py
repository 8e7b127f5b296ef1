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

__all__ = ["trusted_values", "check_values"]

_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("discdiff_trusted", default=False)


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
