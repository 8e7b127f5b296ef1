"""`text prepare`: a corpus streamed once into flat token files, read back through memory maps;
lossless, document ends marked, never a half-finished data dir, and training from it resumes
bit for bit."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import discdiff.datasets.token_files as tf
from discdiff.cli.main import main
from discdiff.tasks import runs
from discdiff.tasks.text import TextTask, TextTaskConfig
from discdiff.tasks.text.data import PreparedWindows
from discdiff.training import TrainConfig

WORDS = "the king and queen of england went to war with france in spring".split()


def text(lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(lines))


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(text(400))
    return path


def decode_all(out):
    files = tf.TokenFiles(out)
    tok = files.tokenizer()
    return "".join(tok.decode([int(i) for i in files.tokens(s)]) for s in ("train", "val", "test"))


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_prepare_is_lossless_and_typed(corpus, tmp_path, kind):
    out = tmp_path / "data"
    meta = tf.prepare_corpus(str(corpus), out, tokenizer=kind, vocab_size=300, block=1000)
    files = tf.TokenFiles(out)
    assert files.dtype == (np.uint8 if kind == "char" else np.uint16)
    assert isinstance(files.tokens("train"), np.memmap)
    assert decode_all(out) == corpus.read_text() + tf.EOD  # one document: one end mark
    total = sum(meta["splits"][s]["chars"] for s in ("train", "val", "test"))
    assert total == len(corpus.read_text())
    assert abs(meta["splits"]["train"]["chars"] / total - 0.9) < 1e-3


def test_folders_and_json_lines_mark_document_ends(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(text(60, seed=i))
    (folder / "more.jsonl").write_text(
        "\n".join(json.dumps({"text": text(30, seed=10 + i)}) for i in range(3))
    )
    meta = tf.prepare_corpus(str(folder), tmp_path / "data")
    assert sum(meta["splits"][s]["documents"] for s in ("train", "val", "test")) == 7
    eods = sum(
        int((tf.TokenFiles(tmp_path / "data").tokens(s) == meta["eod_id"]).sum())
        for s in ("train", "val", "test")
    )
    assert eods == 7
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(ValueError, match="x.jsonl:1: expected a JSON object with a 'text' field"):
        tf.prepare_corpus(str(bad), tmp_path / "bad_out")


def test_an_interrupted_prepare_leaves_nothing_that_looks_finished(corpus, tmp_path, monkeypatch):
    out = tmp_path / "data"
    calls = {"n": 0}
    real = tf._encode

    def dies(tok, piece):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(tok, piece)

    monkeypatch.setattr(tf, "_encode", dies)
    with pytest.raises(KeyboardInterrupt):
        tf.prepare_corpus(str(corpus), out, block=500)
    assert not out.exists() and not tf.is_prepared(out)
    assert not list(tmp_path.glob(".data.tmp-*"))
    stale = tmp_path / ".data.tmp-deadbeef"  # what a kill -9 leaves
    stale.mkdir()
    monkeypatch.setattr(tf, "_encode", real)
    tf.prepare_corpus(str(corpus), out, block=500)
    assert tf.is_prepared(out) and not stale.exists()
    # the same source and settings again: reused; another source into it: refused
    assert tf.prepare_corpus(str(corpus), out, block=500)["source"]["spec"] == str(corpus)
    other = tmp_path / "other.txt"
    other.write_text(text(50, seed=5))
    with pytest.raises(ValueError, match="holds another prepared corpus"):
        tf.prepare_corpus(str(other), out)


def test_training_from_a_data_dir_resumes_bit_for_bit(corpus, tmp_path):
    data = tmp_path / "data"
    tf.prepare_corpus(str(corpus), data)
    task = TextTask.create(TextTaskConfig(corpus=str(data), seq_len=16))
    assert isinstance(task.chunks("train"), PreparedWindows)
    sizes = {"num_layers": 1, "d_model": 32, "num_heads": 2, "cond_dim": 16}

    def run(folder, resume=False):
        torch.manual_seed(0)
        model = task.new_model(**sizes)
        cfg = TrainConfig(
            steps=5, batch_size=8, ckpt_every=2, log_every=1, seed=1, keep_checkpoints=5
        )
        runs.train(task, model, cfg, folder, resume=resume, progress=False)
        return runs.load_run(folder, use_ema=False)[1]

    import shutil

    run(tmp_path / "a")
    ckpts = tmp_path / "a" / "checkpoints"
    for later in ("step_00000004", "step_00000005"):  # back to step 2, as after a kill there
        shutil.rmtree(ckpts / later)
    (ckpts / "latest").write_text("step_00000002\n")
    a = run(tmp_path / "a", resume=True)
    b = run(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    ev = task.evaluate(b, "test", batch_size=16)
    assert ev.num_chars == tf.TokenFiles(data).chars("test")  # every character of the split


def test_cli_prepare_then_train(corpus, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["text", "prepare", str(corpus), "--out", str(data), "--no-progress"]) == 0
    assert "prepared" in capsys.readouterr().out
    args = [
        "text",
        "train",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--seq-len",
        "16",
    ]
    args += [
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--cond-dim",
        "8",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert main(args) == 0
    assert main(["text", "prepare", str(tmp_path / "none.txt"), "--out", str(tmp_path / "d2")]) == 2
    assert "nor an existing file or folder" in capsys.readouterr().err


def test_random_windows_stream_resumes_without_an_index_list(corpus, tmp_path):
    from torch.utils.data import default_collate

    from discdiff.training.data import BatchStream

    tf.prepare_corpus(str(corpus), tmp_path / "data")
    files = tf.TokenFiles(tmp_path / "data")
    windows = PreparedWindows(files, "train", 16, drop_partial=True, random_windows=True)
    n = int(files.tokens("train").shape[0])
    assert len(windows) == n - 15 and windows.epoch_items == n // 16
    assert torch.equal(
        windows[5]["ids"], torch.from_numpy(np.asarray(files.tokens("train")[5:21], dtype=np.int64))
    )

    def stream(rank=0, world=1, size=4):
        return BatchStream(
            windows, size, seed=0, world=world, rank=rank, collate_fn=default_collate
        )

    s = stream()
    it = iter(s)
    for _ in range(5):
        next(it)
    state = s.state()
    after = [next(it)["ids"] for _ in range(3)]
    again = stream()
    again.load_state(state)  # resume at batch 5: the same next batches
    it2 = iter(again)
    assert all(torch.equal(a, next(it2)["ids"]) for a in after)
    # two ranks at micro-batch 2 see disjoint windows that together are one process's batch of 4
    single = [b["ids"] for b, _ in zip(stream(), range(6), strict=False)]
    ranks = [
        [b["ids"] for b, _ in zip(stream(rank=r, world=2, size=2), range(6), strict=False)]
        for r in (0, 1)
    ]
    for k in range(6):
        assert torch.equal(torch.cat([ranks[0][k], ranks[1][k]]), single[k])


def test_an_epoch_of_windows_is_a_permutation_of_a_grid():
    from discdiff.training.data import BatchStream, permute

    for n in (1, 2, 3, 7, 64, 1000, 4097):
        for key in (0, 1, 12345):
            got = permute(np.arange(n), n, key)
            assert sorted(got.tolist()) == list(range(n)), (n, key)
    assert permute(np.arange(50), 50, 0).tolist() != permute(np.arange(50), 50, 1).tolist()
    assert permute(np.arange(50), 50, 0).tolist() != list(range(50))

    class Starts(torch.utils.data.Dataset):  # item i = the window starting at token i
        epoch_items, stride = 1, 16

        def __len__(self):
            return 1000 - 16 + 1

        def __getitem__(self, i):
            return i

    n = len(Starts())
    for seed in (0, 5):
        s = BatchStream(Starts(), 3, seed=seed, collate_fn=list)
        it = iter(s)
        epochs: dict[int, list[int]] = {0: [], 1: []}
        while True:
            batch = next(it)  # the stream's epoch is the yielded batch's
            if s.epoch == 2:
                break
            epochs[s.epoch].extend(batch)
        for starts in epochs.values():
            offset = starts[0] % 16
            assert all(st % 16 == offset for st in starts)  # one grid: windows never overlap
            assert len(set(starts)) == len(starts)  # each window once
            assert len(starts) == ((n - 1 - offset) // 16 + 1) // 3 * 3  # whole batches
        assert epochs[0] != epochs[1]  # reshuffled (and re-offset) each epoch


def test_a_raw_corpus_is_prepared_once_into_the_cache(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISCDIFF_CACHE", str(tmp_path / "cache"))
    first, made = tf.prepared_cache(str(corpus))
    assert made and tf.is_prepared(first) and first.parent == tmp_path / "cache" / "prepared"
    calls = {"n": 0}
    monkeypatch.setattr(tf, "prepare_corpus", lambda *a, **k: calls.__setitem__("n", 1))
    again, made = tf.prepared_cache(str(corpus))
    assert (again, made, calls["n"]) == (first, False, 0)  # reused without reading the corpus
    assert tf.prepared_cache(str(corpus), tokenizer="bpe")[0] != first  # settings are in the key
    corpus.write_text(corpus.read_text() + "\nthe end")
    os_stat = corpus.stat()
    assert os_stat.st_size > 0
    assert tf.prepared_cache(str(corpus))[0] != first  # a changed corpus is prepared anew
    monkeypatch.undo()
    monkeypatch.setenv("DISCDIFF_CACHE", str(tmp_path / "cache2"))
    args = [
        "text",
        "train",
        str(corpus),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "1",
        "--seq-len",
        "16",
    ]
    args += [
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--cond-dim",
        "8",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "prepared" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "task.json").read_text())["corpus"]
    assert saved == str(corpus)  # the run names the user's corpus, not a cache folder
    entries = (tmp_path / "cache2" / "prepared").iterdir()
    assert len([p for p in entries if not p.name.startswith(".")]) == 1  # (and its .lock)
    import shutil

    shutil.rmtree(tmp_path / "cache2")  # a cleared cache: eval prepares the corpus again
    assert main(["text", "eval", str(tmp_path / "run"), "--max-chunks", "2"]) == 0
    two = capsys.readouterr().out
    assert "bits/char" in two
    assert main(["text", "eval", str(tmp_path / "run"), "--max-tokens", "17"]) == 0
    assert capsys.readouterr().out == two  # 17 tokens = two windows of 16
    args = ["text", "eval", str(tmp_path / "run"), "--max-tokens", "1", "--max-chunks", "1"]
    assert main(args) == 2
    assert "not both" in capsys.readouterr().err
    corpus.write_text("different characters: XYZ%&\n" * 200)  # a changed corpus is refused
    assert main(["text", "eval", str(tmp_path / "run")]) == 2
    assert "changed since training" in capsys.readouterr().err


def test_bits_per_character_counts_are_exact_for_multibyte_bpe(tmp_path):
    """Window character counts of byte-level BPE add up to the split's characters even where
    a token ends inside a multi-byte character."""
    text = "".join(f"héllo wörld ☃ 漢字 line {i} ünïcödé\n" for i in range(600))
    (tmp_path / "c.txt").write_text(text)
    tf.prepare_corpus(str(tmp_path / "c.txt"), tmp_path / "data", tokenizer="bpe", vocab_size=300)
    files = tf.TokenFiles(tmp_path / "data")
    total = 0
    for split in ("train", "val", "test"):
        windows = PreparedWindows(files, split, 7)
        counted = sum(int(windows[i]["chars"]) for i in range(len(windows)))
        assert counted == files.chars(split)
        total += counted
    assert total == len(text)


@pytest.mark.parametrize("sep", ["blank", "\n<doc>\n"])
@pytest.mark.parametrize("block", [7, 64, 1 << 16])
def test_a_single_file_is_cut_into_documents_at_doc_sep(tmp_path, sep, block):
    """A single file was one document (its only end-of-document mark in the test split):
    --doc-sep cuts it at blank lines or at a string, in any block size the reader uses (no
    separator is lost across two blocks), and the documents come back exactly, one end-of-
    document mark each, in every split."""
    rng = random.Random(1)
    docs = [text(rng.randint(1, 6), seed=i) for i in range(60)]
    joiner = "\n\n\n" if sep == "blank" else sep
    path = tmp_path / "one.txt"
    path.write_text(joiner.join(docs) + "\n")
    out = tmp_path / "d"
    meta = tf.prepare_corpus(str(path), out, doc_sep=sep, block=block)
    assert [meta["splits"][s]["documents"] for s in ("train", "val", "test")] != [0, 0, 1]
    assert sum(meta["splits"][s]["documents"] for s in ("train", "val", "test")) == len(docs)
    pieces = decode_all(out).split(tf.EOD)
    assert pieces[-1] == "" and pieces[:-1] == [*docs[:-1], docs[-1] + "\n"]  # the file's end
    assert meta["settings"]["doc_sep"] == sep
    with pytest.raises(ValueError, match="doc_sep"):
        tf.prepare_corpus(str(path), tmp_path / "e", doc_sep="")
