"""benchmarks/gpu.py runs every section (a CPU smoke run; on a GPU it is the real one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def test_gpu_benchmark_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--device",
        "cpu",
        "--quick",
        "--no-compile",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(out.read_text())
    for section in ("matmul", "train", "attention", "sampling", "molecules", "molecule_train"):
        assert "error" not in got[section], (section, got[section])
    assert got["train"]["eager_tokens_per_s"] > 0 and got["molecules"]["validity"] == 1.0
    assert got["sampling"]["ancestral_overhead"] >= 0
    assert got["molecule_train"]["resident_graphs_per_s"] > 0


def test_recipe_scripts_parse_and_the_independent_count_counts():
    """The GPU recipe and its bring script are valid bash; count_molecules counts by RDKit."""
    root = SCRIPT.parent
    for script in ("gpu_recipe.sh", "gpu_text_recipe.sh", "gpu_common.sh", "gpu_bring.sh"):
        res = subprocess.run(["bash", "-n", str(root / script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    sys.path.insert(0, str(root))
    try:
        import count_molecules as cm
    finally:
        sys.path.remove(str(root))
    lines = ["c1ccccc1O", "CCO", "CCO", "C(C)(C)(C)(C)C", "CC.O", None]  # as read_samples gives
    got = cm.count(lines, {"qm9": {"CCO"}})
    assert got["samples"] == 6 and got["valid"][0] == 4 / 6 and got["connected"][0] == 3 / 6
    assert got["aromatic"][0] == 1 / 4 and got["unique"][0] == 3 / 4
    assert got["novel_vs_qm9"][0] == 2 / 3  # phenol and CC (CC.O's largest fragment) are new
