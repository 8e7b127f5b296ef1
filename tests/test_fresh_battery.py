"""A fresh battery of round three's families (sizes, misleading messages), run after its
fixes: each case here failed before its fix (an allocator's traceback, a kill by the kernel, a
two-minute hang, or a message that told another story) and is one line and exit 2 now."""

from __future__ import annotations

import pytest

from discdiff.cli.main import main
from tests.test_hostile_round3 import one_line_error
from tests.test_one_file import TINY_TEXT, tiny_corpus


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("battery_text")
    run = folder / "run"
    assert main(["text", "train", str(tiny_corpus(folder)), "--out", str(run), *TINY_TEXT]) == 0
    return run


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("battery") / "px"
    assert main(["pixels", "train", "--data", "digits", "--levels", "4", "--out", str(run),
                 "--steps", "1", "--layers", "1", "--d-model", "16", "--heads", "2",
                 "--batch-size", "8", "--no-progress"]) == 0  # fmt: skip
    return run


@pytest.fixture()
def little_memory(monkeypatch):
    """4 GiB available, whatever the machine has: the refusals do not depend on it."""
    from discdiff.tasks import probes

    monkeypatch.setattr(probes, "available_memory", lambda: 4 * 2**30)


def test_a_billion_samples_are_refused_up_front_by_every_sampling_command(
    text_run,
    pixel_run,
    tmp_path,
    capsys,
    little_memory,
):
    """pixels sample ran for minutes, molecules sample was killed by the kernel and task sample
    of a text run raised the allocator's RuntimeError: now the samples' size is checked first,
    in the library's sample (so `task sample` and the API are covered too)."""
    import resource

    run = text_run
    big = "1000000000"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    one_line_error(capsys, ["pixels", "sample", str(pixel_run), "-n", big, "--out",
                            str(tmp_path / "g.png")], "1,000,000,000 images", "ask for fewer")  # fmt: skip
    one_line_error(capsys, ["molecules", "sample", "-n", big, "--no-novelty", "--out",
                            str(tmp_path / "m.smi")], "1,000,000,000 molecules")  # fmt: skip
    one_line_error(capsys, ["task", "sample", str(run), "-n", big], "1,000,000,000 sequences")
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "m.smi").exists()
    # refused before any allocation of their size (pixels' labels alone were 8 GB, then 16)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 2**20


def test_folders_and_files_in_the_wrong_place_are_named_for_what_they_are(
    text_run,
    tmp_path,
    capsys,
):
    """A run dir given as a corpus read as 'no *.txt files under folder'; a folder or /dev/null
    as --data as 'SMILES file does not exist'; a file as a run's --out as '[Errno 17] File
    exists'."""
    run = text_run
    one_line_error(capsys, ["text", "train", str(run), "--out", str(tmp_path / "r")],
                   "is a run dir, not text", "--resume")  # fmt: skip
    one_line_error(capsys, ["text", "prepare", str(run), "--out", str(tmp_path / "d")],
                   "is a run dir, not text")  # fmt: skip
    one_line_error(capsys, ["molecules", "train", "--data", str(tmp_path), "--out",
                            str(tmp_path / "r")], "is a folder")  # fmt: skip
    one_line_error(capsys, ["molecules", "train", "--data", "/dev/null", "--out",
                            str(tmp_path / "r")], "is not a regular file")  # fmt: skip
    afile = tiny_corpus(tmp_path)
    for argv in (["pixels", "train", "--data", "digits"], ["text", "train", str(afile)],
                 ["molecules", "train", "--data", "qm9"]):  # fmt: skip
        one_line_error(
            capsys, [*argv, "--out", str(afile), "--steps", "1"], "is a file, not a folder"
        )


def test_an_export_never_lands_on_a_task_file_of_the_run(tmp_path, capsys):
    """`task export MOLRUN --out MOLRUN/train.safetensors` wrote the weights over the run's
    training graphs (the guard knew the spine's files, not the task's): the checkpoints'
    manifests name the task's files, and the guard refuses them too."""
    smiles = tmp_path / "m.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "CC(=O)O", "C1CC1", "CCOC", "OCCO"] * 5) + "\n")
    run = tmp_path / "mol"
    assert main(["molecules", "train", "--data", str(smiles), "--out", str(run), "--steps", "1",
                 "--layers", "1", "--batch-size", "4", "--eval-every", "0", "--no-progress"]) == 0  # fmt: skip
    before = (run / "train.safetensors").read_bytes()
    for name in ("train.safetensors", "val.safetensors"):
        one_line_error(capsys, ["task", "export", str(run), "--out", str(run / name)],
                       f"would write over {name!r}")  # fmt: skip
    assert (run / "train.safetensors").read_bytes() == before
    assert main(["task", "export", str(run), "--out", str(tmp_path / "w.safetensors")]) == 0


def test_a_size_the_default_denoiser_lacks_is_one_line(text_run, tmp_path, capsys):
    """`task train text --sizes '{"bogus": 1}'` was a TypeError traceback (exit 1)."""
    corpus = tiny_corpus(tmp_path)
    one_line_error(capsys, ["task", "train", "text", "--config", f'{{"corpus": "{corpus}"}}',
                            "--sizes", '{"bogus": 1}', "--out", str(tmp_path / "r")],
                   "denoiser 'transformer' has no size 'bogus'")  # fmt: skip
