"""One file is one file: a newcomer's sampler, process or objective, defined in a file of its
own and named with ``--import``, reaches the commands of text, pixels, molecules and any task,
with no edit anywhere else (a denoiser: tests/conformance/test_denoisers.py and
examples/plugin)."""

from __future__ import annotations

import json
import random

from discdiff.cli.main import main

#: a text run that trains in a second
TINY_TEXT = ["--seq-len", "16", "--layers", "1", "--d-model", "16", "--heads", "2",
             "--cond-dim", "8", "--steps", "2", "--batch-size", "4", "--eval-every", "0",
             "--no-progress"]  # fmt: skip


def tiny_corpus(folder):
    """Sixty lines of eight words (seeded)."""
    words = "the king and queen of england went to war with france in spring".split()
    rng = random.Random(0)
    path = folder / "tiny.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(60)))
    return path


PLUGIN = '''
import json, os
from discdiff.samplers import AncestralSampler, register_sampler


@register_sampler("logged-ancestral", replace=True)
class LoggedAncestral(AncestralSampler):
    """Ancestral sampling that notes each use in the file $LOGGED_SAMPLER."""

    def sample(self, *args, **kwargs):
        with open(os.environ["LOGGED_SAMPLER"], "a") as f:
            f.write(json.dumps({"steps": self.steps}) + "\\n")
        return super().sample(*args, **kwargs)
'''


def test_a_sampler_from_one_file_reaches_every_task(tmp_path, monkeypatch, capsys):
    plugin = tmp_path / "logged_sampler.py"
    plugin.write_text(PLUGIN)
    log = tmp_path / "uses.jsonl"
    monkeypatch.setenv("LOGGED_SAMPLER", str(log))
    use = ["--import", str(plugin), "--sampler", "logged-ancestral", "--steps", "3"]

    def uses() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    # molecules (the shipped model; the valence guard is a constraint the newcomer's subclass
    # of the ancestral sampler applies, with no line of its own)
    out = tmp_path / "m.smi"
    assert main(["molecules", "sample", "-n", "2", "--no-novelty", "--no-reject",
                 "--out", str(out), *use]) == 0  # fmt: skip
    assert uses() == 1 and out.is_file()
    # text: a tiny run, then its samples
    corpus = tiny_corpus(tmp_path)
    text_run = tmp_path / "text_run"
    assert main(["text", "train", str(corpus), "--out", str(text_run), *TINY_TEXT]) == 0
    assert main(["text", "sample", str(text_run), "-n", "1", "--length", "16", *use]) == 0
    assert uses() == 2
    # pixels
    px_run = tmp_path / "px_run"
    assert main(["pixels", "train", "--data", "digits", "--levels", "4", "--out", str(px_run),
                 "--steps", "2", "--layers", "1", "--d-model", "16", "--heads", "2",
                 "--batch-size", "8", "--no-progress"]) == 0  # fmt: skip
    assert main(["pixels", "sample", str(px_run), "-n", "2", "--out",
                 str(tmp_path / "g.png"), *use]) == 0  # fmt: skip
    assert uses() == 3
    # any task through the spine (the text run again)
    assert main(["task", "sample", str(text_run), "-n", "1", *use]) == 0
    assert uses() == 4
    assert all(json.loads(line)["steps"] == 3 for line in log.read_text().splitlines())
    capsys.readouterr()


