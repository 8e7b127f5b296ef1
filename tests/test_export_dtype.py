"""Exports in a narrower storage type (``--dtype bfloat16``): half the bytes, the same model up
to each weight's rounding, recorded in the entry so loading casts back; nothing else changes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import discdiff as dd
from discdiff.cli.main import main
from discdiff.tasks import runs
from discdiff.tasks.molecules import MoleculeTask
from discdiff.training.checkpoint import module_tensors
from tests.test_one_file import TINY_TEXT, tiny_corpus


@pytest.fixture
def molecule_model(tmp_path):
    task, sizes = MoleculeTask.example(tmp_path / "mol")
    model = task.new_model(**sizes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return task, model


def test_bfloat16_export_is_half_the_bytes_and_loads_the_rounded_weights(molecule_model, tmp_path):
    task, model = molecule_model
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    runs.export(task, model, full)
    runs.export(task, model, half, dtype="bfloat16")

    def data_bytes(path):
        return sum(v.numel() * v.element_size() for v in load_file(str(path)).values())

    assert half.stat().st_size < full.stat().st_size  # a tiny model: the header weighs too
    assert data_bytes(half) * 2 == data_bytes(full)  # every stored tensor is floating here
    entry = json.loads(runs.config_path(half).read_text())
    assert entry[runs.EXPORT_KEY]["dtype"] == "bfloat16"
    assert "dtype" not in json.loads(runs.config_path(full).read_text())[runs.EXPORT_KEY]
    assert {v.dtype for v in load_file(str(half)).values() if v.is_floating_point()} == {
        torch.bfloat16
    }
    _, loaded = dd.from_pretrained(half)
    want = {k: v.to(torch.bfloat16).float() for k, v in module_tensors(model).items()}
    got = module_tensors(loaded)
    assert all(got[k].dtype == torch.float32 for k in got)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(got[k], v) for k, v in module_tensors(model).items())  # rounded


def test_float16_overflow_is_refused_and_leaves_nothing(molecule_model, tmp_path):
    task, model = molecule_model
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6
    out = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="overflows float16"):
        runs.export(task, model, out, dtype="float16")
    assert list(tmp_path.glob("x*")) == []
    runs.export(task, model, out, dtype="bfloat16")  # bfloat16 has float32's range
    assert next(dd.from_pretrained(out)[1].parameters()).view(-1)[0] == 1e6 - 1e6 % 4096
    with pytest.raises(ValueError, match="dtype='int8'"):
        runs.export(task, model, out, dtype="int8")


def test_a_narrow_tensor_without_the_record_is_still_refused(molecule_model, tmp_path):
    """Only an export that says it stored bfloat16 is cast back: a file edited to hold one
    bfloat16 tensor is refused as before."""
    task, model = molecule_model
    out = tmp_path / "x.safetensors"
    runs.export(task, model, out)
    tensors = load_file(str(out))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].to(torch.bfloat16)
    save_file(tensors, str(out))
    entry = json.loads(runs.config_path(out).read_text())
    entry[runs.EXPORT_KEY]["weights_sha256"] = dd.files.sha256_file(out)
    runs.config_path(out).write_text(json.dumps(entry))
    with pytest.raises(ValueError, match="is stored as torch.bfloat16"):
        dd.from_pretrained(out)


def test_export_commands_take_dtype(tmp_path, capsys):
    corpus = tiny_corpus(tmp_path)
    run = tmp_path / "run"
    assert main(["text", "train", str(corpus), "--out", str(run), *TINY_TEXT]) == 0
    out = tmp_path / "t.safetensors"
    assert main(["task", "export", str(run), "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert main(["text", "sample", str(out), "-n", "1", "--steps", "2", "--length", "8"]) == 0
    capsys.readouterr()
    assert main(["task", "export", str(run), "--out", str(out), "--dtype", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dtype='int8'" in err
