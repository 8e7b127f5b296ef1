"""The examples run: the DNA task (a fourth task in public API) through the spine and the
task conformance checks, and the quickstart."""

from __future__ import annotations

import importlib.util
import math
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dna():
    spec = importlib.util.spec_from_file_location("dna_task", ROOT / "examples" / "dna_task.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dna_task"] = module
    spec.loader.exec_module(module)
    return module


def test_dna_task_trains_evaluates_samples_and_reloads(dna, tmp_path):
    out = dna.main(
        [
            "--steps",
            "4",
            "--length",
            "16",
            "--samples",
            "4",
            "--out",
            str(tmp_path / "run"),
            "--threads",
            "1",
        ]
    )
    assert math.isfinite(out["bits_per_base"]) and out["se"] > 0
    assert 1.0 < out["exact"] < 2.0 and 0 <= out["tv"] <= 1
    from discdiff.tasks import TASKS, runs

    assert "dna" in TASKS
    task, model = runs.load_run(tmp_path / "run")
    assert type(task).__name__ == "DNATask" and task.config.length == 16


def test_dna_task_passes_the_task_conformance_checks(dna, tmp_path):
    from tests.conformance.test_tasks import (
        test_same_seed_same_weights,
        test_task_trains_saves_loads_evaluates_samples,
    )

    test_task_trains_saves_loads_evaluates_samples("dna", tmp_path / "a")
    test_same_seed_same_weights("dna", tmp_path / "b")


def test_exact_bits_per_base_matches_the_chain_entropy(dna):
    """The Monte-Carlo figure of the data's NLL equals the exact expected entropy within 4 SE."""
    import torch

    P, L, n = dna.TRANSITIONS, 32, 4000
    h = -(P * torch.log2(P)).sum(1)  # (4,) entropy of each row, bits
    p = torch.full((4,), 0.25, dtype=torch.float64)
    total = 2.0  # the uniform first base
    for _ in range(L - 1):
        total += float(p @ h)
        p = p @ P
    want = total / L
    x = dna.make_sequences(n, L, seed=1)
    logp = math.log(0.25) + torch.log(P[x[:, :-1], x[:, 1:]]).sum(1)
    per_seq = -logp / math.log(2) / L
    se = float(per_seq.std() / math.sqrt(n))
    assert abs(dna.exact_bits_per_base(x) - want) < 4 * se


def test_quickstart_runs():
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
