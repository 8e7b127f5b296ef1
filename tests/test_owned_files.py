"""No command writes over a file of a run dir or a prepared data dir it did not make, and a
run's --out is a folder of its own (issue: a sample once replaced a checkpoint's weights)."""

from __future__ import annotations

import pytest

from discdiff.cli._spine import check_run_folder, folder_kind, refuse_owned
from discdiff.cli.main import main
from tests.test_one_file import TINY_TEXT, tiny_corpus


def test_folders_are_known_by_their_files(tmp_path):
    run, data, plain = tmp_path / "run", tmp_path / "data", tmp_path / "plain"
    for d in (run / "checkpoints", data, plain / "checkpoints"):
        d.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (data / "meta.json").write_text("{}")
    (data / "train.bin").write_bytes(b"")
    assert folder_kind(run) == "run dir" and folder_kind(data) == "prepared data dir"
    assert folder_kind(plain) is None  # a folder of one's own named checkpoints is not a run
    refuse_owned(run / "samples.txt", "--out")  # a new file beside the run's is fine
    refuse_owned(data / "notes.txt", "--out")
    for target in (run / "checkpoints" / "step_1" / "model.safetensors", run / "config.json",
                   data / "train.bin", data / "meta.json"):  # fmt: skip
        with pytest.raises(ValueError, match="would write over"):
            refuse_owned(target, "--out")
    refuse_owned(data / "meta.json", "--out", own="prepared data dir")  # prepare remakes its own
    link = tmp_path / "link.txt"
    link.symlink_to(run / "config.json")
    with pytest.raises(ValueError, match="'config.json' of the run dir"):
        refuse_owned(link, "--out")  # through a symlink too
    for out, match in ((data, "is a prepared data dir"), (run / "sub", "lies inside the run")):
        with pytest.raises(ValueError, match=match):
            check_run_folder(out)
    check_run_folder(run)  # a run's own folder: resumable
    with pytest.raises(ValueError, match="not the current directory"):
        check_run_folder(type(tmp_path)(""))


def test_commands_refuse_to_write_over_a_run_or_its_data(tmp_path, capsys):
    corpus = tiny_corpus(tmp_path)
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["text", "prepare", str(corpus), "--out", str(data), "--no-progress"]) == 0
    assert main(["text", "train", str(data), "--out", str(run), *TINY_TEXT]) == 0
    weights = next((run / "checkpoints").glob("step_*/model.safetensors"))
    before = weights.read_bytes(), (data / "train.bin").read_bytes()
    capsys.readouterr()
    cases = [
        ["text", "sample", str(run), "-n", "1", "--length", "8", "--out", str(weights)],
        ["text", "sample", str(run), "-n", "1", "--length", "8", "--out", str(data / "train.bin")],
        ["task", "export", str(run), "--out", str(weights.with_name("x.safetensors"))],
        ["text", "train", str(corpus), "--out", str(data), *TINY_TEXT],
        ["text", "train", str(corpus), "--out", str(run / "inner"), *TINY_TEXT],
        ["text", "prepare", str(corpus), "--out", str(run), "--no-progress"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("run dir" in err or "data dir" in err), err
    assert (weights.read_bytes(), (data / "train.bin").read_bytes()) == before
    assert not weights.with_name("x.safetensors").exists() and not (run / "inner").exists()
    # what the commands make for themselves still works: a re-prepare, samples beside the run
    assert main(["text", "prepare", str(corpus), "--out", str(data), "--no-progress"]) == 0
    out = run / "samples.txt"
    assert main(["text", "sample", str(run), "-n", "1", "--length", "8", "--out", str(out)]) == 0
    assert out.is_file()
