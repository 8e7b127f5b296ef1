"""Counting, on the CPU, the ops that make a GPU wait for its host (a host sync).

torch's own detector (``torch.cuda.set_sync_debug_mode``) needs CUDA; this counter sees the
same kinds of op through a dispatch mode, so the CPU suite can hold the hot paths to "no sync
per step": a value read back (``.item()``, ``bool()``, ``int()``: ``_local_scalar_dense``),
an output whose size depends on values (``nonzero``, ``masked_select``, boolean-mask indexing
and assignment, ``unique``, ``repeat_interleave`` without ``output_size``) and ``equal``.
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS = {
    "_local_scalar_dense",
    "is_nonzero",
    "item",
    "nonzero",
    "masked_select",
    "equal",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
}


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class HostSyncs(TorchDispatchMode):
    """Counts the ops that would be host syncs on a GPU, with the discdiff lines that asked."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.where: list[str] = []

    def _seen(self) -> None:
        self.count += 1
        self.where.append("".join(s for s in traceback.format_stack() if "discdiff" in s))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _ALWAYS:
            self._seen()
        elif name in ("index", "index_put", "index_put_", "_index_put_impl_") and _bool_index(args):
            self._seen()
        elif name == "repeat_interleave" and (kwargs or {}).get("output_size") is None:
            if isinstance(args[0], torch.Tensor) and args[0].dtype != torch.bool:
                self._seen()
        return func(*args, **(kwargs or {}))
