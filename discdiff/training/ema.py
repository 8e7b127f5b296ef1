"""Exponential moving average of a model's weights, for evaluation and sampling.

After every optimizer step, ``shadow <- decay * shadow + (1 - decay) * param`` for each floating
point parameter; buffers (running statistics, fixed tables) are copied as they are. The shadow
is kept under the model's own state-dict names, so it saves and loads like model weights, and
``ema.swap(model)`` puts it in place for a ``with`` block and restores the trained weights after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["EMA", "module_tensors"]


def module_tensors(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict with tied (shared-storage) entries kept once, under their first name.

    This is the set of tensors a checkpoint stores: safetensors refuses shared storage, and the
    other names of a tied weight are restored by loading the first one.
    """
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...], tuple[int, ...]]] = set()
    for name, value in module.state_dict(keep_vars=True).items():
        if not isinstance(value, Tensor):
            continue
        key = (value.data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if value.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = value
    return out


class EMA:
    """Exponential moving average of ``model``'s parameters.

    ``decay`` in [0, 1): the weight kept by the old average at each update (0.999 averages over
    roughly the last 1000 steps). Floating-point parameters are averaged; every other tensor of
    the state dict (buffers, integer parameters) is copied from the model.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(decay, int | float) or not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"EMA decay must be a float in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.num_updates = 0
        param_ids = {id(p) for p in model.parameters()}
        self._averaged: set[str] = set()
        self.shadow: dict[str, Tensor] = {}
        for name, value in module_tensors(model).items():
            if id(value) in param_ids and torch.is_floating_point(value):
                self._averaged.add(name)
            self.shadow[name] = value.detach().clone()

    def _live(self, model: nn.Module) -> dict[str, Tensor]:
        live = module_tensors(model)
        if live.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - live.keys())[:3]
            extra = sorted(live.keys() - self.shadow.keys())[:3]
            raise ValueError(f"model does not match the EMA: missing {missing}, unexpected {extra}")
        return live

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        live = self._live(model)
        averaged: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
        for name, shadow in self.shadow.items():
            value = live[name].detach()
            if name in self._averaged:  # grouped by (device, dtype): one foreach call each
                group = averaged.setdefault((shadow.device, shadow.dtype), ([], []))
                group[0].append(shadow)
                group[1].append(value.to(shadow.dtype))
            else:
                shadow.copy_(value)
        for shadows, values in averaged.values():
            # shadow + (1 - decay) (value - shadow) = decay shadow + (1 - decay) value
            torch._foreach_lerp_(shadows, values, 1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the averaged ones."""
        live = self._live(model)
        for name, shadow in self.shadow.items():
            live[name].detach().copy_(shadow)

    @contextlib.contextmanager
    def swap(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the EMA weights; the trained ones come back after."""
        live = self._live(model)
        backup = {name: value.detach().clone() for name, value in live.items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    live[name].detach().copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged tensors under the model's state-dict names (saveable with safetensors)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        """Restore the averages saved by ``state_dict``; names and shapes must match exactly."""
        if tensors.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - tensors.keys())[:3]
            extra = sorted(tensors.keys() - self.shadow.keys())[:3]
            raise ValueError(
                f"EMA state does not match the model: missing {missing}, unexpected {extra}"
            )
        for name, shadow in self.shadow.items():
            value = tensors[name]
            if value.shape != shadow.shape:
                raise ValueError(
                    f"EMA tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(shadow.shape)}"
                )
            shadow.copy_(value)
