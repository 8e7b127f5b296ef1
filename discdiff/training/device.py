"""Device and precision choice: the one place that decides where tensors live and in what dtype.

Everything else in discdiff asks here: ``resolve_device("auto")`` gives CUDA when there is one
(the local rank's GPU under ``torchrun``) and the CPU otherwise; ``autocast_context`` turns a
precision name into an autocast region (bf16 on CUDA for "auto", plain fp32 on the CPU).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = [
    "PRECISIONS",
    "resolve_device",
    "resolve_precision",
    "autocast_context",
    "move_to_device",
]

PRECISIONS = ("auto", "fp32", "bf16")


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:1", "mps" (or a torch.device) into a usable device.

    "auto" picks CUDA when available and the CPU otherwise. A bare "cuda" means the GPU of this
    process's ``LOCAL_RANK`` (0 outside ``torchrun``), so that every rank gets its own GPU.
    Asking for a device that is not present raises ``ValueError``.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a str or torch.device, got {type(spec).__name__}")
    name = spec.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"unknown device {spec!r}; expected 'auto', 'cpu', 'cuda[:i]' or 'mps'"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available")
        index = _local_rank() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} resolves to cuda:{index} but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {spec!r} requested but MPS is not available")
        return device
    if device.type != "cpu":
        raise ValueError(
            f"unsupported device {spec!r}; expected 'auto', 'cpu', 'cuda[:i]' or 'mps'"
        )
    return device


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``: "auto" is bf16 on CUDA, fp32 elsewhere.

    "auto" falls back to fp32 on GPUs without bf16 support (pre-Ampere), where bf16 autocast
    would be emulated and slow. "bf16" is honoured on any device (CPU autocast supports it).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@contextlib.contextmanager
def autocast_context(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """An autocast region in the dtype ``resolve_precision`` picks; a no-op for fp32.

    Parameters and gradients stay fp32; only the forward computation runs in reduced precision,
    so no loss scaling is needed (bf16 has fp32's exponent range).
    """
    dtype = resolve_precision(device, precision)
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def move_to_device(batch: object, device: torch.device, non_blocking: bool = False) -> object:
    """Move every tensor inside a batch (tensor, dict, list, tuple, or an object with ``.to``).

    Containers are rebuilt with the same type; non-tensor leaves (ints, strings) pass through.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return type(batch)((k, move_to_device(v, device, non_blocking)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    to = getattr(batch, "to", None)
    if callable(to):  # e.g. a torch_geometric Batch
        return to(device)
    return batch
