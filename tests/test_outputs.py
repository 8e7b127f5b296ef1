"""One output layer for every command: ``-`` is standard output (data alone there, messages on
stderr), special files are written through and never replaced, a symlink keeps pointing where
it pointed, regular files are replaced atomically; NaN and infinite floats are refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from discdiff.cli.main import main
from discdiff.files import is_stream, output_path, write_output

SAMPLE = ["molecules", "sample", "-n", "3", "--steps", "3", "--no-novelty", "--threads", "1"]


def test_dash_is_standard_output_with_the_data_alone(capsys):
    assert main([*SAMPLE, "--out", "-"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3 and all(line.split("\t")[1].startswith("sample_") for line in lines)
    assert "wrote 3 molecules to -" in captured.err  # messages went to stderr


def test_a_symlinked_output_keeps_its_link_and_updates_its_target(tmp_path):
    target = tmp_path / "real.smi"
    target.write_text("old\n")
    link = tmp_path / "link.smi"
    link.symlink_to(target)
    assert main([*SAMPLE, "--out", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 3


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_device_is_one_line_and_exit_2_and_stays_a_device(capsys):
    assert main([*SAMPLE, "--out", "/dev/full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write '/dev/full'"), err
    assert "No space left" in err[-1]
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_name_of_this_process_stdout_is_written_through(tmp_path):
    """`--out /dev/stdout` (here: a link to /proc/self/fd/1, as /dev/stdout is) writes the
    samples into the pipe and leaves the link a link (it once became a regular file)."""
    link = tmp_path / "stdout.smi"
    link.symlink_to("/proc/self/fd/1")
    code = "from discdiff.cli.main import main; import sys; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run(
        [sys.executable, "-c", code, *SAMPLE, "--out", str(link)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-1000:]
    assert len(res.stdout.splitlines()) == 3 and "sample_0" in res.stdout
    assert "wrote 3 molecules" in res.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_in_one_line(tmp_path, capsys, bad):
    out = tmp_path / "m.smi"
    assert main([*SAMPLE, "--temperature", bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --temperature") and "finite" in err[0]
    assert not out.exists()


def test_the_output_layer_routes_by_kind(tmp_path, capsysbinary):
    regular = tmp_path / "a.txt"
    write_output(regular, b"one\n")
    assert regular.read_bytes() == b"one\n" and not is_stream(regular)
    write_output(regular, b"two\n")  # replaced atomically: no temporary left beside it
    assert regular.read_bytes() == b"two\n" and os.listdir(tmp_path) == ["a.txt"]
    assert is_stream("-") and is_stream("/dev/null") and not is_stream(tmp_path / "new.txt")
    write_output("/dev/null", b"gone")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with output_path("-", ".txt") as tmp:
        assert tmp.suffix == ".txt"  # format-by-extension writers see the format
        tmp.write_bytes(b"to stdout\n")
    assert capsysbinary.readouterr().out == b"to stdout\n"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    write_output(fifo, b"through a pipe\n")
    assert reader.communicate(timeout=30)[0] == b"through a pipe\n"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_export_refuses_standard_output(tmp_path, capsys):
    assert main(["task", "export", str(tmp_path), "--out", "-"]) == 2
    assert "several files" in capsys.readouterr().err


def test_an_interrupted_or_exiting_command_keeps_its_exit_code(monkeypatch, capsys):
    """Ctrl-C inside a command is "interrupted" and 130 (it was exit 0 with no word: Typer
    returns the code without standalone mode), and a command's typer.Exit(n) is n."""
    import typer

    import discdiff as dd

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(dd.TASKS, "describe", interrupt)
    assert main(["task", "list"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"

    def leave():
        raise typer.Exit(3)

    monkeypatch.setattr(dd.TASKS, "describe", leave)
    assert main(["task", "list"]) == 3


def test_the_entry_point_turns_an_early_ctrl_c_into_130(monkeypatch, capsys):
    import discdiff.cli.main as cli_main
    from discdiff.cli import entry

    def early(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "main", early)
    assert entry.main() == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("delay", [1.0, 3.0])
def test_ctrl_c_at_any_moment_of_the_command_is_130_and_no_output(tmp_path, delay):
    """SIGINT while torch is still importing (it was a KeyboardInterrupt traceback, rc -2) or
    while sampling (it was exit 0 with no word): "interrupted", exit 130, no output file. (Only
    Python's own first ~0.1 s, before the package's first line runs, is out of reach.)"""
    import signal
    import time

    script = Path(sys.executable).parent / "discdiff"
    assert script.is_file(), f"the console script {script} is missing (pip install -e .)"
    out = tmp_path / "m.smi"
    cmd = [str(script), "molecules", "sample", "-n", "20000", "--no-novelty", "--threads", "1",
           "--no-progress", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted"
    assert not out.exists()


def test_an_sdf_write_that_fails_is_an_error_not_an_empty_file(tmp_path, monkeypatch):
    """The SDF goes to disk through Python's write, which raises on a full disk (RDKit's own
    writer swallowed ENOSPC: a 0-byte file and exit 0)."""
    from rdkit import Chem

    from discdiff.chem.export import decode_samples, write_molecules

    records = decode_samples([Chem.MolFromSmiles("CCO"), Chem.MolFromSmiles("c1ccccc1")])
    path = tmp_path / "m.sdf"
    assert write_molecules(path, records) == 2
    assert len(list(Chem.SDMolSupplier(str(path)))) == 2
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.suffix == ".sdf":
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        write_molecules(tmp_path / "n.sdf", records)
