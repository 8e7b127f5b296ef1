"""The third hostile battery's cases: each fails before its fix (one line and exit 2, or the
right answer, where there was a traceback, a silent wrong result or a misleading message)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from discdiff.cli.main import main
from tests.test_one_file import TINY_TEXT, tiny_corpus

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("round3")
    corpus = tiny_corpus(folder)
    run = folder / "run"
    assert main(["text", "train", str(corpus), "--out", str(run), *TINY_TEXT]) == 0
    return corpus, run


def one_line_error(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_seed_out_of_range_names_the_flag(text_run, capsys):
    """Typer's usage error (exit 2, naming --seed), not an OverflowError from torch."""
    _, run = text_run
    for seed in (str(2**64), "-1"):
        capsys.readouterr()
        assert main(["text", "sample", str(run), "-n", "1", "--seed", seed]) == 2
        assert "Invalid value for '--seed'" in capsys.readouterr().err


def test_more_threads_than_cores_are_cut_with_a_notice(capsys):
    from discdiff.cli._options import set_threads, usable_cores

    assert set_threads(1000) == usable_cores()
    assert torch.get_num_threads() == usable_cores()
    assert "more than the" in capsys.readouterr().err


def test_negative_molecule_limits_are_refused_and_a_huge_max_nodes_pads_to_the_data(
    tmp_path, capsys
):
    data = tmp_path / "tiny.smi"
    data.write_text("\n".join(["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O"]) + "\n")
    base = ["molecules", "train", "--data", str(data), "--steps", "1", "--layers", "1",
            "--node-dim", "16", "--edge-dim", "8", "--heads", "2", "--batch-size", "2",
            "--eval-every", "0", "--no-progress"]  # fmt: skip
    one_line_error(
        capsys, [*base, "--out", str(tmp_path / "a"), "--max-train", "-5"], "--max-train"
    )
    one_line_error(
        capsys, [*base, "--out", str(tmp_path / "b"), "--max-nodes", "-1"], "--max-nodes"
    )
    assert main([*base, "--out", str(tmp_path / "c"), "--max-nodes", "100000000"]) == 0
    task = json.loads((tmp_path / "c" / "task.json").read_text())
    assert task["max_nodes"] == 6  # the largest molecules (glycerol, furan), not 10^8 (80 TB asked)


def test_one_atom_molecules_sample():
    from discdiff.tasks.runs import from_pretrained

    task, model = from_pretrained("qm9")
    graphs = task.sample_graphs(model, 3, num_atoms=1, steps=4)
    assert all(int(g[0].shape[0]) == 1 for g in graphs)


def test_one_chunk_has_no_standard_error_and_a_huge_loss_no_overflow():
    from discdiff.tasks.text.evaluation import summarise

    one = summarise(torch.tensor([10.0]), torch.tensor([8.0]), torch.tensor([8.0]), 1, False)
    line = one.format(per_token=True)
    assert "nan" not in line and "no standard error" in line
    huge = summarise(
        torch.tensor([1e6, 2e6]), torch.tensor([8.0, 8.0]), torch.tensor([8.0, 8]), 1, False
    )
    assert huge.perplexity == math.inf and "beyond" in huge.format(per_token=True)


def test_wrong_kinds_of_path_are_named(text_run, tmp_path, capsys):
    corpus, run = text_run
    one_line_error(capsys, ["text", "sample", str(corpus), "-n", "1"], "is a file, not a run dir")
    one_line_error(capsys, ["text", "train", "/dev/null", "--out", str(tmp_path / "r"), *TINY_TEXT],
                   "neither a regular file nor a folder")  # fmt: skip


def test_exported_weights_and_shipped_names_sample_through_task_sample(text_run, tmp_path, capsys):
    _, run = text_run
    out = tmp_path / "m.safetensors"
    assert main(["task", "export", str(run), "--out", str(out)]) == 0
    assert main(["task", "sample", str(out), "-n", "2", "--steps", "4"]) == 0
    assert main(["task", "sample", "qm9", "-n", "2", "--steps", "4"]) == 0


def test_a_csv_with_a_byte_order_mark_finds_its_smiles_column(tmp_path):
    from discdiff.datasets.smiles import read_smiles_file

    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffsmiles,name\nCCO,ethanol\nCC,ethane\n".encode())
    assert read_smiles_file(path) == ["CCO", "CC"]


