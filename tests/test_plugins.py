"""Plug-ins: examples/plugin installed with pip (into a temporary folder) adds its sampler to
the registry through the ``discdiff.plugins`` entry point; the CLI lists and uses it, and a
broken plug-in is reported without taking discdiff down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from discdiff.tasks import runs
from discdiff.tasks.text import TextTask
from discdiff.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    cmd += ["--target", str(target), str(ROOT / "examples" / "plugin")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert any(p.name.endswith(".dist-info") for p in target.iterdir())
    return target


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("textrun")
    task, sizes = TextTask.example(folder / "data")
    torch.manual_seed(0)
    model = task.build_denoiser(**sizes)
    cfg = TrainConfig(steps=1, batch_size=4, eval_every=0, ckpt_every=1, log_every=1)
    runs.train(task, model, cfg, folder / "run", progress=False)
    return folder / "run"


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    )
    code = "import sys; from discdiff.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_installed_plugin_sampler_reaches_the_cli(installed, text_run):
    res = cli(installed, "text", "sample", "--help")
    assert res.returncode == 0 and "annealed" in res.stdout
    res = cli(
        installed,
        "text",
        "sample",
        str(text_run),
        "-n",
        "2",
        "--steps",
        "4",
        "--sampler",
        "annealed",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("=== sample") == 2
    for task in ("pixels", "molecules", "task"):
        res = cli(installed, task, "sample", "--help")
        assert res.returncode == 0 and "annealed" in res.stdout, task


def test_plugin_sampler_passes_the_sampler_contract(installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    from discdiff.registry import load_plugins
    from discdiff.samplers import SAMPLERS, Sampler

    assert load_plugins(force=True) == {}
    try:
        assert "annealed" in SAMPLERS.names()
        from tests.conformance.test_samplers import (
            test_sampler_config_round_trip,
            test_sampler_contract,
        )

        test_sampler_contract("annealed")
        test_sampler_config_round_trip("annealed")
        s = Sampler.from_config({"type": "annealed", "steps": 3, "start": 2.0, "end": 0.5})
        assert (s.start, s.end, s.steps) == (2.0, 0.5, 3)
    finally:
        SAMPLERS.unregister("annealed")


def test_a_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[discdiff.plugins]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from discdiff.registry import load_plugins

    with pytest.warns(RuntimeWarning, match="broken"):
        errors = load_plugins(force=True)
    assert "broken" in errors and "no_such_module_xyz" in errors["broken"]
    res = cli(tmp_path, "--version")
    assert res.returncode == 0 and "discdiff" in res.stdout
