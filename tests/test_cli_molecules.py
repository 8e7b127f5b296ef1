"""`discdiff molecules sample | train | eval` end to end, with the shipped QM9 checkpoint and
tiny training runs; bad input exits 2 with one line."""

from __future__ import annotations

import csv
import json
import re

import pytest
from PIL import Image
from rdkit import Chem
from typer.testing import CliRunner

from discdiff.cli.main import app, main
from discdiff.tasks.molecules import shipped_checkpoint
from discdiff.tasks.runs import from_pretrained
from discdiff.training import latest_checkpoint

runner = CliRunner()
TINY_SMILES = ["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O", "C1CC1N", "COC=O"]
TINY_MODEL = ["--layers", "1", "--node-dim", "8", "--edge-dim", "4", "--heads", "2"]


def run_ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_shipped_checkpoint_loads() -> None:
    task, model = from_pretrained("qm9")
    assert task.config.dataset == "qm9" and task.config.max_nodes == 9
    assert not model.training


def test_sample_writes_every_format_and_a_grid(tmp_path) -> None:
    n = 6
    sdf, smi, table, png = (tmp_path / f"m.{e}" for e in ("sdf", "smi", "csv", "png"))
    args = ["molecules", "sample", "-n", str(n), "--steps", "3", "--seed", "1", "--no-novelty"]
    out = run_ok([*args, "--out", str(sdf), "--grid", str(png)])
    assert "validity" in out and "uniqueness" in out
    assert len(list(Chem.SDMolSupplier(str(sdf), sanitize=False))) == n
    assert Image.open(png).size[0] > 0
    run_ok([*args, "--out", str(smi)])
    assert len(smi.read_text().splitlines()) == n
    run_ok([*args, "--out", str(table)])
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == n
    assert {"index", "smiles", "status", "valid", "qed", "logp", "mw", "pains"} <= set(rows[0])
    # same seed -> same molecules, whatever the output format
    smiles_sdf = [m.GetProp("valid") for m in Chem.SDMolSupplier(str(sdf), sanitize=False)]
    assert smiles_sdf == [r["valid"] for r in rows]
    run_ok([*args, "--out", str(smi), "--no-motif-guard"])  # the valence guard alone
    assert len(smi.read_text().splitlines()) == n
    # a sampler's own settings reach it (the DFM Euler solver's corrector on the mixing paths)
    out = run_ok([*args, "--out", str(smi), "--no-valence-guard", "--no-reject"])  # plain
    lines = smi.read_text().splitlines()
    assert len(lines) <= n and not any("None" in line for line in lines)  # invalid: left out
    assert all(line.split("\t")[1].startswith("sample_") for line in lines)
    if len(lines) < n:
        assert f"left {n - len(lines)} invalid sample(s) out" in out
    euler = [*args, "--sampler", "dfm-euler", "--sampler-opt", "div_free=0.5"]
    # the valence guard is a constraint: a sampler that takes none refuses it, in one line
    result = runner.invoke(app, [*euler, "--out", str(tmp_path / "g.csv")])
    assert result.exit_code != 0 and "cannot apply the valence guard" in str(result.exception)
    assert main([*euler, "--out", str(tmp_path / "g.csv")]) == 2
    run_ok([*euler, "--no-valence-guard", "--out", str(csv_path := tmp_path / "e.csv")])
    assert len(list(csv.DictReader(csv_path.open()))) == n


