"""One file is one file: a newcomer's sampler, process, objective or denoiser, defined in a
file of its own and named with ``--import``, reaches the commands of text, pixels, molecules
and any task, with no edit anywhere else (a denoiser's own checks:
tests/conformance/test_denoisers.py)."""

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
import json, os

from discdiff.objectives import OBJECTIVES, Objective, register_objective

elbo = OBJECTIVES.get("elbo")


def half(process, *args, **kwargs):
    """Half the ELBO: a newcomer's objective (trivial on purpose, its use is checked: each
    call notes its fields in $HALF_ELBO_LOG)."""
    if "HALF_ELBO_LOG" in os.environ:
        fields = sorted(process) if isinstance(process, dict) else ["one"]
        with open(os.environ["HALF_ELBO_LOG"], "a") as f:
            f.write(json.dumps(fields) + "\\n")
    return 0.5 * elbo.loss(process, *args, **kwargs)


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


def test_an_objective_from_one_file_trains_pixels_and_molecules(tmp_path, capsys, monkeypatch):
    """The same file's objective trains the pixels task (one field) and the molecule task (a
    dict of atoms and bonds): its loss is what the trainer calls, and the run records it."""
    from discdiff.objectives import OBJECTIVES

    monkeypatch.setattr(OBJECTIVES, "_items", dict(OBJECTIVES._items))
    monkeypatch.setattr(OBJECTIVES, "_names", dict(OBJECTIVES._names))
    plugin = tmp_path / "half_elbo.py"
    plugin.write_text(OBJECTIVE_PLUGIN)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("HALF_ELBO_LOG", str(log))
    use = ["--import", str(plugin), "--objective", "half-elbo"]
    px_run = tmp_path / "px_run"
    assert main(["pixels", "train", "--data", "digits", "--levels", "4", "--out", str(px_run),
                 "--steps", "2", "--layers", "1", "--d-model", "16", "--heads", "2",
                 "--batch-size", "8", "--eval-every", "0", "--no-progress", *use]) == 0  # fmt: skip
    assert json.loads((px_run / "task.json").read_text())["objective"] == "half-elbo"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["one"], ["one"]]
    smiles = tmp_path / "m.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "CC(=O)O", "C1CC1", "CCOC", "OCCO"] * 5) + "\n")
    mol_run = tmp_path / "mol_run"
    assert main(["molecules", "train", "--data", str(smiles), "--out", str(mol_run),
                 "--steps", "2", "--layers", "1", "--batch-size", "4", "--eval-every", "0",
                 "--no-progress", *use]) == 0  # fmt: skip
    assert json.loads((mol_run / "task.json").read_text())["objective"] == "half-elbo"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[2:] == [["atoms", "bonds"], ["atoms", "bonds"]]
    assert main(["molecules", "train", "--data", str(smiles), "--out", str(tmp_path / "m2"),
                 "--steps", "1", "--ce-weight", "0.5", *use]) == 2  # fmt: skip
    assert "adds no x_0 cross-entropy" in capsys.readouterr().err


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


DENOISER_PLUGIN = '''
import dataclasses

import torch
from torch import nn

from discdiff.nn import register_denoiser


@dataclasses.dataclass
class TinyConfig:
    num_states: int
    num_classes: int
    max_len: int
    width: int = 16

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


class Tiny(nn.Module):
    """Each position from its own id, its place, the time and the mean of the sequence."""

    config_class = TinyConfig

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.num_states, config.width)
        self.place = nn.Parameter(torch.zeros(config.max_len, config.width))
        self.time = nn.Linear(1, config.width)
        self.out = nn.Linear(config.width, config.num_classes)

    def forward(self, x_t, t, cond=None):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1).expand(x_t.shape[0], 1)
        h = self.embed(x_t) + self.place[: x_t.shape[1]] + self.time(t)[:, None]
        return self.out(torch.tanh(h + h.mean(1, keepdim=True)))


@dataclasses.dataclass
class TinyGraphConfig:
    atom_num_states: int
    atom_num_classes: int
    bond_num_states: int
    bond_num_classes: int
    max_nodes: int
    width: int = 16

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


class TinyGraph(nn.Module):
    """Atoms and bonds from their own ids and the molecule's mean atom."""

    config_class = TinyGraphConfig

    def __init__(self, config):
        super().__init__()
        self.config = config
        w = config.width
        self.atoms = nn.Embedding(config.atom_num_states, w)
        self.bonds = nn.Embedding(config.bond_num_states, w)
        self.atom_out = nn.Linear(w, config.atom_num_classes)
        self.bond_out = nn.Linear(w, config.bond_num_classes)

    def forward(self, x_t, t, cond=None, *, node_mask=None):
        a, b = self.atoms(x_t["atoms"]), self.bonds(x_t["bonds"])
        g = a.mean(1, keepdim=True)
        return {"atoms": self.atom_out(torch.tanh(a + g)),
                "bonds": self.bond_out(torch.tanh(b + g))}


register_denoiser("tiny", Tiny, replace=True)
register_denoiser("tiny-graph", TinyGraph, replace=True)
'''


