"""Timing a training step, to turn a wall-clock budget into a step count (benchmarks)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from discdiff.training.device import autocast_context

__all__ = ["seconds_per_step"]


def seconds_per_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any, torch.Generator], Tensor],
    data: Any,
    batch_size: int,
    trials: int = 3,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> float:
    """Median seconds of one training step (forward, backward, AdamW) on ``batch_size`` items.

    ``data``: a map-style dataset whose items are dicts of tensors (stacked into one batch).
    Runs on a copy of ``model`` (the original is untouched) after one warm-up step, under the
    Trainer's autocast for ``precision``.
    """
    if len(data) < 1:
        raise ValueError("no training examples to time a step on")
    probe = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    items = [data[i % len(data)] for i in range(batch_size)]
    batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for i in range(trials + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast_context(torch.device(device), precision):
            loss = loss_fn(probe, batch, gen).float().mean()
        loss.backward()
        opt.step()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