def test_sample_rejects_by_default_and_eval_does_not(tmp_path) -> None:
    """`sample` draws flawed samples again and says how many; `--no-reject` keeps every first
    draw (the same molecules as the rejecting run wherever that one's first draw passed)."""
    smi = tmp_path / "m.smi"
    args = ["molecules", "sample", "-n", "40", "--steps", "4", "--no-novelty", "--out", str(smi)]
    out = run_ok(args)
    found = re.search(r"rejected and drawn again: (\d+) \(", out)
    assert found, out  # 4 steps: some first draws are flawed (seed 0)
    kept = smi.read_text().splitlines()
    out = run_ok([*args, "--no-reject"])
    assert "rejected" not in out
    first = smi.read_text().splitlines()
    assert len(kept) == len(first) == 40
    differ = sum(a != b for a, b in zip(kept, first, strict=True))
    assert 1 <= differ <= int(found.group(1))
    model = tmp_path / "qm9_model.safetensors"
    model.write_bytes(shipped_checkpoint().read_bytes())
    model.with_name("qm9_config.json").write_bytes(
        shipped_checkpoint().with_name("qm9_config.json").read_bytes()
    )
    ev = ["molecules", "eval", str(model), "-n", "40", "--steps", "4", "--no-novelty"]
    assert "rejected" not in run_ok(ev)
    assert "rejected and drawn again:" in run_ok([*ev, "--reject"])


def test_sample_temperature_is_the_samplers(tmp_path) -> None:
    """--temperature, the flag of every task, reaches the molecule sampler: the same as the
    --sampler-opt setting, and another temperature other molecules."""
    base = ["molecules", "sample", "-n", "12", "--steps", "4", "--no-novelty", "--no-progress"]
    texts = []
    for extra in (["--temperature", "1.5"], ["--sampler-opt", "temperature=1.5"], []):
        out = tmp_path / f"t{len(texts)}.smi"
        run_ok([*base, "--out", str(out), *extra])
        texts.append(out.read_text())
    assert texts[0] == texts[1] != texts[2]


