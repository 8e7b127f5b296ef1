"""Multi-process training helpers: ``torchrun --nproc_per_node N`` runs the same command N times.

``init_distributed()`` reads the environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and joins the process group: NCCL when every rank has a GPU, gloo on
the CPU. Outside torchrun it does nothing and reports a world of one, so single-process code
needs no special case. Only rank 0 writes files (``is_main_process``).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "dist_info",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_sum",
    "all_gather_objects",
    "cleanup_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, rank on its node, number of processes, backend."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from err


def is_distributed() -> bool:
    """True when a process group with more than one member is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, the only rank that logs, plots and writes checkpoints."""
    return get_rank() == 0


def dist_info() -> DistInfo:
    """The current process's place in the group, without initialising anything."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            local_rank=_env_int("LOCAL_RANK", 0),
            world_size=dist.get_world_size(),
            backend=str(dist.get_backend()),
        )
    return DistInfo()


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables; idempotent.

    With ``WORLD_SIZE`` unset or 1 this is a no-op returning a world of one. ``backend`` defaults
    to "nccl" when CUDA is available and "gloo" otherwise; under NCCL the process is pinned to
    GPU ``LOCAL_RANK`` first, which NCCL collectives require.
    """
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend 'nccl' needs CUDA; use 'gloo' on the CPU")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    # A process that ends with its group still up tears gloo's threads down during interpreter
    # shutdown, which aborts it or a peer; a command that joined the group leaves it at exit.
    atexit.register(_leave_at_exit)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend)


def cleanup_distributed(timeout_s: float = 120.0) -> None:
    """Leave the process group (no-op when none is active), after every rank got here: a rank
    that tears its group down while a peer's gloo thread still talks to it aborts that peer
    ("terminate called without an active exception", SIGABRT). Under gloo the wait is bounded
    by ``timeout_s`` (a peer that died raises instead of hanging)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=timeout_s))
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _leave_at_exit() -> None:
    try:
        cleanup_distributed(timeout_s=60.0)
    except Exception:  # noqa: BLE001 - exiting anyway; a peer that is gone is not news here
        pass


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (identity when not distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed).

    Objects travel pickled between live processes only; nothing here touches the disk.
    """
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
