"""A run is rebuilt only from files that are what the run wrote: every file covered by the
manifest, task.json agreeing with the checkpoint, weights finite and of the saved dtype, and
sizes checked before anything is allocated."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from discdiff.cli.main import main
from discdiff.tasks import runs
from discdiff.tasks.base import check_model_size
from discdiff.tasks.text import TextTask
from discdiff.training import TrainConfig, latest_checkpoint, load_checkpoint


@pytest.fixture()
def run(tmp_path):
    task, sizes = TextTask.example(tmp_path / "data")
    torch.manual_seed(0)
    model = task.build_denoiser(**sizes)
    runs.train(
        task,
        model,
        TrainConfig(steps=2, batch_size=4, ckpt_every=2, log_every=1),
        tmp_path / "run",
        progress=False,
    )
    return tmp_path / "run"


def manifest(run):
    return latest_checkpoint(run) / "manifest.json"


def test_manifest_covers_the_task_files(run):
    doc = json.loads(manifest(run).read_text())
    assert "task.json" in doc["run_files"]
    assert any(k.startswith("tokenizer/") for k in doc["run_files"])
    load_checkpoint(run)  # intact: loads


@pytest.mark.parametrize("target", ["task.json", "tokenizer/tokenizer_config.json"])
def test_a_changed_task_file_is_refused(run, target, capsys):
    path = run / target
    text = path.read_text()
    path.write_text(text.replace("absorbing", "uniform") if "absorbing" in text else text + " ")
    with pytest.raises(ValueError, match="run file .* (corrupt|truncated)"):
        runs.load_run(run)
    assert main(["text", "sample", str(run), "-n", "1", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run file") and "\n" not in err


def test_an_empty_or_partial_manifest_is_refused(run):
    m = manifest(run)
    doc = json.loads(m.read_text())
    m.write_text(json.dumps({**doc, "files": {}}))
    with pytest.raises(ValueError, match="incomplete"):
        load_checkpoint(run)
    partial = {k: v for k, v in doc["files"].items() if k != "state.json"}
    m.write_text(json.dumps({**doc, "files": partial}))
    with pytest.raises(ValueError, match="does not cover \\['state.json'\\]"):
        load_checkpoint(run)


def test_task_json_is_cross_checked_with_the_checkpoint(run):
    task, _ = runs.load_run(run)
    entry = json.loads((latest_checkpoint(run) / "config.json").read_text())["model"]
    swapped = {**entry, "task": {**entry["task"], "process": "uniform"}}
    with pytest.raises(ValueError, match="does not match the checkpoint's task \\(process"):
        runs.check_same_task(task, swapped, run)


def _rewrite_weights(run, fn):
    ckpt = latest_checkpoint(run)
    tensors = load_file(str(ckpt / "model.safetensors"))
    save_file(fn(tensors), str(ckpt / "model.safetensors"))
    m = ckpt / "manifest.json"  # keep the manifest consistent so the weight checks are reached
    doc = json.loads(m.read_text())
    import hashlib

    data = (ckpt / "model.safetensors").read_bytes()
    doc["files"]["model.safetensors"] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    m.write_text(json.dumps(doc))


def test_non_finite_or_retyped_weights_are_refused(run):
    def nan_first(t):
        k = next(iter(t))
        return {**t, k: torch.full_like(t[k], float("nan"))}

    _rewrite_weights(run, nan_first)
    with pytest.raises(ValueError, match="non-finite"):
        runs.load_run(run, use_ema=False)


def test_retyped_weights_are_refused(run):
    _rewrite_weights(run, lambda t: {k: v.double() for k, v in t.items()})
    with pytest.raises(ValueError, match="stored as torch.float64"):
        runs.load_run(run, use_ema=False)


def test_absurd_sizes_fail_before_allocation():
    cfg = {
        "type": "transformer",
        "config": {
            "num_states": 5,
            "num_classes": 4,
            "d_model": 2**20,
            "num_heads": 1,
            "num_layers": 4,
            "max_len": 8,
        },
    }
    with pytest.raises(ValueError, match="GiB in float32"):
        check_model_size(cfg, limit=2**34)
    assert (
        check_model_size(
            {
                "type": "transformer",
                "config": {
                    "num_states": 5,
                    "num_classes": 4,
                    "d_model": 32,
                    "num_heads": 2,
                    "num_layers": 1,
                    "max_len": 8,
                },
            }
        )
        > 0
    )