def test_sample_unique_and_novel(tmp_path, capsys) -> None:
    """--unique --novel: distinct molecules, none of them in QM9 (any split), each count shown."""
    from discdiff.chem.metrics import canonical_set
    from discdiff.tasks.molecules.data import novelty_sets

    smi = tmp_path / "m.smi"
    args = ["molecules", "sample", "-n", "30", "--steps", "4", "--out", str(smi)]
    out = run_ok([*args, "--unique", "--novel"])
    found = re.search(r"rejected and drawn again: \d+ \(([^)]*)\)", out)
    assert found and "known" in found.group(1), out
    lines = [line.split("\t")[0] for line in smi.read_text().splitlines()]
    _, whole, _ = novelty_sets("qm9")
    kept = int(re.search(r"(\d+) kept with a flaw", out).group(1))
    assert len(set(lines)) >= len(lines) - kept
    assert len(canonical_set(lines) & whole) <= kept
    code = main([*args, "--no-reject", "--unique"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--unique and --novel work through --reject" in err
    code = main([*args, "--reject-rounds", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--reject-rounds must be >= 1" in err


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["-n", "0"], "-n must be >= 1"),
        (["--out", "mols.xyz"], "unknown extension"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--checkpoint", "missing_model.safetensors"], "does not exist"),
        (["missing_model.safetensors"], "does not exist"),
        (["qm9", "--checkpoint", "qm9"], "give the model once"),
        (["--grid", "grid.jpg"], "expected a .png"),
        (["--time-power", "0"], "grid_power must be a finite number > 0"),
        (["--target", "qed=0.7"], "the model is conditioned on none"),
        (["--guidance", "2"], "--guidance needs --target"),
        (["--scaffold", "CS"], "--scaffold 'CS'"),
        (["--scaffold", "C1CCCCCCCCC1"], "more than the model's max_nodes 9"),
        (["--scaffold", "CCCCCCCCC", "--num-atoms", "5"], "--num-atoms 5 must lie in [9, 9]"),
        (["--hydrogens"], "need an .sdf --out"),
        (["--temperature", "1.2", "--sampler-opt", "temperature=1.1"], "give the temperature once"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--device", "cuda:7"], "cuda"),
    ],
)
def test_sample_bad_input_exits_2(tmp_path, capsys, monkeypatch, extra, fragment) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["molecules", "sample", "-n", "2", "--steps", "2", "--out", "m.smi", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and fragment in err and len(err.splitlines()) == 1


def test_cli_time_power_default_is_the_task_default() -> None:
    import inspect

    from discdiff.chem.rejection import REJECT_ROUNDS
    from discdiff.cli import molecules as cli_molecules
    from discdiff.tasks.molecules import GRID_POWER, SAMPLE_STEPS

    for fn in (cli_molecules.sample, cli_molecules.evaluate):
        assert inspect.signature(fn).parameters["time_power"].default == GRID_POWER
        assert inspect.signature(fn).parameters["steps"].default == SAMPLE_STEPS
        assert inspect.signature(fn).parameters["reject_rounds"].default == REJECT_ROUNDS


def test_sample_corrupt_checkpoint_exits_2(tmp_path, capsys) -> None:
    weights = tmp_path / "bad_model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    cfg = json.loads(shipped_checkpoint().with_name("qm9_config.json").read_text())
    (tmp_path / "bad_config.json").write_text(json.dumps(cfg))
    args = ["molecules", "sample", "-n", "2", "--out", str(tmp_path / "m.smi")]
    code = main([*args, "--checkpoint", str(weights)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot read checkpoint weights" in err and len(err.splitlines()) == 1
    (tmp_path / "bad_config.json").write_text("{not json")
    code = main([*args, "--checkpoint", str(weights)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot read checkpoint config" in err


def test_train_resume_and_eval(tmp_path) -> None:
    data = tmp_path / "tiny.smi"
    data.write_text("\n".join(TINY_SMILES) + "\n")
    run = tmp_path / "run"
    base = ["molecules", "train", "--data", str(data), "--out", str(run), "--batch-size", "4"]
    base += [*TINY_MODEL, "--ckpt-every", "2", "--eval-every", "2", "--no-progress"]
    out = run_ok([*base, "--steps", "2"])
    # a tenth of a SMILES file (at least one) is held out of training (issue 11: it was the
    # first 10% of the training molecules themselves)
    assert "7 training graphs (0 skipped), 1 held out" in out
    assert latest_checkpoint(run).name.endswith("2")
    code = main([*base, "--steps", "2"])  # refuses to overwrite without --resume
    assert code == 2
    out = run_ok([*base, "--steps", "4", "--resume"])
    assert "resuming" in out and "done at step 4" in out
    assert latest_checkpoint(run).name.endswith("4")
    out = run_ok(["molecules", "eval", str(run), "-n", "5", "--steps", "2"])
    assert "validity" in out and "novelty" in out and "run" in out
    smi = tmp_path / "s.smi"
    run_ok(
        [
            "molecules",
            "sample",
            "-n",
            "3",
            "--steps",
            "2",
            "--checkpoint",
            str(run),
            "--out",
            str(smi),
        ]
    )
    assert len(smi.read_text().splitlines()) == 3
    weights = tmp_path / "tiny_model.safetensors"
    run_ok(["molecules", "export", str(run), "--out", str(weights)])
    assert (tmp_path / "tiny_config.json").is_file()
    task, model = from_pretrained(weights, expect="molecules")
    assert task.config.dataset == str(data.resolve()) and task.config.max_nodes == 6


def test_train_bad_data_exits_2(tmp_path, capsys) -> None:
    code = main(
        ["molecules", "train", "--data", str(tmp_path / "nope.smi"), "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not exist" in err


def test_property_conditioned_training_sampling_and_fine_tuning(tmp_path, capsys) -> None:
    data = tmp_path / "tiny.smi"
    data.write_text("\n".join(TINY_SMILES) + "\n")
    run = tmp_path / "cond"
    base = ["molecules", "train", "--data", str(data), "--out", str(run), "--batch-size", "4"]
    base += [*TINY_MODEL, "--ckpt-every", "2", "--eval-every", "2", "--no-progress"]
    out = run_ok([*base, "--steps", "2", "--properties", "qed,logp", "--property-bins", "2"])
    assert "computing qed, logp of 8 molecules" in out
    out = run_ok([*base, "--steps", "3", "--resume"])  # the condition is part of the run
    assert "done at step 3" in out
    smi = tmp_path / "q.smi"
    args = ["molecules", "sample", "-n", "4", "--steps", "2", "--checkpoint", str(run)]
    out = run_ok([*args, "--out", str(smi), "--target", "qed=0.5", "--guidance", "2"])
    assert "qed: target 0.5, samples' mean" in out
    out = run_ok(["molecules", "eval", str(run), "-n", "3", "--steps", "2", "--target", "logp=1"])
    assert "logp: target 1" in out
    code = main([*args, "--out", str(smi), "--target", "tpsa=3"])
    assert code == 2 and "conditioned on qed, logp" in capsys.readouterr().err
    # --init takes the trained model's processes and sizes; the data must share its atoms
    code = main(["molecules", "train", "--data", str(data), "--out", str(tmp_path / "ft"),
                 "--init", "shipped", "--properties", "qed", "--steps", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--init: the model's atoms" in err and len(err.strip().splitlines()) == 1
    ft = tmp_path / "ft2"
    out = run_ok(["molecules", "train", "--data", "qm9", "--max-train", "40", "--out", str(ft),
                  "--init", "shipped", "--properties", "qed", "--steps", "2", "--batch-size", "8",
                  "--eval-every", "0", "--no-progress"])  # fmt: skip
    assert "initialised from shipped (1 new tensors)" in out and "431,116 parameters" in out


def test_aromatic_fine_tuning_from_the_kekulized_model(tmp_path, capsys) -> None:
    """--aromatic --init shipped grows the shipped model's bonds by an aromatic class (priors
    from the new data); a model with that class cannot start a kekulized run."""
    from discdiff.chem.graph import BOND_TYPES

    ft = tmp_path / "arom"
    out = run_ok(["molecules", "train", "--data", "qm9", "--max-train", "60", "--out", str(ft),
                  "--init", "shipped", "--aromatic", "--steps", "2", "--batch-size", "8",
                  "--eval-every", "0", "--no-progress", "--seed", "1"])  # fmt: skip
    assert "initialised from shipped" in out and "430,093 parameters" in out
    task, model = from_pretrained(ft, expect="molecules")
    assert not task.vocab.kekulize and task.vocab.num_bond_classes == 5
    assert BOND_TYPES[4] == Chem.BondType.AROMATIC and task.config.bond_prior[4] > 0.01
    smi = tmp_path / "a.smi"
    run_ok(["molecules", "sample", "-n", "6", "--steps", "3", "--checkpoint", str(ft),
            "--out", str(smi), "--seed", "0"])  # fmt: skip
    assert smi.read_text().strip()
    code = main(["molecules", "train", "--data", "qm9", "--max-train", "60",
                 "--out", str(tmp_path / "back"), "--init", str(ft), "--steps", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "train it with --aromatic" in err and len(err.splitlines()) == 1


def test_train_with_a_time_budget_plans_its_steps_and_resume_keeps_them(tmp_path, capsys) -> None:
    """--time-budget: the run fixes its own step count (recorded in config.json) and ends in
    time; --resume with the same budget keeps the plan; a NaN budget is one line, exit 2."""
    data = tmp_path / "tiny.smi"
    data.write_text("\n".join(TINY_SMILES) + "\n")
    run = tmp_path / "run"
    base = ["molecules", "train", "--data", str(data), "--out", str(run), "--batch-size", "4"]
    base += [*TINY_MODEL, "--log-every", "2", "--eval-every", "0", "--no-progress"]
    out = run_ok([*base, "--time-budget", "2", "--warmup", "3"])
    steps = json.loads((run / "config.json").read_text())["train"]["steps"]
    assert 10 < steps < 10**9 and f"done at step {steps}" in out
    out = run_ok([*base, "--resume"])  # the budget is spent: nothing more to train
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == steps
    for bad in ("nan", "0", "-3"):
        code = main([*base[:5], str(tmp_path / f"r{bad}"), *base[6:], "--time-budget", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "--time-budget" in err[0], err


def test_cuda_graphs_off_cuda_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    out = tmp_path / "m.smi"
    code = main(["molecules", "sample", "-n", "2", "--steps", "2", "--device", "cpu",
                 "--cuda-graphs", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--cuda-graphs needs" in err[0], err
    assert not out.exists()
