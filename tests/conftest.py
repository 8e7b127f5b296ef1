"""Fixtures shared by the oracle tests of samplers and losses."""

from __future__ import annotations

import pytest
import torch

from tests.oracle import random_joint


@pytest.fixture(scope="module")
def joint() -> torch.Tensor:
    """A random joint over 3 tokens of a 3-symbol vocabulary (seed 0): the exact oracle's data."""
    return random_joint(3, 3, torch.Generator().manual_seed(0))
