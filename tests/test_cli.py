"""The top-level command: --help, --version, the demo, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import discdiff
from discdiff.cli.main import app, main

runner = CliRunner()


def test_version_and_help() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"discdiff {discdiff.__version__}"
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "demo" in res.stdout


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "discdiff.cli.main", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("discdiff ")


def test_demo_runs_with_a_seed() -> None:
    a = runner.invoke(app, ["demo", "--seed", "3"])
    b = runner.invoke(app, ["demo", "--seed", "3"])
    assert a.exit_code == 0 and a.stdout == b.stdout


def test_user_errors_exit_2_with_one_line(capsys) -> None:  # noqa: ANN001
    assert main(["no-such-command"]) == 2
    assert main(["demo", "--seed", "not-a-number"]) == 2


def test_shared_options_mean_the_same_in_every_task(capsys, tmp_path) -> None:  # noqa: ANN001
    """--seed, --device and --threads come from one declaration (cli/_options.py)."""
    import typer

    root = typer.main.get_command(app)
    helps: dict[str, set[str]] = {"seed": set(), "device": set(), "threads": set()}
    for task in ("molecules", "text", "pixels"):
        group = root.commands[task]
        for verb in ("sample", "train", "eval"):
            for param in group.commands[verb].params:
                if param.name in helps:
                    helps[param.name].add(param.help)
    assert all(len(v) == 1 for v in helps.values()), helps
    code = main(
        ["molecules", "sample", "-n", "1", "--threads", "-1", "--out", str(tmp_path / "m.smi")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --threads must be >= 0, got -1"


def test_thread_default_leaves_busy_cores_alone(monkeypatch) -> None:
    import os

    from discdiff.cli import _options
    from discdiff.cli._options import safe_threads, set_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for busy, want in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(_options, "busy_cores", lambda busy=busy: busy)
        assert safe_threads() == want
    monkeypatch.undo()
    ticks = iter([(100.0, 1000.0), (150.0, 1100.0)])  # half of all CPUs busy over the window
    monkeypatch.setattr(_options, "_cpu_times", lambda: next(ticks))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert _options.busy_cores(window=0.0) == 2.0
    monkeypatch.setattr(_options, "_cpu_times", lambda: None)  # off Linux: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert _options.busy_cores(window=0.0) == 1.5
    assert set_threads(2) == 2


def test_compile_switch_wraps_without_changing_the_model() -> None:
    import torch

    from discdiff.cli._options import compiled
    from discdiff.cli._spine import train_flags

    model = torch.nn.Linear(3, 2)
    assert compiled(model, False) is model
    wrapped = compiled(model, True)  # torch.compile is lazy: nothing compiles until a call
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    assert train_flags({"compile": False})["compile"] is None  # off = not given (resume keeps)
    assert train_flags({"compile": True})["compile"] is True


@pytest.mark.slow
def test_compiled_sampling_gives_the_eager_samples(tmp_path) -> None:
    """Plain ancestral draws are the same compiled or not. The valence guard visits edges by
    their bond probabilities, and graphs with symmetric atoms tie exactly in eager arithmetic
    but not always compiled (another summation order), so a guarded run may visit tied edges in
    another order: it is only checked to run and give valid molecules."""
    from discdiff.cli.main import main

    outs = []
    plain = ["--no-valence-guard", "--no-reject"]
    for extra in ([*plain], [*plain, "--compile"], ["--compile"]):
        out = tmp_path / f"m{len(outs)}.smi"
        args = ["molecules", "sample", "-n", "8", "--steps", "3", "--no-novelty", "--out", str(out)]
        assert main([*args, *extra]) == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    assert len(outs[2].splitlines()) == 8 and "invalid" not in outs[2]


def test_every_train_command_has_the_shared_training_flags_alike():
    """Declared once (cli/_spine.py): the same flags, help and defaults on every `train`, and
    each task's defaults live on its Task class, so `discdiff task train NAME` trains as
    `discdiff NAME train` does."""
    import typer

    from discdiff.cli._spine import _shared_train_options, task_train_defaults
    from discdiff.cli.main import app
    from discdiff.tasks import TASKS

    root = typer.main.get_command(app)
    shared = {name for name, _, _ in _shared_train_options()}
    seen = {}
    for group in ("molecules", "text", "pixels", "task"):
        params = {p.name: p for p in root.commands[group].commands["train"].params}
        assert shared <= set(params), (group, sorted(shared - set(params)))
        seen[group] = {n: (params[n].opts, params[n].help, params[n].default) for n in shared}
    assert seen["molecules"] == seen["text"] == seen["pixels"] == seen["task"]
    for name in ("molecules", "text", "pixels"):
        cls = TASKS.get(name)
        assert (
            cls.train_defaults and task_train_defaults(cls)["steps"] == cls.train_defaults["steps"]
        )
    assert task_train_defaults(TASKS.get("text"))["lr"] == 3e-4
