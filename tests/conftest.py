"""Fixtures shared by the oracle tests of samplers and losses."""

from __future__ import annotations

import pytest
import torch

from tests.oracle import random_joint


@pytest.fixture(scope="module")
def joint() -> torch.Tensor:
    """A random joint over 3 tokens of a 3-symbol vocabulary (seed 0): the exact oracle's data."""
    return random_joint(3, 3, torch.Generator().manual_seed(0))


#: the words of the tiny text corpus of the CLI tests
TINY_WORDS = "the king and queen of england went to war with france in spring".split()


@pytest.fixture()
def tiny_text(tmp_path):
    """A 120-line text file of random words from :data:`TINY_WORDS` (seed 0)."""
    import random

    rng = random.Random(0)
    path = tmp_path / "tiny.txt"
    lines = (" ".join(rng.choice(TINY_WORDS) for _ in range(8)) for _ in range(120))
    path.write_text("\n".join(lines))
    return path
