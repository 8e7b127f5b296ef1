"""Nothing lost, nothing silent in the training loop: non-finite losses, a lock on the run dir,
resume that continues the saved run, and SIGINT/SIGTERM that save before stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from discdiff.training import TrainConfig, latest_checkpoint, list_checkpoints, load_checkpoint
from discdiff.training.errors import TrainingInterrupted
from discdiff.training.lock import RunLock
from tests._ddp_worker import ce_loss
from tests.test_training import make_trainer


def nan_after(step: int):
    """A loss that turns NaN from the ``step``-th call on (a blown-up run)."""
    calls = {"n": 0}

    def loss(model, batch, generator):
        calls["n"] += 1
        value = ce_loss(model, batch, generator)
        return value * float("nan") if calls["n"] >= step else value

    return loss


def all_finite(ckpt) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt.model.values())


@pytest.mark.parametrize("clip", [1.0, None])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_finite_checkpoints(tmp_path, clip):
    cfg = TrainConfig(
        steps=10, batch_size=8, ckpt_every=1, log_every=5, keep_checkpoints=2, grad_clip=clip
    )
    trainer = make_trainer(tmp_path, cfg, loss=nan_after(4))
    with pytest.raises(FloatingPointError, match="non-finite at step 4") as info:
        trainer.fit()
    message = str(info.value)
    assert ("gradient clipping" in message) is (clip is None)  # no clipping advice when it is on
    assert "step_00000003" in message
    saved = list_checkpoints(tmp_path)
    assert [p.name for p in saved] == ["step_00000002", "step_00000003"]
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    assert all(all_finite(load_checkpoint(p)) for p in saved)


def test_skip_nonfinite_skips_up_to_the_limit(tmp_path):
    calls = {"n": 0}

    def one_bad(model, batch, generator):
        calls["n"] += 1
        value = ce_loss(model, batch, generator)
        return value * float("nan") if calls["n"] == 3 else value

    cfg = TrainConfig(steps=6, batch_size=8, ckpt_every=3, log_every=1, skip_nonfinite=1)
    trainer = make_trainer(tmp_path / "ok", cfg, loss=one_bad)
    metrics = trainer.fit()
    assert trainer.skipped_steps == 1 and metrics["step"] == 6
    assert all_finite(load_checkpoint(tmp_path / "ok"))
    cfg = TrainConfig(steps=6, batch_size=8, ckpt_every=3, log_every=1, skip_nonfinite=1)
    with pytest.raises(FloatingPointError, match="skip_nonfinite=1"):
        make_trainer(tmp_path / "bad", cfg, loss=nan_after(2)).fit()


def test_a_second_writer_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from discdiff.training.lock import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig(steps=2, batch_size=8)
        with pytest.raises(ValueError, match=f"another process \\(pid {holder.pid}\\)"):
            make_trainer(tmp_path, cfg).fit()
        assert latest_checkpoint(tmp_path) is None
    finally:
        holder.kill()
        holder.wait()
    make_trainer(tmp_path, TrainConfig(steps=2, batch_size=8)).fit()  # a dead holder's lock is gone
    with RunLock(tmp_path), RunLock(tmp_path):  # re-entrant within a process
        pass


def test_resume_below_the_saved_step_is_refused(tmp_path):
    make_trainer(tmp_path, TrainConfig(steps=4, batch_size=8)).fit()
    with pytest.raises(ValueError, match="below the step the run was saved at \\(4\\)"):
        make_trainer(tmp_path, TrainConfig(steps=3, batch_size=8)).fit(resume=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_stops_and_resume_is_bit_identical(tmp_path, signum):
    def stop_at_3(model, batch, generator, calls={"n": 0}):  # noqa: B006
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)
        return ce_loss(model, batch, generator)

    cfg = TrainConfig(steps=6, batch_size=8, ckpt_every=100, log_every=1)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    with pytest.raises(TrainingInterrupted) as info:
        make_trainer(tmp_path / "a", cfg, loss=stop_at_3).fit()
    assert info.value.step == 3 and latest_checkpoint(tmp_path / "a").name == "step_00000003"
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    resumed = make_trainer(tmp_path / "a", cfg)
    resumed.fit(resume=True)
    straight = make_trainer(tmp_path / "b", cfg)
    straight.fit()
    for a, b in zip(resumed.module.parameters(), straight.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_config_refuses_non_finite_values():
    for bad in ({"weight_decay": float("inf")}, {"grad_clip": float("inf")}, {"lr": float("nan")}):
        with pytest.raises(ValueError, match="finite"):
            TrainConfig(**bad)


def test_cli_training_interrupted_by_sigint_exits_130_with_a_message(tmp_path):
    data = tmp_path / "c.txt"
    data.write_text("the king and the queen " * 400)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "discdiff.cli.main", "text", "train", str(data), "--out", str(run)]
    cmd += [
        "--steps",
        "100000",
        "--seq-len",
        "16",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
    ]
    cmd += ["--cond-dim", "8", "--batch-size", "4", "--eval-every", "0", "--ckpt-every", "100000"]
    proc = subprocess.Popen(
        [*cmd, "--no-progress", "--threads", "1"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.csv").is_file():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: SIGINT at step" in err and "Traceback" not in err
    assert latest_checkpoint(run) is not None


def test_resuming_a_finished_run_says_so(tmp_path, caplog):
    make_trainer(tmp_path, TrainConfig(steps=3, batch_size=8)).fit()
    with caplog.at_level("WARNING", logger="discdiff.training"):
        again = make_trainer(tmp_path, TrainConfig(steps=3, batch_size=8))
        assert again.fit(resume=True) == {}
    assert "already at step 3 = steps: nothing to train" in caplog.text


def test_exported_weights_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from discdiff.tasks.runs import export, from_pretrained

    task, model = from_pretrained("qm9")
    weights, cfg = export(task, model, tmp_path / "m_model.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    for path in (weights, cfg):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # safetensors alone: 0600
