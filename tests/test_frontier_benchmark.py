"""The sampler-frontier benchmark runs end to end (its --quick smoke: tiny training budget)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "sampler_frontier.py"


def test_sampler_frontier_quick_run(tmp_path):
    spec = importlib.util.spec_from_file_location("sampler_frontier", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    png = tmp_path / "frontier.png"
    rows = mod.main(["--quick", "--out", str(png)])
    assert png.is_file() and png.stat().st_size > 1000
    models = {r["model"] for r in rows}
    assert models == set(mod.PLAN)
    assert all(math.isfinite(r["ppl"]) and r["ppl"] >= 1 for r in rows)
    assert all(0 <= r["entropy"] <= math.log(200) for r in rows)
    per_model = {m: {r["sampler"] for r in rows if r["model"] == m} for m in models}
    assert all(per_model[m] == {label for label, _, _ in mod.PLAN[m][1]} for m in models)
