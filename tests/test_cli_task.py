"""`discdiff task ...`: a task defined in a file (examples/dna_task.py) trained, evaluated,
sampled and exported through the generic commands; registries listed; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from discdiff.cli.main import main

DNA = str(Path(__file__).resolve().parents[1] / "examples" / "dna_task.py")
TINY = ["--config", '{"length": 12, "num_train": 64, "num_test": 16}']
TINY += ["--sizes", '{"num_layers": 1, "d_model": 32, "num_heads": 2, "cond_dim": 16}']


def test_generic_commands_serve_a_task_from_a_file(tmp_path, capsys):
    run = tmp_path / "dna"
    args = ["task", "train", "dna", "--import", DNA, "--out", str(run), *TINY]
    assert main([*args, "--steps", "3", "--batch-size", "8", "--no-progress"]) == 0
    assert json.loads((run / "task.json").read_text())["task_type"] == "dna"
    # resume keeps the run's batch size and says so when a flag overrides a saved value
    assert (
        main(
            [
                "task",
                "train",
                "dna",
                "--import",
                DNA,
                "--out",
                str(run),
                "--resume",
                "--steps",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["steps"] == 5 and cfg["train"]["batch_size"] == 8
    assert "steps 3 -> 5" in capsys.readouterr().err
    js = tmp_path / "ev.json"
    assert main(["task", "eval", str(run), "--import", DNA, "--limit", "8", "--json", str(js)]) == 0
    assert "bits/base" in capsys.readouterr().out
    assert json.loads(js.read_text())["unit"] == "bits/base"
    out = tmp_path / "s.txt"
    assert (
        main(
            [
                "task",
                "sample",
                str(run),
                "--import",
                DNA,
                "-n",
                "3",
                "--sampler",
                "first-hitting",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(len(x) == 12 and set(x) <= set("ACGT") for x in lines)
    weights = tmp_path / "exp" / "dna_model.safetensors"
    assert main(["task", "export", str(run), "--import", DNA, "--out", str(weights)]) == 0
    assert (tmp_path / "exp" / "dna_config.json").is_file()


def test_list_and_errors(tmp_path, capsys):
    assert main(["task", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("text", "pixels", "molecules", "absorbing", "first-hitting", "transformer"):
        assert name in out
    assert main(["task", "train", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown task 'nope'") and "\n" not in err
    assert main(["task", "eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["task", "list", "--import", str(tmp_path / "none.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert (
        main(
            [
                "task",
                "train",
                "dna",
                "--import",
                DNA,
                "--out",
                str(tmp_path / "r"),
                "--config",
                "{bad",
            ]
        )
        == 2
    )
    assert "--config is not valid JSON" in capsys.readouterr().err


def test_task_sample_of_a_molecule_run_prints_guarded_smiles(tmp_path, capsys):
    """`task sample` asks the task for its sampler (the molecule task adds its valence guard)
    and for how a sample reads (SMILES); it once failed on the graphs' tuples."""
    from rdkit import Chem

    data = tmp_path / "tiny.smi"
    data.write_text("CCO\nCC(=O)O\nc1ccoc1\nCC#N\nOCC(O)CO\nCC(C)O\nC1CC1N\nCOC=O\n")
    run = tmp_path / "run"
    assert main(["molecules", "train", "--data", str(data), "--out", str(run), "--steps", "2",
                 "--batch-size", "4", "--layers", "1", "--node-dim", "8", "--edge-dim", "4",
                 "--heads", "2", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["task", "sample", str(run), "-n", "4", "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert all(Chem.MolFromSmiles(line) is not None for line in lines), lines  # guarded: valid


def test_task_train_molecules_is_made_from_data(tmp_path, capsys):
    """`task train molecules` takes the data as `molecules train` does (the molecule config's
    vocabulary, priors and node counts come from the data): it trains, resumes, samples; a
    missing "data", an unknown setting and other data on --resume are one line each."""
    smiles = tmp_path / "m.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "CC(=O)O", "C1CC1", "CCOC", "OCCO"] * 5) + "\n")
    run = tmp_path / "run"
    config = json.dumps({"data": str(smiles), "properties": "qed", "property_bins": 2,
                         "process": "uniform"})  # fmt: skip
    base = ["task", "train", "molecules", "--out", str(run), "--config", config, "--batch-size",
            "4", "--sizes", '{"num_layers": 1}', "--eval-every", "0", "--no-progress"]  # fmt: skip
    assert main([*base, "--steps", "2"]) == 0
    saved = json.loads((run / "task.json").read_text())
    assert saved["dataset"] == str(smiles.resolve()) and saved["properties"] == ["qed"]
    assert saved["process"] == "uniform" and len(saved["property_edges"][0]) == 1
    capsys.readouterr()
    assert main([*base, "--steps", "3", "--resume"]) == 0
    assert "property_bins is not checked" in capsys.readouterr().err
    assert main(["task", "sample", str(run), "-n", "2", "--steps", "3"]) == 0

    def refused(args, needle):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err

    other = json.dumps({"data": "qm9"})
    refused(["task", "train", "molecules", "--out", str(run), "--config", other, "--resume",
             "--steps", "4"], "differs from the run's")  # fmt: skip
    refused(["task", "train", "molecules", "--out", str(tmp_path / "r2")], "made from data")
    refused(["task", "train", "molecules", "--out", str(tmp_path / "r2"), "--config",
             json.dumps({"data": str(smiles), "layers": 2})], "unknown molecule setting")  # fmt: skip