def test_a_package_folder_imports_its_new_files_by_itself(tmp_path, monkeypatch):
    """The mechanism samplers/, processes/, nn/ and tasks/ use: every module of the folder is
    imported with the package, so a new file's registration needs no edit of __init__.py; a
    broken file is a warning naming it, and the rest still load."""
    import sys

    import pytest

    from discdiff.samplers.registry import SAMPLERS

    monkeypatch.setattr(SAMPLERS, "_items", dict(SAMPLERS._items))
    pkg = tmp_path / "droppkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from discdiff.registry import import_package_modules\n"
        "import_package_modules(__name__, __path__)\n"
    )
    (pkg / "fresh.py").write_text(
        "from discdiff.samplers import AncestralSampler, register_sampler\n"
        "@register_sampler('dropped-in')\n"
        "class DroppedIn(AncestralSampler):\n"
        "    pass\n"
    )
    (pkg / "broken.py").write_text("raise RuntimeError('half-written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="droppkg.broken failed to import"):
        __import__("droppkg")
    assert "dropped-in" in SAMPLERS.names()
    for name in [m for m in sys.modules if m.startswith("droppkg")]:
        del sys.modules[name]


OBJECTIVE_PLUGIN = '''
from discdiff.objectives import OBJECTIVES, Objective, register_objective

elbo = OBJECTIVES.get("elbo")


def half(*args, **kwargs):
    """Half the ELBO: a newcomer's objective (trivial on purpose, its use is checked)."""
    return 0.5 * elbo.loss(*args, **kwargs)


register_objective("half-elbo", Objective(loss=half, note="trained on half the ELBO"),
                   replace=True)
'''


def test_an_objective_from_one_file_reaches_text_train_eval_and_task_train(
    tmp_path, capsys, monkeypatch
):
    """Objectives are registered like processes and samplers: a file that registers one makes
    it a valid --objective of `text train` and of `task train text`, and `text eval` says its
    note; no string switch anywhere knows its name."""
    import json

    from discdiff.objectives import OBJECTIVES

    monkeypatch.setattr(OBJECTIVES, "_items", dict(OBJECTIVES._items))  # this test's only
    monkeypatch.setattr(OBJECTIVES, "_names", dict(OBJECTIVES._names))
    plugin = tmp_path / "half_elbo.py"
    plugin.write_text(OBJECTIVE_PLUGIN)
    corpus = tiny_corpus(tmp_path)
    run = tmp_path / "run"
    tiny = TINY_TEXT
    assert main(["text", "train", str(corpus), "--out", str(run), "--objective", "half-elbo",
                 "--import", str(plugin), *tiny]) == 0  # fmt: skip
    assert json.loads((run / "task.json").read_text())["objective"] == "half-elbo"
    capsys.readouterr()
    assert main(["text", "eval", str(run), "--import", str(plugin), "--max-chunks", "2"]) == 0
    assert "note: trained on half the ELBO" in capsys.readouterr().out
    config = json.dumps({"corpus": str(corpus), "objective": "half-elbo", "seq_len": 16})
    sizes = json.dumps({"num_layers": 1, "d_model": 16, "num_heads": 2, "cond_dim": 8})
    assert main(["task", "train", "text", "--out", str(tmp_path / "run2"), "--config", config,
                 "--sizes", sizes, "--steps", "2", "--batch-size", "4", "--eval-every", "0",
                 "--import", str(plugin), "--no-progress"]) == 0  # fmt: skip
    OBJECTIVES.unregister("half-elbo")  # as in a process that never imported the file
    assert main(["text", "train", str(corpus), "--out", str(tmp_path / "r3"), "--objective",
                 "half-elbo", *tiny]) == 2  # one line, exit 2  # fmt: skip
    assert "objective='half-elbo' is not one of" in capsys.readouterr().err


PROCESS_PLUGIN = '''
import torch
from discdiff.processes import Marginal, register_process
from discdiff.schedules import LogLinear


@register_process("zipf", replace=True)
def zipf(num_classes, schedule=None, **options):
    """A marginal process whose limit falls as 1 / rank (a newcomer's process)."""
    w = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    return Marginal(w / w.sum(), schedule if schedule is not None else LogLinear())
'''


def test_a_process_from_one_file_reaches_every_task(tmp_path, capsys):
    """A process defined in a file of its own and named with --import trains and samples in
    text, pixels, molecules and the generic task commands, and is recorded in each run."""
    plugin = tmp_path / "zipf_process.py"
    plugin.write_text(PROCESS_PLUGIN)
    use = ["--import", str(plugin), "--process", "zipf"]
    corpus = tiny_corpus(tmp_path)
    text_run = tmp_path / "text_run"
    assert main(["text", "train", str(corpus), "--out", str(text_run), *TINY_TEXT, *use]) == 0
    assert json.loads((text_run / "task.json").read_text())["process"] == "zipf"
    assert main(["text", "sample", str(text_run), "-n", "1", "--steps", "3",
                 "--import", str(plugin)]) == 0  # fmt: skip
    px_run = tmp_path / "px_run"
    assert main(["pixels", "train", "--data", "digits", "--levels", "4", "--out", str(px_run),
                 "--steps", "2", "--layers", "1", "--d-model", "16", "--heads", "2",
                 "--batch-size", "8", "--no-progress", *use]) == 0  # fmt: skip
    assert json.loads((px_run / "task.json").read_text())["process"] == "zipf"
    assert main(["pixels", "sample", str(px_run), "-n", "2", "--steps", "3", "--out",
                 str(tmp_path / "g.png"), "--import", str(plugin)]) == 0  # fmt: skip
    smiles = tmp_path / "m.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "CC(=O)O", "C1CC1", "CCOC", "OCCO"] * 5) + "\n")
    mol_run = tmp_path / "mol_run"
    assert main(["molecules", "train", "--data", str(smiles), "--out", str(mol_run),
                 "--steps", "2", "--layers", "1", "--batch-size", "4", "--eval-every", "0",
                 "--no-progress", *use]) == 0  # fmt: skip
    assert json.loads((mol_run / "task.json").read_text())["process"] == "zipf"
    assert main(["task", "sample", str(mol_run), "-n", "2", "--steps", "3",
                 "--import", str(plugin)]) == 0  # fmt: skip
    capsys.readouterr()