@pytest.mark.parametrize("template", ["ab [MASK:-3] c", "ab [mask:4]", "ab [MASK:abc]", "[ MASK ]"])
def test_infill_markers_that_are_not_blanks_are_refused(text_run, capsys, template):
    _, run = text_run
    one_line_error(capsys, ["text", "sample", str(run), "-n", "1", "--infill", template],
                   "is not a blank")  # fmt: skip


def test_saved_settings_that_do_not_parse_are_refused_on_resume(text_run, tmp_path, capsys):
    import shutil

    corpus, run = text_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    doc = json.loads((copy / "config.json").read_text())
    doc["train"]["batch_size"] = "eight"
    (copy / "config.json").write_text(json.dumps(doc))
    one_line_error(capsys, ["text", "train", str(corpus), "--out", str(copy), "--resume",
                            "--steps", "3", "--batch-size", "4", "--no-progress"],
                   "do not parse")  # fmt: skip


def test_resume_refuses_a_changed_task_or_model_setting(text_run, tmp_path, capsys):
    """--resume with another process, corpus, length, tokenizer or size went on with the run's
    own and said nothing; now each is one line naming the flag, and the same values pass."""
    import shutil

    corpus, run = text_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    base = ["text", "train", str(corpus), "--out", str(copy), "--resume", "--no-progress"]
    for extra, needle in ((["--process", "uniform"], "--process 'uniform'"),
                          (["--seq-len", "64"], "--seq-len 64"),
                          (["--tokenizer", "bpe"], "--tokenizer 'bpe'"),
                          (["--layers", "3"], "--layers 3"),
                          (["--autoregressive"], "--autoregressive")):  # fmt: skip
        one_line_error(capsys, [*base, "--steps", "3", *extra], needle, "differs from the run's")
    other = tmp_path / "other.txt"
    other.write_text("a different corpus\n" * 50)
    one_line_error(capsys, ["text", "train", str(other), "--out", str(copy), "--resume",
                            "--steps", "3", "--no-progress"], "CORPUS")  # fmt: skip
    # the run's own values (the corpus spelt another way too) and training flags go on
    same = ["text", "train", str(corpus.parent / "." / corpus.name), "--out", str(copy),
            "--resume", "--no-progress", "--seq-len", "16", "--layers", "1"]  # fmt: skip
    assert main([*same, "--steps", "3", "--lr", "5e-4"]) == 0
    one_line_error(capsys, ["text", "train", str(corpus), "--out", str(tmp_path / "ar"),
                            "--autoregressive", "--objective", "score_entropy", *TINY_TEXT],
                   "does not apply")  # fmt: skip


def test_resume_refuses_changed_molecule_and_task_settings(tmp_path, capsys):
    data = tmp_path / "tiny.smi"
    data.write_text("\n".join(["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O"]) + "\n")
    run = tmp_path / "m"
    base = ["molecules", "train", "--data", str(data), "--out", str(run), "--layers", "1",
            "--node-dim", "16", "--edge-dim", "8", "--heads", "2", "--batch-size", "2",
            "--eval-every", "0", "--no-progress"]  # fmt: skip
    assert main([*base, "--steps", "1"]) == 0
    for extra in (["--aromatic"], ["--process", "uniform"], ["--data", "qm9"], ["--heads", "4"]):
        one_line_error(capsys, [*base, "--resume", "--steps", "2", *extra], "differs")
    assert main([*base, "--resume", "--steps", "2"]) == 0
    dna = ["task", "train", "dna", "--import", str(EXAMPLES / "dna_task.py"), "--out",
           str(tmp_path / "d"), "--steps", "1", "--no-progress"]  # fmt: skip
    assert main([*dna, "--config", '{"length": 16}']) == 0
    one_line_error(capsys, [*dna, "--resume", "--config", '{"length": 32}'], "--config length=32")


# ---- prepared data: integrity, hostile corpora, bounded BPE ----------------------------------


@pytest.fixture
def prepared(tmp_path):
    from discdiff.datasets.token_files import prepare_corpus

    corpus = tiny_corpus(tmp_path)
    data = tmp_path / "data"
    prepare_corpus(str(corpus), data)
    return corpus, data


def _edit_meta(data, **changes):
    doc = json.loads((data / "meta.json").read_text())
    doc.update(changes)
    (data / "meta.json").write_text(json.dumps(doc))


