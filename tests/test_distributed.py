"""Multi-process training: 2 CPU ranks under torchrun (gloo) match one process on the same batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from discdiff.training import (
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    load_checkpoint,
    read_metrics,
)
from discdiff.training.distributed import all_gather_objects, all_reduce_sum
from tests._ddp_worker import DDP_CONFIG, ToyNet, run_toy

WORKER = Path(__file__).with_name("_ddp_worker.py")
REPO = WORKER.parent.parent


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    assert get_rank() == 0 and get_world_size() == 1 and is_main_process()
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    t = torch.ones(2)
    assert torch.equal(all_reduce_sum(t), torch.ones(2))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_distributed()


def test_two_gloo_ranks_match_one_process(tmp_path):
    """Per-rank micro-batches of B / (2 * accum) with DDP's gradient averaging give the same
    losses, weights, EMA and eval ELBO as one process on the global batch (to float rounding)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    ddp_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free localhost port
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(ddp_dir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = run_toy(tmp_path / "single")

    ddp = load_checkpoint(ddp_dir)
    assert ddp.step == DDP_CONFIG.steps
    assert ddp.train_state["world_size"] == 2 and len(ddp.train_state["rng"]) == 2
    for name, value in single.module.state_dict().items():
        torch.testing.assert_close(ddp.model[name], value, atol=1e-6, rtol=0)
        torch.testing.assert_close(ddp.ema[name], single.ema.shadow[name], atol=1e-6, rtol=0)
    # Training really moved the weights, so the comparison above is not trivially true.
    torch.manual_seed(0)
    start = ToyNet().state_dict()
    assert max((start[k] - ddp.model[k]).abs().max().item() for k in start) > 1e-2

    rows_single = read_metrics(tmp_path / "single" / "metrics.csv")
    rows_ddp = read_metrics(ddp_dir / "metrics.csv")
    assert [r["step"] for r in rows_ddp] == [float(s) for s in range(1, DDP_CONFIG.steps + 1)]
    for a, b in zip(rows_single, rows_ddp, strict=True):
        for column in ("train_loss", "grad_norm", "eval_loss", "eval_loss_ema"):
            if column in a:
                assert b[column] == pytest.approx(a[column], abs=1e-6), (a["step"], column)


def test_two_gloo_ranks_share_one_prepared_data_dir(tmp_path):
    """2 ranks on one memory-mapped data dir see disjoint windows that together are what one
    process sees at the global batch, so the trained weights agree (to float rounding)."""
    import random

    from discdiff.datasets.token_files import prepare_corpus

    rng = random.Random(0)  # random letters: every 16-token window is distinct
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz \n") for _ in range(40_000))
    (tmp_path / "c.txt").write_text(text)
    data = tmp_path / "data"
    prepare_corpus(str(tmp_path / "c.txt"), data)
    worker = WORKER.with_name("_ddp_text_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    for cmd in (
        launch + ["2", str(worker), str(data), str(tmp_path / "ddp")],
        [sys.executable, str(worker), str(data), str(tmp_path / "single")],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]

    single = torch.load(tmp_path / "single" / "seen-0.pt")
    ranks = [torch.load(tmp_path / "ddp" / f"seen-{r}.pt") for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for step, want in enumerate(single):
        a, b = ranks[0][step], ranks[1][step]
        assert a.shape == b.shape == (4, 16) and want.shape == (8, 16)
        assert not {tuple(r) for r in a.tolist()} & {tuple(r) for r in b.tolist()}  # disjoint
        assert torch.equal(torch.cat([a, b]), want)  # together: one process's batch
    one, two = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "ddp")
    assert two.train_state["world_size"] == 2
    moved = max((one.model[k] - two.model[k]).abs().max().item() for k in one.model)
    assert moved < 1e-5


def test_torchrun_cli_on_a_raw_corpus_prepares_it_once(tmp_path):
    """`torchrun -m discdiff.cli.main text train RAW`: both ranks ask the cache for the corpus
    at once; one prepares it (the other waits on its lock) and both train from the same files."""
    (tmp_path / "c.txt").write_text("the king and the queen went to war\n" * 400)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env["DISCDIFF_CACHE"] = str(tmp_path / "cache")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "discdiff.cli.main", "text", "train", str(tmp_path / "c.txt")]
    cmd += ["--out", str(tmp_path / "run"), "--steps", "2", "--seq-len", "16", "--layers", "1"]
    cmd += ["--d-model", "16", "--heads", "2", "--cond-dim", "8", "--batch-size", "4"]
    cmd += ["--eval-every", "0", "--no-progress", "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr  # the group is left before shutdown
    entries = [p for p in (tmp_path / "cache" / "prepared").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1  # prepared once, no leftovers of a second preparer
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2 and ckpt.train_state["world_size"] == 2
