"""Exponential moving average of a model's weights, for evaluation and sampling.

After every optimizer step, ``shadow <- decay * shadow + (1 - decay) * param`` for each floating
point parameter; buffers (running statistics, fixed tables) are copied as they are. The shadow
is kept under the model's own state-dict names, so it saves and loads like model weights, and
``ema.swap(model)`` puts it in place for a ``with`` block and restores the trained weights after.
"""

from __future__ import annotations

import contextlib
import itertools
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
        self._plan: tuple | None = None
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

    @staticmethod
    def _fingerprint(model: nn.Module) -> tuple:
        """Which tensors the model holds now (identity and dtype): the update plan is rebuilt
        only when it changes (a replaced parameter or buffer, a cast)."""
        return (id(model),) + tuple(
            (id(t), t.dtype, t.device) for t in itertools.chain(model.parameters(), model.buffers())
        )

    def _update_plan(
        self, model: nn.Module
    ) -> tuple[list[tuple[list[Tensor], list[Tensor]]], list]:
        live = self._live(model)
        averaged: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
        copies = []
        for name, shadow in self.shadow.items():
            value = live[name]
            if name in self._averaged and value.dtype == shadow.dtype:
                # grouped by (device, dtype): one foreach call each
                group = averaged.setdefault((shadow.device, shadow.dtype), ([], []))
                group[0].append(shadow)
                group[1].append(value)
            else:
                copies.append((name, shadow, value))
        return list(averaged.values()), copies

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step).

        The pairs of (average, weight) are gathered once and reused while the model holds the
        same tensors: one fused lerp per (device, dtype), no Python per tensor (a state-dict
        walk and a detach per tensor cost 1-2 ms a step at DiGress's size)."""
        key = self._fingerprint(model)
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, *self._update_plan(model))
        _, groups, copies = self._plan
        for shadows, values in groups:
            # shadow + (1 - decay) (value - shadow) = decay shadow + (1 - decay) value
            torch._foreach_lerp_(shadows, values, 1.0 - self.decay)
        for name, shadow, value in copies:
            if name in self._averaged:  # another dtype than the average's
                shadow.lerp_(value.to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)
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
