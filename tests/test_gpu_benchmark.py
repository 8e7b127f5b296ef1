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
    for section in ("matmul", "train", "attention", "sampling", "molecules"):
        assert "error" not in got[section], (section, got[section])
    assert got["train"]["eager_tokens_per_s"] > 0 and got["molecules"]["validity"] == 1.0
    assert got["sampling"]["ancestral_overhead"] >= 0
