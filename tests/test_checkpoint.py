"""Checkpoints: pickle-free round trips, atomic writes under simulated crashes, corruption."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from discdiff.training import checkpoint as ckpt_mod
from discdiff.training.checkpoint import (
    decode_tree,
    encode_tree,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from discdiff.training.ema import module_tensors


def trained_adamw() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.AdamW(
        [
            {"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
            {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
        betas=(0.8, 0.9),
    )
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    return model, opt


def assert_trees_equal(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_trees_equal(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_trees_equal(x, y)
    else:
        assert a == b


def test_encode_tree_round_trips_optimizer_and_rng_state():
    _, opt = trained_adamw()
    tree = {
        "optimizer": opt.state_dict(),
        "python": random.getstate(),
        "numpy": list(np.random.get_state()[:1]) + [np.random.get_state()[1].tolist()],
        "torch": torch.get_rng_state(),
        "misc": {"__odd": 1, 2: "int key", "none": None, "inf": float("inf")},
    }
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_tree(tree, tensors)
    text = json.dumps(encoded)  # plain JSON: no pickles anywhere
    decoded = decode_tree(json.loads(text), tensors)
    assert_trees_equal(tree, decoded)
    # The decoded optimizer state drives a fresh optimizer to the same next step.
    model_a, opt_a = trained_adamw()
    model_b, opt_b = trained_adamw()
    opt_b.load_state_dict(decoded["optimizer"])
    for m, o in ((model_a, opt_a), (model_b, opt_b)):
        torch.manual_seed(1)
        o.zero_grad()
        m(torch.randn(5, 4)).square().sum().backward()
        o.step()
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_encode_tree_refuses_arbitrary_objects():
    with pytest.raises(TypeError, match="cannot store a object at /x"):
        encode_tree({"x": object()}, {})


def test_save_load_round_trip_and_pruning(tmp_path):
    model, opt = trained_adamw()
    ema = {k: v.detach() * 2 for k, v in module_tensors(model).items()}
    config = {"model": {"type": "mlp"}, "train": {"steps": 9}}
    for step in (1, 2, 3):
        path = save_checkpoint(
            tmp_path,
            step,
            model=model,
            ema=ema,
            train_state={"optimizer": opt.state_dict(), "data": {"epoch": 0, "position": step}},
            config=config,
            keep=2,
        )
        assert path.name == f"step_{step:08d}"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_00000003"
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 3 and loaded.config == config
    assert loaded.train_state["data"] == {"epoch": 0, "position": 3}
    assert_trees_equal(loaded.train_state["optimizer"], opt.state_dict())
    for name, value in module_tensors(model).items():
        assert torch.equal(loaded.model[name], value)
        assert torch.equal(loaded.ema[name], ema[name])
    # A specific older checkpoint directory loads too.
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000002").step == 2
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_tied_weights_are_stored_once_and_restored():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    torch.manual_seed(0)
    source = Tied()
    tensors = module_tensors(source)
    assert sorted(tensors) == ["embed.weight"]
    target = Tied()
    load_weights(target, {k: v.detach().clone() for k, v in tensors.items()})
    assert torch.equal(target.head.weight, source.embed.weight)
    assert target.head.weight is target.embed.weight
    with pytest.raises(ValueError, match="missing"):
        load_weights(target, {})
    with pytest.raises(ValueError, match="has shape"):
        load_weights(target, {"embed.weight": torch.zeros(2, 3)})


def save_simple(run_dir, step, value):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    return save_checkpoint(
        run_dir, step, model=model, train_state={"step_value": value}, config={"model": {}}
    )


@pytest.mark.parametrize("crash_on_call", [1, 2, 3])
def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch, crash_on_call):
    """Kill the save at the k-th file write: the previous checkpoint stays latest and loads."""
    save_simple(tmp_path, 1, 1.0)
    real_save_file = ckpt_mod.save_file
    calls = 0

    def crashing_save_file(tensors, filename, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == crash_on_call:
            with open(filename, "wb") as handle:  # half a file, then the process "dies"
                handle.write(b"\x10\x00\x00")
            raise KeyboardInterrupt
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "save_file", crashing_save_file)
    model = nn.Linear(2, 2)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(
            tmp_path, 2, model=model, ema=module_tensors(model), train_state={"t": torch.ones(3)}
        )
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 1 and loaded.train_state == {"step_value": 1.0}
    assert torch.all(loaded.model["weight"] == 1.0)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]


def test_crash_before_latest_is_updated(tmp_path, monkeypatch):
    """The new directory is complete but ``latest`` was never replaced: the old one is used,
    and saving the same step again afterwards replaces the orphan cleanly."""
    save_simple(tmp_path, 1, 1.0)
    real = ckpt_mod._write_bytes_atomic

    def crash(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod, "_write_bytes_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        save_simple(tmp_path, 2, 2.0)
    assert load_checkpoint(tmp_path).step == 1
    monkeypatch.setattr(ckpt_mod, "_write_bytes_atomic", real)
    save_simple(tmp_path, 2, 3.0)
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 2 and loaded.train_state == {"step_value": 3.0}


def test_crash_while_replacing_latest_pointer(tmp_path, monkeypatch):
    """``os.replace`` of the pointer fails: ``latest`` still names the old checkpoint."""
    save_simple(tmp_path, 1, 1.0)
    real_replace = ckpt_mod.os.replace

    def replace(src, dst):
        if str(dst).endswith("latest"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_simple(tmp_path, 2, 2.0)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    assert load_checkpoint(tmp_path).step == 1
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name]


def test_truncated_file_raises_value_error_naming_it(tmp_path):
    path = save_simple(tmp_path, 1, 1.0)
    target = path / "model.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated or corrupt"):
        load_checkpoint(tmp_path)
    # Without the manifest check, safetensors' own parse error is turned into the same kind.
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt"):
        load_checkpoint(tmp_path, verify=False)


def test_flipped_bytes_and_bad_json_raise_value_error(tmp_path):
    path = save_simple(tmp_path, 1, 1.0)
    target = path / "state.safetensors"
    original = target.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"state\.safetensors is corrupt: sha256"):
        load_checkpoint(tmp_path)
    target.write_bytes(original)
    (path / "state.json").write_text('{"step": 1, "state": ')
    with pytest.raises(ValueError, match=r"state\.json is corrupt"):
        load_checkpoint(tmp_path, verify=False)
    (path / "manifest.json").write_text("not json")
    with pytest.raises(ValueError, match=r"manifest\.json is corrupt"):
        load_checkpoint(tmp_path)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory"):
        load_checkpoint(tmp_path)
    save_simple(tmp_path, 1, 1.0)
    (tmp_path / "checkpoints" / "latest").write_text("step_00000009\n")
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        latest_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "step_00000001" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors is missing"):
        load_checkpoint(tmp_path / "checkpoints" / "step_00000001")
    with pytest.raises(ValueError, match="step must be"):
        save_checkpoint(tmp_path, -1, model={})
