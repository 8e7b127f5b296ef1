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


def test_package_data_carries_every_shipped_file():
    """The wheel's package-data globs cover each card's weights, entry and task files."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(cat.__file__).resolve().parent
    globs = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["discdiff"]
    for card in cat.model_cards().values():
        files = [card.path, card.path.with_name(card.file.replace("_model.safetensors",
                                                                  "_config.json"))]  # fmt: skip
        folder = card.path.with_name(card.file.replace("_model.safetensors", "_model_files"))
        files += [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        for f in files:
            rel = f.relative_to(root).as_posix()
            assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), (
                rel
            )
    assert any(g.count("/") == 3 for g in globs)  # assets/NAME_files/tokenizer/FILE


def test_catalogue_entry_ships_an_export_with_its_card(tmp_path, monkeypatch, fresh_checks, capsys):
    """benchmarks/catalogue_entry.py: the export and its entry copied, the card written from
    the loaded model and the harness's rows, and read back by the catalogue."""
    import importlib.util
    from pathlib import Path

    from discdiff.tasks import runs
    from discdiff.tasks.molecules import MoleculeTask

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "catalogue_entry.py"
    spec = importlib.util.spec_from_file_location("catalogue_entry", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(cat.CATALOGUE, assets / "catalogue.json")
    for f in ("qm9_model.safetensors", "qm9_config.json"):
        shutil.copy(cat.ASSETS / f, assets / f)
    task, sizes = MoleculeTask.example(tmp_path / "mol")
    model = task.new_model(**sizes)
    weights = tmp_path / "out" / "x_model.safetensors"
    runs.export(task, model, weights, dtype="bfloat16")
    rows = [{"metric": "validity (default)", "value": 1.0, "se": 0.0, "n": 100, "unit": "%"}]
    (tmp_path / "card.json").write_text(json.dumps(rows))
    base = ["tiny-mol", str(weights), "--card", str(tmp_path / "card.json"), "--title", "t",
            "--data", "d", "--recipe", "r", "--training", "1 s", "--assets", str(assets),
            "--commit", "abc1234"]  # fmt: skip
    assert mod.main(base) == 0
    doc = json.loads((assets / "catalogue.json").read_text())
    assert [m["name"] for m in doc["models"]] == [*cat.model_cards(), "tiny-mol"]
    monkeypatch.setattr(cat, "ASSETS", assets)
    monkeypatch.setattr(cat, "CATALOGUE", assets / "catalogue.json")
    cat.model_cards.cache_clear()
    try:
        card = cat.model_card("tiny-mol")
        assert card.task == "molecules" and card.commit == "abc1234"
        assert card.parameters == count_parameters(model) and card.metrics == rows
        assert cat.model_path("tiny-mol") == assets / "tiny_mol_model.safetensors"
        assert isinstance(dd.from_pretrained("tiny-mol")[0], MoleculeTask)
        capsys.readouterr()
        assert mod.main(base) == 2  # the name is taken
        assert "--replace" in capsys.readouterr().err
        assert mod.main([*base, "--replace"]) == 0
        (tmp_path / "card.json").write_text(json.dumps([{"metric": "m", "value": 1.0, "n": 1}]))
        assert mod.main([*base, "--replace"]) == 2
        assert "without a standard error" in capsys.readouterr().err
        monkeypatch.setattr(cat, "MAX_BYTES", 100)
        assert mod.main([*base, "--replace"]) == 2
        assert "over the catalogue's" in capsys.readouterr().err
    finally:
        cat.model_cards.cache_clear()


@pytest.mark.parametrize(
    "name", [n for n, c in cat.model_cards().items() if c.task == "text"] or ["(no text model)"]
)
def test_a_shipped_text_model_samples_and_scores_by_name(name, capsys):
    """`text sample NAME` and the card's tokenizer: a shipped text model works by name alone."""
    if name == "(no text model)":
        pytest.fail("the catalogue ships no text model; issue 31 ships one (shakespeare-char)")
    capsys.readouterr()
    assert main(["text", "sample", name, "-n", "1", "--steps", "4", "--length", "24"]) == 0
    assert len(capsys.readouterr().out.strip()) > 0
