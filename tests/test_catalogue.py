"""The shipped models: each card matches its file and its model, and names load everywhere."""

from __future__ import annotations

import json
import shutil

import pytest

import discdiff as dd
import discdiff.catalogue as cat
from discdiff.cli.main import main
from discdiff.nn import count_parameters


@pytest.fixture
def fresh_checks():
    cat._checked.cache_clear()
    yield
    cat._checked.cache_clear()


@pytest.mark.parametrize("name", list(cat.model_cards()))
def test_every_card_matches_its_file_and_its_model(name, fresh_checks):
    card = cat.model_card(name)
    path = cat.model_path(name)  # size and sha256 checked
    assert path.stat().st_size == card.bytes <= cat.MAX_BYTES
    assert path.with_name(path.name.replace("_model.safetensors", "_config.json")).is_file()
    task, model = dd.from_pretrained(name)
    assert count_parameters(model) == card.parameters
    assert type(task).__name__.lower().startswith(card.task.rstrip("s"))
    assert card.recipe and card.commit and card.data and card.training and card.metrics
    for row in card.metrics:
        assert row["metric"] and isinstance(row["value"], float | int), row
        if row.get("unit") == "%":
            assert 0.0 <= row["value"] <= 1.0 and row.get("n", 0) > 0, row
    text = cat.format_card(card)
    assert card.sha256 in text and f"{card.parameters:,}" in text


def test_a_name_loads_what_its_file_loads_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    import torch

    _, by_name = dd.from_pretrained("qm9")
    _, by_path = dd.from_pretrained(cat.model_path("qm9"))
    for (k, a), (_, b) in zip(
        by_name.state_dict().items(), by_path.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qm9").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run dir"):
        dd.from_pretrained("qm9")
    with pytest.raises(FileNotFoundError, match="nor is it a shipped model's name: qm9"):
        dd.from_pretrained("no-such-model")


def test_a_damaged_file_is_refused_in_one_line(tmp_path, monkeypatch, fresh_checks):
    for f in ("qm9_model.safetensors", "qm9_config.json"):
        shutil.copy(cat.ASSETS / f, tmp_path / f)
    monkeypatch.setattr(cat, "ASSETS", tmp_path)
    assert cat.model_path("qm9") == tmp_path / "qm9_model.safetensors"
    data = bytearray((tmp_path / "qm9_model.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "qm9_model.safetensors").write_bytes(bytes(data))
    cat._checked.cache_clear()
    with pytest.raises(ValueError, match="does not match its card"):
        cat.model_path("qm9")
    (tmp_path / "qm9_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        cat.model_path("qm9")


def test_cards_are_checked_when_read(tmp_path, monkeypatch):
    doc = json.loads(cat.CATALOGUE.read_text())
    del doc["models"][0]["sha256"]
    (tmp_path / "catalogue.json").write_text(json.dumps(doc))
    monkeypatch.setattr(cat, "CATALOGUE", tmp_path / "catalogue.json")
    cat.model_cards.cache_clear()
    try:
        with pytest.raises(ValueError, match="lacks sha256"):
            cat.model_cards()
    finally:
        cat.model_cards.cache_clear()


def test_models_commands(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cat.model_cards())
    assert main(["models", "show", "qm9"]) == 0
    out = capsys.readouterr().out
    assert cat.model_card("qm9").sha256 in out and "verified" in out
    assert main(["models", "show", "qm9-qed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "qm9-qed"
    assert main(["models", "show", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no shipped model 'nope'" in err
