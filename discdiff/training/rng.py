"""Seeds and random states of a run: derived seeds, and every global RNG saved and restored, so
a killed and resumed run draws exactly the numbers an uninterrupted one would."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["derive_seed", "rng_state", "set_rng_state", "seed_globals"]


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a base seed and labels, stable across runs and platforms."""
    text = "/".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def rng_state(device: torch.device, noise: torch.Generator) -> dict[str, Any]:
    """torch (CPU, CUDA), the loss's noise generator, Python and NumPy states."""
    np_state = np.random.get_state()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "noise": noise.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: Mapping[str, Any], device: torch.device, noise: torch.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch_cpu"])
    if state.get("torch_cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    noise.set_state(state["noise"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def seed_globals(seed: int, rank: int, salt: int, noise: torch.Generator) -> None:
    """Seed torch, Python and NumPy from (seed, rank, salt); a salt also reseeds the noise."""
    torch.manual_seed(derive_seed(seed, "torch", rank, salt))
    random.seed(derive_seed(seed, "python", rank, salt))
    np.random.seed(derive_seed(seed, "numpy", rank, salt) % 2**32)
    if salt:
        noise.manual_seed(derive_seed(seed, "noise", rank, salt))