def test_prepared_data_that_disagree_with_their_meta_are_refused(prepared, tmp_path):
    import shutil

    from discdiff.datasets.token_files import TokenFiles, is_prepared, prepare_corpus

    corpus, data = prepared
    files = TokenFiles(data)
    files.verify()
    vocab = files.vocab_size

    def copy(name):
        dest = tmp_path / name
        shutil.copytree(data, dest)
        return dest

    bad = copy("vocab")
    _edit_meta(bad, vocab_size=vocab - 3)  # meta.json's vocab_size changed from V to V - 3
    with pytest.raises(ValueError, match="eod_id|ids but meta.json"):
        TokenFiles(bad).tokenizer()
    bad = copy("eod")
    _edit_meta(bad, eod_id=vocab + 5)
    with pytest.raises(ValueError, match="eod_id .* outside"):
        TokenFiles(bad)
    bad = copy("ids")  # an id outside the vocabulary, meta's hash updated to match
    raw = bytearray((bad / "test.bin").read_bytes())
    raw[3] = 250
    (bad / "test.bin").write_bytes(bytes(raw))
    import hashlib

    doc = json.loads((bad / "meta.json").read_text())
    doc["sha256"]["test"] = hashlib.sha256(bytes(raw)).hexdigest()
    (bad / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="holds id 250, outside the vocabulary"):
        TokenFiles(bad).tokens("test")
    bad = copy("edited")  # a split edited after prepare
    raw = bytearray((bad / "test.bin").read_bytes())
    raw[3] = (raw[3] + 1) % vocab
    (bad / "test.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="changed after it was prepared"):
        TokenFiles(bad).tokens("test")
    TokenFiles(bad).tokens("train")  # the untouched splits still read
    bad = copy("garbled")
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        is_prepared(bad)
    bad = copy("nometa")
    (bad / "meta.json").unlink()
    with pytest.raises(ValueError, match="token files but no meta.json"):
        is_prepared(bad)
    prepare_corpus(str(corpus), bad)  # preparing again repairs it in place
    assert TokenFiles(bad).verify() is None


def test_an_edited_test_split_is_not_scored(text_run, tmp_path, capsys):
    """A run trained on a data dir; its test split edited afterwards: eval refuses it."""
    import shutil

    from discdiff.datasets.token_files import prepare_corpus

    corpus, _ = text_run
    data = tmp_path / "data"
    prepare_corpus(str(corpus), data)
    run = tmp_path / "run"
    assert main(["text", "train", str(data), "--out", str(run), *TINY_TEXT]) == 0
    assert main(["text", "eval", str(run), "--max-chunks", "2"]) == 0
    raw = bytearray((data / "test.bin").read_bytes())
    raw[0] = (raw[0] + 1) % 4  # another id of the vocabulary
    (data / "test.bin").write_bytes(bytes(raw))
    one_line_error(capsys, ["text", "eval", str(run), "--max-chunks", "2"], "changed after")
    shutil.rmtree(data)


def test_a_corpus_holding_the_end_of_document_mark_is_refused(tmp_path):
    from discdiff.datasets.token_files import prepare_corpus

    path = tmp_path / "eod.txt"
    path.write_text("hello\x1eworld\n" * 50)
    with pytest.raises(ValueError, match="U\\+001E"):
        prepare_corpus(str(path), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_bpe_vocabulary_is_bounded_and_long_lines_are_cut_into_pieces():
    from discdiff.datasets.token_files import _PIECE, _encode, _pieces
    from discdiff.tokenizers import BPE_MAX_VOCAB, BPETokenizer

    with pytest.raises(ValueError, match="1,048,576"):
        BPETokenizer.train(["abc abd"], 10**9)
    assert BPE_MAX_VOCAB == 1 << 20
    import random

    rng = random.Random(1)
    words = ["".join(rng.choices("abcdefghij", k=rng.randint(1, 7))) for _ in range(300)]
    line = " ".join(rng.choices(words, k=40_000))  # 180 KB and no line end
    pieces = _pieces(line)
    assert "".join(pieces) == line and max(map(len, pieces)) <= 4 * _PIECE and len(pieces) > 10
    tok = BPETokenizer.train([line[:50_000]], 400)
    whole = tok._tok.encode(line, add_special_tokens=False).ids
    assert _encode(tok, line).tolist() == whole  # cut before spaces: the same ids
    one_word = "x" * 100_000  # the trainer sees its first 64 characters, not 100 KB
    assert BPETokenizer.train([one_word, "ab ab ab"], 300).vocab_size >= 256


# ---- sizes: refused up front, or batched with progress -----------------------------------------


def test_sampling_sizes_that_cannot_fit_are_refused_up_front(text_run, capsys, monkeypatch):
    from discdiff.tasks import probes

    _, run = text_run
    one_line_error(capsys, ["text", "sample", str(run), "-n", "1000000000", "--length", "8"],
                   "the samples alone would take")  # fmt: skip
    monkeypatch.setattr(probes, "device_memory", lambda device=None: 2**20)  # 1 MiB free
    one_line_error(capsys, ["text", "sample", str(run), "-n", "4096", "--batch-size", "4096"],
                   "--batch-size")  # fmt: skip
    one_line_error(capsys, ["text", "sample", str(run), "-n", "1", "--batch-size", "0"],
                   "--batch-size must be >= 1")  # fmt: skip
    one_line_error(capsys, ["text", "sample", str(run), "--sampler", "sundae", "--proportion",
                            "0.9,abc"], "--proportion '0.9,abc'")  # fmt: skip


def test_text_samples_in_batches_are_the_ones_asked_for(text_run, tmp_path):
    _, run = text_run
    out = tmp_path / "s.txt"
    assert main(["text", "sample", str(run), "-n", "5", "--batch-size", "2", "--length", "8",
                 "--steps", "4", "--out", str(out)]) == 0  # fmt: skip
    body = out.read_text()
    assert body.count("=== sample") == 5 and "=== sample 4 ===" in body
    again = tmp_path / "t.txt"
    assert main(["text", "sample", str(run), "-n", "5", "--batch-size", "2", "--length", "8",
                 "--steps", "4", "--out", str(again)]) == 0  # fmt: skip
    assert again.read_text() == body  # the same seed, the same samples


def test_long_semi_autoregressive_samples_carry_a_bounded_context():
    """The context of each next window is the last window - block ids made so far (kept as a
    running tail: it re-joined every piece made so far, quadratic in the length)."""
    import torch

    from discdiff.processes import Absorbing
    from discdiff.samplers import AncestralSampler, sample_blocks
    from discdiff.schedules import LogLinear

    K, window, block = 5, 8, 3
    seen = []

    class Recording(AncestralSampler):
        def sample(self, *args, fixed=None, **kw):
            res = super().sample(*args, fixed=fixed, **kw)
            seen.append((fixed, res.samples))
            return res

    proc = Absorbing(K, LogLinear())
    res = sample_blocks(Recording(4), lambda x, t, cond=None: torch.randn(*x.shape, K), proc, 3,
                        50, window, block, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert res.samples.shape == (3, 50) and int(res.samples.max()) < K
    made = window
    for fixed, _ in seen[1:]:
        values, given = fixed
        keep = window - block
        assert bool(given[:, :keep].all()) and not bool(given[:, keep:].any())
        assert torch.equal(values[:, :keep], res.samples[:, made - keep : made])
        made += values.shape[1] - keep
    assert made == 50


def test_a_deleted_latest_pointer_falls_back_to_the_newest_complete_checkpoint(
    text_run, tmp_path, capsys
):
    import shutil

    from discdiff.training import latest_checkpoint, list_checkpoints

    corpus, run = text_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    want = latest_checkpoint(copy)
    (copy / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(copy) == want == list_checkpoints(copy)[-1]
    assert main(["text", "sample", str(copy), "-n", "1", "--steps", "2", "--length", "8"]) == 0
    # a new run over it is refused as over any run with checkpoints
    capsys.readouterr()
    assert main(["text", "train", str(corpus), "--out", str(copy), *TINY_TEXT]) == 2
    assert "already has checkpoints" in capsys.readouterr().err


def test_an_export_cut_short_or_mixed_is_refused_on_load(text_run, tmp_path, monkeypatch):
    """Export A, then B over it killed before B's entry lands: B's weights beside A's entry
    (and A's tokenizer) loaded and sampled silently; now the entry names its files by hash."""
    import discdiff as dd
    from discdiff.tasks import runs
    from discdiff.tasks.molecules import MoleculeTask

    _, run = text_run
    out = tmp_path / "x.safetensors"
    task_a, model_a = runs.load_run(run)
    runs.export(task_a, model_a, out)
    assert dd.from_pretrained(out)[0].config == task_a.config
    task_b, sizes = MoleculeTask.example(tmp_path / "mol")
    model_b = task_b.new_model(**sizes)

    def killed(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(runs, "write_json_atomic", killed)
    with pytest.raises(OSError, match="killed"):
        runs.export(task_b, model_b, out)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="does not belong with"):
        dd.from_pretrained(out)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    runs.export(task_b, model_b, out)  # exporting again repairs it
    assert isinstance(dd.from_pretrained(out)[0], MoleculeTask)
    assert not (tmp_path / "x_files" / "tokenizer").exists()  # A's tokenizer is gone


def test_a_bug_is_a_traceback_and_a_users_choice_one_line(text_run, capsys, monkeypatch):
    """TypeError and KeyError mapped to exit 2 made bugs look like user errors (a bug in
    `task sample` said 'only integer tensors ... can be converted to an index'); now a bug
    propagates (the console script prints its traceback and exits 1), while a sampler that
    cannot serve the run's process, a user's choice, stays one line and exit 2."""
    from discdiff.samplers import ProcessMismatch
    from discdiff.tasks import runs

    _, run = text_run
    one_line_error(capsys, ["text", "sample", str(run), "-n", "1", "--sampler", "sundae"],
                   "needs a Uniform process")  # fmt: skip
    assert issubclass(ProcessMismatch, TypeError) and issubclass(ProcessMismatch, ValueError)

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(runs, "from_pretrained", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["task", "sample", str(run), "-n", "1"])


def test_after_a_nan_stop_the_advice_names_a_sound_checkpoint(tmp_path):
    """The last finite checkpoint may hold weights of 1e30 already (the run had diverged):
    the message named it as the one to resume from; now it names the newest sound one."""
    import torch

    from discdiff.training import save_checkpoint
    from discdiff.training.trainer import checkpoint_advice

    run = tmp_path / "run"
    for step, scale in ((2, 1.0), (4, 3.0), (6, 1e30)):
        save_checkpoint(run, step, model={"w": torch.full((3,), scale)})
    advice = checkpoint_advice(run)
    assert (
        "step_00000006" in advice and "1.0e+30" in advice and "resume from step_00000004" in advice
    )
    run2 = tmp_path / "run2"
    save_checkpoint(run2, 2, model={"w": torch.full((3,), 1e30)})
    assert "no checkpoint is sound" in checkpoint_advice(run2)
    run3 = tmp_path / "run3"
    save_checkpoint(run3, 2, model={"w": torch.ones(3)})
    assert checkpoint_advice(run3) == "; the last finite checkpoint is step_00000002"


def test_a_run_refuses_data_prepared_again_from_other_text(tmp_path, capsys):
    """The run records the prepared data's hashes (data.json): data prepared again from another
    text with the same alphabet were trained on and scored as if the same."""
    import shutil

    from discdiff.datasets.token_files import prepare_corpus

    a = tiny_corpus(tmp_path)
    b = tmp_path / "b.txt"
    b.write_text("\n".join(reversed(a.read_text().splitlines())))  # same characters, other text
    data, run = tmp_path / "data", tmp_path / "run"
    prepare_corpus(str(a), data)
    assert main(["text", "train", str(data), "--out", str(run), *TINY_TEXT]) == 0
    assert json.loads((run / "data.json").read_text())["splits"]["test"]
    assert main(["text", "eval", str(run), "--max-chunks", "2"]) == 0
    shutil.rmtree(data)
    prepare_corpus(str(b), data)
    one_line_error(capsys, ["text", "eval", str(run), "--max-chunks", "2"],
                   "are not the ones this run was trained on")  # fmt: skip
    assert main(["text", "train", str(data), "--out", str(run), "--resume", "--steps", "3",
                 "--no-progress"]) == 2  # fmt: skip
    assert "are not the ones" in capsys.readouterr().err.strip().splitlines()[-1]


def test_generative_perplexity_skips_the_padding_after_end_of_document(tmp_path):
    """--stop-at-eod --judge scored the end-of-document padding too (487.7 against 30.4 in the
    issue); the count is now up to each sample's first end-of-document token."""
    import torch

    from discdiff.cli.text import _write_samples
    from discdiff.tasks.runs import load_run

    corpus = tiny_corpus(tmp_path)
    ar = tmp_path / "ar"
    assert (
        main(["text", "train", str(corpus), "--out", str(ar), "--autoregressive", *TINY_TEXT]) == 0
    )
    task, model = load_run(ar, expect="text")
    eod = task._eod_id()
    ids = torch.randint(0, eod, (2, 12))
    ids[0, 5:] = eod  # ends at 5: 6 positions count (the mark itself too)
    hit = (ids == eod).long()
    scored = (hit.cumsum(1) - hit) == 0
    _, count = task.generative_perplexity(model, ids, scored)
    assert count == 6 + 12
    _, everything = task.generative_perplexity(model, ids)
    assert everything == 24
    assert "\x1e" not in _write_samples(["one\x1etwo"])


def test_schedule_options_on_the_command_line_are_used_and_recorded(tmp_path, capsys):
    """`--objective dfm --schedule kappa-poly` was PolynomialKappa(1), the linear path, with no
    way to set the exponent; NAME:VALUE and NAME:KEY=VALUE now reach the factory and the run."""
    from discdiff.schedules import PolynomialKappa, make_schedule, parse_schedule_spec

    assert parse_schedule_spec("kappa-poly:2") == ("kappa-poly", {"exponent": 2})
    assert parse_schedule_spec("kappa-poly:exponent=2.5") == ("kappa-poly", {"exponent": 2.5})
    s = make_schedule("kappa-poly:3")
    assert isinstance(s, PolynomialKappa) and s.exponent == 3.0
    corpus = tiny_corpus(tmp_path)
    losses = {}
    for spec in ("kappa-poly", "kappa-poly:3"):
        run = tmp_path / spec.replace(":", "_")
        assert main(["text", "train", str(corpus), "--out", str(run), "--objective", "dfm",
                     "--schedule", spec, *TINY_TEXT]) == 0  # fmt: skip
        assert json.loads((run / "task.json").read_text())["schedule"] == spec
        losses[spec] = capsys.readouterr().out
    assert losses["kappa-poly"] != losses["kappa-poly:3"]
    for bad, needle in (("kappa-poly:abc", "not a number"), ("nope:2", "'nope' is not one of"),
                        ("d3pm-linear", "is not one of")):  # fmt: skip
        one_line_error(capsys, ["text", "train", str(corpus), "--out", str(tmp_path / "x"),
                                "--schedule", bad, *TINY_TEXT], needle)  # fmt: skip


def test_model_alone_is_one_flag_for_the_unguarded_pipeline(tmp_path, capsys):
    """Asking for the model alone took five flags (without --no-repair, 111 samples were still
    repaired and 92 cut to their largest piece); --model-alone is all of them."""
    a, b = tmp_path / "a.smi", tmp_path / "b.smi"
    base = ["molecules", "sample", "-n", "40", "--steps", "10", "--seed", "1", "--no-progress",
            "--no-novelty"]  # fmt: skip
    assert main([*base, "--model-alone", "--out", str(a)]) == 0
    assert main([*base, "--no-valence-guard", "--no-motif-guard", "--no-repair", "--no-reject",
                 "--keep-invalid", "--out", str(b)]) == 0  # fmt: skip
    assert a.read_text() == b.read_text() and len(a.read_text().splitlines()) == 40
    statuses = {line.split("\t")[2] for line in a.read_text().splitlines()}
    assert statuses <= {"strict", "invalid"}, statuses  # nothing repaired or cut to a piece


@pytest.mark.parametrize(
    "argv",
    [["molecules", "eval", "RUN", "-n", "1"], ["molecules", "export", "RUN", "--out", "OUT"],
     ["pixels", "sample", "RUN", "--out", "OUT"], ["molecules", "sample", "--checkpoint", "RUN"]],
)  # fmt: skip
def test_a_model_of_another_task_is_named_by_every_task_command(text_run, tmp_path, capsys, argv):
    """One run layout for every task: a text run handed to a molecule or pixels command is one
    line saying what it holds, before any weights are read."""
    _, run = text_run
    out = str(tmp_path / "x_model.safetensors")
    argv = [str(run) if a == "RUN" else out if a == "OUT" else a for a in argv]
    if argv[:2] == ["pixels", "sample"]:
        argv[-1] = str(tmp_path / "g.png")
    one_line_error(capsys, argv, "holds a text model, not a")


def test_every_export_takes_the_same_weights_flags_and_a_checkpoint_dir(text_run, tmp_path):
    """--ema/--no-ema mean the same in every command (--raw is the older name of --no-ema), and
    `task export` takes one checkpoint of a run, as its help says."""
    _, run = text_run
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    for i, extra in enumerate((["--no-ema"], ["--raw"], ["--ema"], [])):
        out = tmp_path / f"w{i}.safetensors"
        assert main(["task", "export", str(ckpt), "--out", str(out), *extra]) == 0
        assert out.is_file()
