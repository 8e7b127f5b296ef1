"""benchmarks/molecule_steps.py: its STEPS:POWER settings parse as the help says, and bad ones
are refused by argparse with one line."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "molecule_steps.py"


@pytest.fixture(scope="module")
def steps():
    spec = importlib.util.spec_from_file_location("molecule_steps", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configs_parse(steps) -> None:
    assert steps._config("50:3") == (50, 3.0)
    assert steps._config("200:1.5") == (200, 1.5)
    assert steps._config("100") == (100, 3.0)  # the default grid power of molecules sample


@pytest.mark.parametrize("bad", ["fifty:3", "50:x", "0:3", "50:0", "50:-1"])
def test_bad_configs_are_refused(steps, bad) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="50:3|steps >= 1"):
        steps._config(bad)
