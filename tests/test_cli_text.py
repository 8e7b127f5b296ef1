"""`discdiff text train/sample/eval` end to end on a tiny text file, and bad input -> exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from discdiff.cli.main import app, main

WORDS = "the king and queen of england went to war with france in spring".split()
TINY = ["--seq-len", "24", "--layers", "1", "--d-model", "32", "--heads", "2", "--cond-dim", "16"]
FAST = ["--batch-size", "8", "--eval-every", "2", "--eval-batches", "1", "--no-progress"]


@pytest.fixture()
def corpus(tiny_text):
    return tiny_text


def steps_in(run):
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


def test_train_resume_sample_eval(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["text", "train", str(corpus), "--out", str(run), "--steps", "3", *TINY, *FAST]) == 0
    )
    assert steps_in(run) == ["step_00000003"]
    assert json.loads((run / "task.json").read_text())["process"] == "absorbing"
    # --resume continues to the new step count from the saved task and model
    assert (
        main(["text", "train", str(corpus), "--out", str(run), "--steps", "5", "--resume", *FAST])
        == 0
    )
    assert steps_in(run)[-1] == "step_00000005"
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert rows[-1].split(",")[0] == "5"
    capsys.readouterr()

    assert (
        main(["text", "sample", str(run), "-n", "3", "--steps", "8", "--prefix", "the king"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("=== sample") == 3
    assert all(block.startswith("the king") for block in out.split("===\n")[1:])

    remdm = ["text", "sample", str(run), "-n", "2", "--sampler", "remdm", "--steps", "8"]
    assert main([*remdm, "--sampler-opt", "strategy=loop", "--sampler-opt", "eta=0.05"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2
    assert main([*remdm, "--sampler-opt", "eta"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main([*remdm, "--sampler-opt", "colour=red"]) == 2
    assert "no option(s) ['colour']" in capsys.readouterr().err

    target = tmp_path / "samples.txt"
    args = ["text", "sample", str(run), "-n", "2", "--sampler", "caching", "--steps", "8"]
    assert main([*args, "--infill", "the [MASK:5] and", "--out", str(target), "--seed", "3"]) == 0
    blocks = target.read_text().split("===\n")[1:]
    assert len(blocks) == 2 and all(b[:4] == "the " and b[9:13] == " and" for b in blocks)

    capsys.readouterr()
    assert main(["text", "eval", str(run), "--samples", "2"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("test: ELBO") and "bits/char" in line and "+-" in line


def test_uniform_sundae_and_bpe(corpus, tmp_path, capsys):
    runner = CliRunner()
    run = tmp_path / "sundae"
    res = runner.invoke(
        app,
        [
            "text",
            "train",
            str(corpus),
            "--out",
            str(run),
            "--process",
            "uniform",
            "--objective",
            "sundae",
            "--steps",
            "2",
            *TINY,
            *FAST,
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["text", "sample", str(run), "-n", "2", "--sampler", "sundae", "--steps", "4"]
    )
    assert res.exit_code == 0 and res.stdout.count("=== sample") == 2
    assert json.loads((run / "task.json").read_text())["time_conditioning"] is None
    from discdiff.tasks.text import TextTaskConfig

    assert not TextTaskConfig(process="uniform", objective="sundae").time_conditioned  # paper
    sundae = ["text", "sample", str(run), "-n", "2", "--sampler", "sundae", "--steps", "6"]
    for extra in (
        ["--proportion", "0.9,0.3", "--no-early-stop"],
        ["--argmax", "--starts", "3"],
        ["--sampler-opt", "proportion=0.5", "--temperature", "0.8"],
    ):
        res = runner.invoke(app, [*sundae, *extra])
        assert res.exit_code == 0 and res.stdout.count("=== sample") == 2, (extra, res.output)
    assert main([*sundae, "--starts", "3"]) == 2  # starts ranks argmax chains only
    assert "needs argmax=True" in capsys.readouterr().err
    bpe = tmp_path / "bpe"
    res = runner.invoke(
        app,
        [
            "text",
            "train",
            str(corpus),
            "--out",
            str(bpe),
            "--tokenizer",
            "bpe",
            "--vocab-size",
            "280",
            "--steps",
            "2",
            *TINY,
            *FAST,
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["text", "eval", str(bpe)])
    assert res.exit_code == 0 and "bits/token" in res.stdout and "perplexity" in res.stdout


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--process", "gaussian"], "process='gaussian'"),
        (["--steps", "0"], "steps must be"),
        (["--objective", "sundae"], "needs process='uniform'"),
    ],
)
def test_bad_train_options_exit_2(corpus, tmp_path, capsys, extra, message):
    code = main(["text", "train", str(corpus), "--out", str(tmp_path / "r"), *TINY, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err


def test_missing_corpus_and_run_dir_exit_2(tmp_path, capsys):
    assert main(["text", "train", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.txt" in err and "\n" not in err
    assert main(["text", "sample", str(tmp_path / "norun")]) == 2
    assert main(["text", "eval", str(tmp_path / "norun")]) == 2
    assert "error:" in capsys.readouterr().err


def test_existing_run_needs_resume_and_sampler_must_fit(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["text", "train", str(corpus), "--out", str(run), "--steps", "1", *TINY, *FAST]) == 0
    )
    capsys.readouterr()
    assert (
        main(["text", "train", str(corpus), "--out", str(run), "--steps", "2", *TINY, *FAST]) == 2
    )
    assert "--resume" in capsys.readouterr().err
    assert main(["text", "sample", str(run), "--sampler", "sundae"]) == 2
    assert "Uniform" in capsys.readouterr().err
    assert main(["text", "sample", str(run), "--sampler", "beam"]) == 2
    assert main(["text", "sample", str(run), "--infill", "[MASK:99]"]) == 2


@pytest.mark.parametrize("process", ["absorbing", "uniform"])
def test_score_entropy_runs_train_eval_and_every_score_sampler(corpus, tmp_path, capsys, process):
    run = tmp_path / "sedd"
    args = ["text", "train", str(corpus), "--out", str(run), "--process", process]
    assert main([*args, "--objective", "score_entropy", "--steps", "2", *TINY, *FAST]) == 0
    saved = json.loads((run / "task.json").read_text())
    assert saved["objective"] == "score_entropy"
    capsys.readouterr()
    assert main(["text", "eval", str(run), "--max-chunks", "2"]) == 0
    assert "bits/char" in capsys.readouterr().out
    for sampler in ("tweedie", "tau-leaping", "ancestral"):
        assert (
            main(["text", "sample", str(run), "-n", "2", "--sampler", sampler, "--steps", "6"]) == 0
        )
        assert capsys.readouterr().out.count("=== sample") == 2, sampler


def test_dfm_objective_trains_and_samples_with_the_euler_solver(corpus, tmp_path, capsys):
    run = tmp_path / "dfm"
    args = ["text", "train", str(corpus), "--out", str(run), "--objective", "dfm"]
    assert main([*args, "--schedule", "kappa-cosine", "--steps", "2", *TINY, *FAST]) == 0
    assert json.loads((run / "task.json").read_text())["schedule"] == "kappa-cosine"
    capsys.readouterr()
    sample = ["text", "sample", str(run), "-n", "2", "--sampler", "dfm-euler", "--steps", "6"]
    assert main([*sample, "--sampler-opt", "div_free=1.0"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2


def test_self_conditioning_trains_evaluates_and_samples(corpus, tmp_path, capsys):
    run = tmp_path / "sc"
    args = ["text", "train", str(corpus), "--out", str(run), "--self-conditioning"]
    assert main([*args, "--steps", "2", *TINY, *FAST]) == 0
    assert json.loads((run / "task.json").read_text())["self_conditioning"] is True
    capsys.readouterr()
    assert main(["text", "eval", str(run), "--max-chunks", "2"]) == 0
    assert "bits/char" in capsys.readouterr().out
    for sampler in ("ancestral", "first-hitting", "remdm"):
        assert (
            main(["text", "sample", str(run), "-n", "2", "--sampler", sampler, "--steps", "6"]) == 0
        )
        assert capsys.readouterr().out.count("=== sample") == 2, sampler
    assert main(["text", "sample", str(run), "--sampler", "caching", "--steps", "6"]) == 2
    assert "keeps state" in capsys.readouterr().err


def test_semi_autoregressive_samples_past_the_context_and_stop_at_eod(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["text", "train", str(corpus), "--out", str(run), "--steps", "2", *TINY, *FAST]) == 0
    )
    capsys.readouterr()
    args = ["text", "sample", str(run), "-n", "2", "--steps", "8", "--length", "60"]
    assert main([*args, "--block", "10", "--prefix", "the king"]) == 0
    blocks = capsys.readouterr().out.split("=== sample")[1:]
    assert len(blocks) == 2 and all(b.split("\n", 1)[1].startswith("the king") for b in blocks)
    assert all(len(b.split("\n", 1)[1].rstrip("\n")) == 60 for b in blocks)  # chars = tokens
    assert main([*args, "--stop-at-eod", "--sampler", "first-hitting"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2
    assert main([*args, "--infill", "the [MASK:5] and"]) == 2
    assert "one window" in capsys.readouterr().err


def test_autoregressive_judge_eval_file_and_generative_perplexity(corpus, tmp_path, capsys):
    ar = tmp_path / "ar"
    args = ["text", "train", str(corpus), "--out", str(ar), "--autoregressive"]
    assert main([*args, "--steps", "3", *TINY, *FAST]) == 0
    capsys.readouterr()
    assert main(["text", "eval", str(ar)]) == 0
    assert capsys.readouterr().out.startswith("test: NLL: ")  # exact, not an ELBO
    assert main(["text", "sample", str(ar), "-n", "2", "--length", "10", "--prefix", "the"]) == 0
    out = capsys.readouterr().out
    texts = [b.split("\n", 1)[1] for b in out.split("=== sample")[1:]]
    assert len(texts) == 2 and all(t.startswith("the") for t in texts)
    run = tmp_path / "mdm"
    assert (
        main(["text", "train", str(corpus), "--out", str(run), "--steps", "2", *TINY, *FAST]) == 0
    )
    capsys.readouterr()
    assert main(["text", "sample", str(run), "-n", "3", "--steps", "8", "--judge", str(ar)]) == 0
    err = capsys.readouterr().err
    assert "generative perplexity under" in err and "unigram entropy" in err
    assert main(["text", "sample", str(run), "-n", "2", "--judge", str(run)]) == 2  # not causal
    assert "not an autoregressive run" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text("the queen and the king went to war in spring\n" * 20)
    assert main(["text", "eval", str(run), "--file", str(other)]) == 0
    assert capsys.readouterr().out.startswith(f"{other}: ")
    strange = tmp_path / "strange.txt"
    strange.write_text("zebra quartz!" * 10)
    assert main(["text", "eval", str(run), "--file", str(strange)]) == 2
    assert "does not know" in capsys.readouterr().err
