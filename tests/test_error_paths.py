"""Every error a user can cause: one line, exit 2, before any work where it can be known, and
never a half-written output."""

from __future__ import annotations

import os
import time

import pytest
import torch

import discdiff as dd
from discdiff.cli.main import main
from discdiff.tasks import runs
from discdiff.tasks.molecules.data import prepare_molecule_data
from discdiff.tasks.text import TextTask
from discdiff.training import TrainConfig


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errs")
    task, sizes = TextTask.example(folder / "data")
    torch.manual_seed(0)
    model = task.build_denoiser(**sizes)
    runs.train(
        task,
        model,
        TrainConfig(steps=1, batch_size=4, ckpt_every=1),
        folder / "run",
        progress=False,
    )
    return folder / "run"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_output_under_a_file_is_refused_before_sampling(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    start = time.perf_counter()
    assert main(["molecules", "sample", "-n", "1000", "--out", str(blocker / "m.sdf")]) == 2
    assert time.perf_counter() - start < 10  # refused before sampling 1000 molecules
    assert "is a file, not a folder" in one_line_error(capsys)
    assert (
        main(
            [
                "molecules",
                "sample",
                "-n",
                "2",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "ok.sdf"),
                "--grid",
                str(blocker / "g.png"),
            ]
        )
        == 2
    )
    one_line_error(capsys)
    assert not (tmp_path / "ok.sdf").exists()


def test_a_full_disk_leaves_no_half_written_file(text_run, tmp_path, capsys, monkeypatch):
    import discdiff.files as files

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    out = tmp_path / "samples.txt"
    assert (
        main(["text", "sample", str(text_run), "-n", "2", "--steps", "2", "--out", str(out)]) == 2
    )
    assert "No space left on device" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--steps", "1000000000000"], "more than 1,000,000 reverse steps"),
        (["--temperature", "-1"], "temperature"),
        (["--sampler", "beam"], "unknown sampler 'beam'"),
    ],
)
def test_bad_sampling_values_exit_2(text_run, capsys, argv, fragment):
    assert main(["text", "sample", str(text_run), "-n", "1", *argv]) == 2
    assert fragment in one_line_error(capsys)


def test_negative_or_non_finite_guidance_is_refused():
    for g in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
            dd.AncestralSampler(4, guidance=g)


def test_nan_logits_raise_naming_the_call():
    proc = dd.Absorbing(4, dd.LogLinear())

    def broken(x, t, cond=None):
        out = torch.zeros(*x.shape, 4)
        return out * float("nan") if float(t[0]) <= 0.5 else out  # calls at t = 1, .75, .5, .25

    with pytest.raises(ValueError, match="NaN or \\+inf logits .* at call 3 of 4"):
        dd.AncestralSampler(4).sample(
            broken, proc, (2, 3), generator=torch.Generator().manual_seed(0)
        )


@pytest.mark.parametrize("sampler", [dd.AncestralSampler(4), dd.CachingSampler(4)])
def test_minus_inf_rules_out_a_class_but_not_every_class(sampler):
    """-inf is how a denoiser forbids a class (never sampled); a position whose every logit is
    -inf, or a +inf logit, is a broken model and is refused, naming the call."""
    proc = dd.Absorbing(4, dd.LogLinear())
    gen = torch.Generator().manual_seed(0)

    def no_class_3(x, t, cond=None):
        out = torch.zeros(*x.shape, 4)
        out[..., 3] = float("-inf")
        return out

    res = sampler.sample(no_class_3, proc, (64, 3), generator=gen)
    assert int(res.samples.max()) <= 2 and int(res.samples.min()) >= 0
    for value, where in ((float("-inf"), slice(None)), (float("inf"), 0)):

        def broken(x, t, cond=None, value=value, where=where):
            out = torch.zeros(*x.shape, 4)
            out[0, 0, where] = value
            return out

        with pytest.raises(ValueError, match="at call 1 of"):
            sampler.sample(broken, proc, (2, 3), generator=gen)


def test_a_denoiser_refuses_times_outside_the_unit_interval():
    cfg = dd.TransformerConfig(
        num_states=5, num_classes=4, num_layers=1, d_model=16, num_heads=2, max_len=4
    )
    model = dd.TransformerDenoiser(cfg)
    x = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="t = 1000.0"):
        model(x, torch.tensor([0.5, 1000.0]))
    model(x, torch.tensor([0.0, 1.0]))


def test_smiles_file_holds_out_a_split_and_reports_what_it_skipped(tmp_path):
    good = [
        "CCO",
        "CC(=O)O",
        "c1ccoc1",
        "CC#N",
        "OCC(O)CO",
        "CC(C)O",
        "C1CC1N",
        "COC=O",
        "CCN",
        "CCCO",
        "CCOC",
        "OCCO",
    ]
    path = tmp_path / "mols.smi"
    path.write_text("\n".join([*good, "not_a_smiles", "C[SiH2]C"]) + "\n")
    prep = prepare_molecule_data(str(path))
    assert prep.skipped == 1 and len(prep.graphs) + len(prep.val_graphs) == len(good) + 1
    report = prep.report()
    assert (
        "line 13 'not_a_smiles'" in report
        and "vocabulary from the file" in report
        and "Si" in report
    )
    train = {tuple(a.tolist()) + tuple(b.flatten().tolist()) for a, b in prep.graphs}
    held = {tuple(a.tolist()) + tuple(b.flatten().tolist()) for a, b in prep.val_graphs}
    assert held and not (train & held)  # held out, not a copy of training molecules
    qm9_like = prepare_molecule_data(str(path), max_nodes=4)
    assert any("max_nodes 4" in x for x in qm9_like.skipped_examples)


def test_molecule_training_with_the_same_seed_gives_the_same_weights(tmp_path):
    data = tmp_path / "tiny.smi"
    data.write_text(
        "\n".join(["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O", "C1CC1N", "COC=O"])
        + "\n"
    )
    args = [
        "molecules",
        "train",
        "--data",
        str(data),
        "--batch-size",
        "4",
        "--layers",
        "1",
        "--node-dim",
        "8",
    ]
    args += [
        "--edge-dim",
        "4",
        "--heads",
        "2",
        "--steps",
        "2",
        "--eval-every",
        "0",
        "--no-progress",
        "--seed",
        "3",
    ]
    for name in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    _, ma = runs.load_run(tmp_path / "a", use_ema=False)
    _, mb = runs.load_run(tmp_path / "b", use_ema=False)
    for p, q in zip(ma.parameters(), mb.parameters(), strict=True):
        assert torch.equal(p, q)
    assert os.path.isfile(tmp_path / "a" / "train.safetensors")
