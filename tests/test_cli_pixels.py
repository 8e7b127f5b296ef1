"""`discdiff pixels`: train -> --resume -> sample -> eval on 8x8 digits with a tiny model, and
one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from discdiff.cli.main import main
from discdiff.training import latest_checkpoint, load_checkpoint

TINY = ["--layers", "1", "--d-model", "32", "--heads", "2", "--batch-size", "32"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 6-step absorbing run on digits at 4 levels, then resumed to 10 steps."""
    run_dir = tmp_path_factory.mktemp("pixels") / "run"
    argv = ["pixels", "train", "--data", "digits", "--levels", "4", "--process", "absorbing"]
    argv += ["--out", str(run_dir), "--steps", "6", "--ckpt-every", "3", "--no-progress"]
    assert main([*argv, *TINY]) == 0
    first = load_checkpoint(run_dir)
    assert first.step == 6
    # resume takes data, levels, process and model size from the run dir; only --steps changes
    assert (
        main(
            ["pixels", "train", "--out", str(run_dir), "--resume", "--steps", "10", "--no-progress"]
        )
        == 0
    )
    return run_dir


def test_train_then_resume_continues_the_same_run(trained_run) -> None:
    ckpt = load_checkpoint(trained_run)
    assert ckpt.step == 10
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"]["task"]["data"] == "digits" and cfg["model"]["task"]["levels"] == 4
    assert cfg["model"]["denoiser"]["config"]["num_layers"] == 1
    assert cfg["train"]["steps"] == 10
    assert latest_checkpoint(trained_run).name == "step_00000010"


def test_resume_refuses_a_different_model(trained_run, capsys) -> None:
    code, _, err = run(
        capsys,
        "pixels",
        "train",
        "--out",
        str(trained_run),
        "--resume",
        "--levels",
        "8",
        "--no-progress",
    )
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_train_refuses_to_overwrite(trained_run, capsys) -> None:
    code, _, err = run(
        capsys, "pixels", "train", "--out", str(trained_run), "--data", "digits", "--no-progress"
    )
    assert code == 2 and "--resume" in err


def test_sample_writes_a_png_grid(trained_run, tmp_path, capsys) -> None:
    out = tmp_path / "grid.png"
    code, text, _ = run(
        capsys,
        "pixels",
        "sample",
        str(trained_run),
        "-n",
        "6",
        "--label",
        "3",
        "--guidance",
        "2.0",
        "--steps",
        "4",
        "--seed",
        "1",
        "--out",
        str(out),
        "--no-progress",
    )
    assert code == 0 and str(out) in text
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (3 * 33 + 1, 2 * 33 + 1)  # 6 images: 3 x 2 of 32 px
        first = im.tobytes()
    # the same seed draws the same grid
    assert (
        main(
            [
                "pixels",
                "sample",
                str(trained_run),
                "-n",
                "6",
                "--label",
                "3",
                "--guidance",
                "2.0",
                "--steps",
                "4",
                "--seed",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with Image.open(out) as im:
        assert im.tobytes() == first


def test_eval_reports_bits_per_dim_with_se(trained_run, tmp_path, capsys) -> None:
    js = tmp_path / "eval.json"
    code, text, _ = run(
        capsys, "pixels", "eval", str(trained_run), "--limit", "40", "--json", str(js)
    )
    assert code == 0 and "bits/dim" in text
    report = json.loads(js.read_text())
    assert report["images"] == 40 and report["split"] == "test"
    assert 0 < report["bits_per_dim"] < 10 and report["bits_per_dim_se"] > 0


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--levels", "1"], "levels must be in [2, 256], got 1"),
        (["--levels", "300"], "levels must be in [2, 256], got 300"),
        (["--data", "cifar10"], "unknown image data set 'cifar10'"),
        (["--process", "blur"], "process must be one of"),
    ],
)
def test_train_bad_input_exits_2(argv, match, tmp_path, capsys) -> None:
    code, _, err = run(
        capsys, "pixels", "train", "--out", str(tmp_path / "r"), "--data", "digits", *argv
    )
    assert code == 2
    assert err.strip() == f"error: {err.strip()[7:]}" and match in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_sample_label_out_of_range_exits_2(trained_run, tmp_path, capsys) -> None:
    code, _, err = run(
        capsys,
        "pixels",
        "sample",
        str(trained_run),
        "--label",
        "10",
        "--out",
        str(tmp_path / "g.png"),
    )
    assert code == 2
    assert err.strip() == "error: label 10 is out of range; digits has labels 0..9"
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_missing_run_dir_exits_2(command, tmp_path, capsys) -> None:
    missing = tmp_path / "nope"
    code, _, err = run(capsys, "pixels", command, str(missing))
    assert code == 2
    assert err.strip().startswith(f"error: {str(missing)!r} does not exist")
    assert len(err.strip().splitlines()) == 1
