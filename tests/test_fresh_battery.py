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


def test_two_outputs_on_standard_output_are_refused(tmp_path, capsys):
    """`molecules sample --out - --grid -` interleaved a PNG with the SMILES on stdout (exit 0)."""
    base = ["molecules", "sample", "-n", "2", "--steps", "2", "--no-novelty", "--out", "-"]
    one_line_error(capsys, [*base, "--grid", "-"], "--grid '-' and --out name the same standard")
    one_line_error(capsys, [*base, "--json", "-"], "--json '-' and --out name the same standard")


@pytest.mark.parametrize(
    "code,needle",
    [
        ("x = 1\nraise RuntimeError('boom')\n", "failed at {path}:2: RuntimeError: boom"),
        ("import sys\nsys.exit(0)\n", "called sys.exit(0) while being imported at {path}:2"),
    ],
)
def test_an_import_that_fails_is_one_line_naming_its_file_and_line(
    text_run, tmp_path, capsys, code, needle
):
    """A plug-in file that raised was a traceback (exit 1); one that called sys.exit(0) made
    the command exit 0 having done nothing."""
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text(code)
    one_line_error(capsys, ["text", "sample", str(text_run), "-n", "1", "--steps", "2",
                            "--import", str(plugin)], needle.format(path=plugin))  # fmt: skip


def test_a_sampler_option_that_a_flag_sets_is_one_line(text_run, pixel_run, tmp_path, capsys):
    """`--sampler-opt steps=5` beside the command's own --steps was a TypeError traceback
    (make_sampler got two values); an option given by flag and by --sampler-opt was dropped."""
    run = str(text_run)
    one_line_error(capsys, ["text", "sample", run, "--sampler-opt", "steps=5"], "use --steps")
    one_line_error(capsys, ["task", "sample", run, "--sampler-opt", "temperature=2"],
                   "use --temperature")  # fmt: skip
    one_line_error(capsys, ["pixels", "sample", str(pixel_run), "--sampler-opt", "guidance=3",
                            "--out", str(tmp_path / "g.png")], "use --guidance")  # fmt: skip
    one_line_error(capsys, ["molecules", "sample", "-n", "2", "--sampler-opt", "grid_power=2",
                            "--out", str(tmp_path / "m.smi")], "use --time-power")  # fmt: skip
    one_line_error(capsys, ["text", "sample", run, "--sampler", "sundae", "--proportion", "0.9",
                            "--sampler-opt", "proportion=0.5"], "give proportion once")  # fmt: skip


def test_work_of_days_is_refused_up_front(text_run, capsys):
    """`text sample --length 10^8` and `text eval --samples 10^8` ran for minutes with no end
    in sight (and no bar off a terminal): the denoiser calls are counted first."""
    run = str(text_run)
    one_line_error(capsys, ["text", "sample", run, "--length", "100000000", "--steps", "2"],
                   "24,999,998 denoiser calls", "shorter length")  # fmt: skip
    one_line_error(capsys, ["text", "eval", run, "--samples", "100000000"],
                   "denoiser calls", "fewer samples")  # fmt: skip


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(
    text_run, pixel_run, tmp_path, capsys, monkeypatch
):
    """On a full disk (a 64 KB tmpfs by hand) the outputs said '[Errno 28] No space left on
    device' or safetensors' 'Error while serializing: I/O error ...', naming no file: each now
    names the file it could not write, and leaves neither it nor its temporary."""
    import errno
    import os

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_safetensors(*args, **kwargs):
        raise RuntimeError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    run = str(text_run)
    out = tmp_path / "out"
    out.mkdir()
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        one_line_error(capsys, ["text", "sample", run, "-n", "2", "--steps", "2", "--out",
                                str(out / "s.txt")],
                       f"cannot write {str(out / 's.txt')!r}: No space left on device")  # fmt: skip
        one_line_error(capsys, ["molecules", "sample", "-n", "2", "--steps", "2", "--no-novelty",
                                "--no-progress", "--out", str(out / "m.sdf")],
                       f"cannot write {str(out / 'm.sdf')!r}: No space left on device")  # fmt: skip
        one_line_error(capsys, ["pixels", "sample", str(pixel_run), "-n", "2", "--steps", "2",
                                "--no-progress", "--out", str(out / "g.png")],
                       f"cannot write {str(out / 'g.png')!r}: No space left on device")  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr("safetensors.torch.save_file", full_safetensors)
        one_line_error(capsys, ["task", "export", run, "--out", str(out / "w.safetensors")],
                       f"cannot write {str(out / 'w.safetensors')!r}: No space left on device")  # fmt: skip
    assert list(out.iterdir()) == []


def test_third_pass_cases_are_one_line(text_run, tmp_path, capsys, monkeypatch):
    """The third pass: 10^5 graph layers took minutes to count on the meta device (now
    extrapolated from one and two layers); a NaN temperature through --sampler-opt sampled
    garbage (exit 0); --scaffold '' was dropped without a word; an --out that is a loop of
    symbolic links was replaced by a regular file."""
    import time

    from discdiff.tasks import probes

    monkeypatch.setattr(probes, "available_memory", lambda: 4 * 2**30)
    smiles = tmp_path / "m.smi"
    smiles.write_text("\n".join(["CCO", "CCN", "CC(=O)O", "C1CC1", "CCOC", "OCCO"] * 5) + "\n")
    start = time.perf_counter()
    one_line_error(capsys, ["molecules", "train", "--data", str(smiles), "--out",
                            str(tmp_path / "r"), "--layers", "100000", "--steps", "1"],
                   "the denoiser config asks for")  # fmt: skip
    assert time.perf_counter() - start < 30
    out = ["--out", str(tmp_path / "m.smi"), "-n", "2", "--steps", "2", "--no-novelty"]
    one_line_error(capsys, ["molecules", "sample", *out, "--sampler-opt", "temperature=NaN"],
                   "not a finite number")  # fmt: skip
    one_line_error(capsys, ["molecules", "sample", *out, "--scaffold", ""], "--scaffold ''")
    loop = tmp_path / "loop1"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    one_line_error(capsys, ["text", "sample", str(text_run), "-n", "1", "--steps", "2", "--out",
                            str(loop)], "loop of symbolic links")  # fmt: skip
    assert loop.is_symlink()


def test_fourth_pass_cases_are_one_line(tmp_path, capsys):
    """The fourth pass: a run's --out under a file said '[Errno 20] Not a directory'; a
    --vocab-size beside the character tokenizer was dropped without a word; a SMILES file
    that is not UTF-8 was a codec's message naming no file."""
    afile = tiny_corpus(tmp_path)
    one_line_error(capsys, ["text", "train", str(afile), "--out", str(afile / "sub")],
                   f"{str(afile)!r} is a file, not a folder")  # fmt: skip
    for argv in (["text", "prepare", str(afile), "--out", str(tmp_path / "d")],
                 ["text", "train", str(afile), "--out", str(tmp_path / "r")]):  # fmt: skip
        one_line_error(capsys, [*argv, "--vocab-size", "300"], "--vocab-size sizes a BPE")
    binary = tmp_path / "bin.smi"
    binary.write_bytes(bytes(range(128, 256)) * 8)
    one_line_error(capsys, ["molecules", "train", "--data", str(binary), "--out",
                            str(tmp_path / "m")], f"cannot decode {str(binary)!r} as utf-8")  # fmt: skip