def test_a_denoiser_from_one_file_reaches_every_task(tmp_path, capsys):
    """A denoiser defined in a file of its own, named with --import and --denoiser, trains,
    resumes and samples in text, pixels, molecules and the generic task commands: the task
    gives its config the state counts and lengths; the run records the type."""
    plugin = tmp_path / "tiny_denoiser.py"
    plugin.write_text(DENOISER_PLUGIN)
    imp = ["--import", str(plugin)]

    def saved_type(run) -> str:
        return json.loads((run / "config.json").read_text())["model"]["denoiser"]["type"]

    corpus = tiny_corpus(tmp_path)
    text_run = tmp_path / "text_run"
    text = ["text", "train", str(corpus), "--out", str(text_run), "--seq-len", "16",
            "--batch-size", "4", "--eval-every", "0", "--no-progress", *imp]  # fmt: skip
    assert main([*text, "--steps", "2", "--denoiser", "tiny"]) == 0
    assert saved_type(text_run) == "tiny"
    assert main([*text, "--steps", "3", "--resume"]) == 0  # its own denoiser, from the run
    assert main(["text", "sample", str(text_run), "-n", "1", "--steps", "3", *imp]) == 0
    assert main(["text", "eval", str(text_run), "--max-tokens", "64", *imp]) == 0
    assert main(["task", "sample", str(text_run), "-n", "1", "--steps", "3", *imp]) == 0

    px_run = tmp_path / "px_run"
    px = ["pixels", "train", "--data", "digits", "--levels", "4", "--out", str(px_run),
          "--batch-size", "8", "--no-progress", *imp]  # fmt: skip
    assert main([*px, "--steps", "2", "--denoiser", "tiny"]) == 0
    assert saved_type(px_run) == "tiny"
    assert main([*px, "--steps", "3", "--resume"]) == 0
    assert main(["pixels", "sample", str(px_run), "-n", "2", "--steps", "3", "--out",
                 str(tmp_path / "g.png"), *imp]) == 0  # fmt: skip

    smiles = tmp_path / "m.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "CC(=O)O", "C1CC1", "CCOC", "OCCO"] * 5) + "\n")
    mol_run = tmp_path / "mol_run"
    mol = ["molecules", "train", "--data", str(smiles), "--out", str(mol_run), "--batch-size",
           "4", "--eval-every", "0", "--no-progress", *imp]  # fmt: skip
    assert main([*mol, "--steps", "2", "--denoiser", "tiny-graph"]) == 0
    assert saved_type(mol_run) == "tiny-graph"
    assert main([*mol, "--steps", "3", "--resume"]) == 0
    assert main(["molecules", "sample", "--checkpoint", str(mol_run), "-n", "2", "--steps", "3", "--no-novelty",
                 "--no-reject", "--out", str(tmp_path / "m_out.smi"), *imp]) == 0  # fmt: skip

    task_run = tmp_path / "task_run"
    config = json.dumps({"corpus": str(corpus), "seq_len": 16})
    assert main(["task", "train", "text", "--config", config, "--out", str(task_run),
                 "--denoiser", "tiny", "--sizes", '{"width": 8}', "--steps", "2",
                 "--eval-every", "0", "--no-progress", *imp]) == 0  # fmt: skip
    saved = json.loads((task_run / "config.json").read_text())["model"]["denoiser"]
    assert saved == {
        "type": "tiny",
        "config": {
            "num_states": saved["config"]["num_states"],
            "num_classes": saved["config"]["num_classes"],
            "max_len": 16,
            "width": 8,
        },
    }
    capsys.readouterr()


def test_a_denoiser_that_cannot_serve_the_task_is_one_line(tmp_path, capsys):
    """A size the denoiser lacks, a field the task cannot give, a changed --denoiser on
    --resume and --denoiser beside --autoregressive: each one line naming it, exit 2."""
    plugin = tmp_path / "tiny_denoiser.py"
    plugin.write_text(DENOISER_PLUGIN)
    corpus = tiny_corpus(tmp_path)
    run = tmp_path / "run"
    base = ["text", "train", str(corpus), "--out", str(run), "--seq-len", "16", "--steps",
            "1", "--batch-size", "4", "--eval-every", "0", "--no-progress", "--import",
            str(plugin)]  # fmt: skip

    def refused(args, needle):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1, err

    refused([*base, "--denoiser", "tiny", "--heads", "2"], "has no size 'num_heads'")
    refused([*base, "--denoiser", "tiny-graph"], "needs atom_num_states")
    refused([*base, "--denoiser", "nope"], "unknown denoiser 'nope'")
    refused(["task", "train", "text", "--config", json.dumps({"corpus": str(corpus)}), "--out",
             str(run), "--sizes", '{"num_states": 3}', "--import", str(plugin)],
            "num_states: the text task sets these itself")  # fmt: skip
    refused([*base, "--denoiser", "tiny", "--autoregressive"], "--denoiser does not apply")
    refused([*base, "--denoiser", "tiny", "--self-conditioning"], "no self_conditioning field")
    assert main([*base, "--denoiser", "tiny"]) == 0
    refused([*base, "--resume", "--denoiser", "transformer"], "differs from the run's 'tiny'")
