"""Conditional text: a labelled corpus (one subfolder per class), each class split on its own
and written class after class, windows that never mix two classes, the label told to the
denoiser (dropped to the null label for classifier-free guidance), and sampling for a class."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from discdiff.cli.main import main

ALPHABETS = {"aa": "abcd", "zz": "wxyz"}  # disjoint: a sample's class shows in its letters
TINY = ["--seq-len", "8", "--layers", "1", "--d-model", "32", "--heads", "2", "--cond-dim", "16",
        "--no-progress"]  # fmt: skip


@pytest.fixture()
def labelled(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "corpus"
    for name, alphabet in ALPHABETS.items():
        (root / name).mkdir(parents=True)
        docs = ["".join(rng.choice(alphabet) for _ in range(40)) for _ in range(200)]
        (root / name / "t.txt").write_text("\n\n".join(docs))
    return root


def test_each_class_is_split_on_its_own_and_windows_never_mix_classes(labelled, tmp_path):
    from discdiff.datasets.token_files import TokenFiles, prepare_corpus
    from discdiff.tasks.text.data import PreparedWindows

    data = tmp_path / "data"
    meta = prepare_corpus(str(labelled), data, doc_sep="blank", labels="folders")
    assert meta["labels"]["names"] == ["aa", "zz"]
    files = TokenFiles(data)
    tok = files.tokenizer()
    for split in ("train", "val", "test"):
        spans = meta["labels"]["ranges"][split]
        assert spans[0][0] == 0 and spans[0][1] == spans[1][0]  # contiguous, class after class
        assert spans[1][1] == meta["splits"][split]["tokens"]
        tokens = files.tokens(split)
        for (start, end), alphabet in zip(spans, ALPHABETS.values(), strict=True):
            assert end > start  # every class in every split
            text = tok.decode(torch.from_numpy(tokens[start:end].astype("int64")))
            assert set(text) <= set(alphabet) | {"\x1e"}
    windows = PreparedWindows(files, "train", 8, random_windows=True)
    boundary = meta["labels"]["ranges"]["train"][0][1]
    for start in range(boundary - 10, boundary + 2):
        item = windows[start]
        text = tok.decode(item["ids"][item["mask"]])
        assert set(text) <= set(ALPHABETS["aa" if start < boundary else "zz"]) | {"\x1e"}
        assert int(item["label"]) == (0 if start < boundary else 1)


def test_labels_are_dropped_to_null_at_the_configured_rate(labelled):
    from discdiff.tasks.text import TextTask, TextTaskConfig

    task = TextTask.create(TextTaskConfig(corpus=str(labelled), labels="folders", seq_len=8,
                                          doc_sep="blank", label_dropout=0.2))  # fmt: skip
    model = task.build_denoiser(num_layers=1, d_model=16, num_heads=2, cond_dim=8)
    n = 20_000
    batch = {"ids": torch.zeros(n, 8, dtype=torch.long), "mask": torch.ones(n, 8, dtype=torch.bool),
             "label": torch.randint(0, 2, (n,)), "full": True}  # fmt: skip
    cond = task._cond(model, batch, torch.Generator().manual_seed(0))
    share = float((cond["label"] == task.null_label).double().mean())
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    kept = cond["label"] != task.null_label
    assert torch.equal(cond["label"][kept], batch["label"][kept])
    assert torch.equal(task._cond(model, batch)["label"], batch["label"])  # scoring: as given


def test_the_cli_trains_on_labels_and_samples_each_class(labelled, tmp_path, capsys):
    run = tmp_path / "run"
    train = ["text", "train", str(labelled), "--labels", "folders", "--doc-sep", "blank",
             "--out", str(run), "--steps", "300", "--lr", "2e-3", "--warmup", "0",
             "--batch-size", "64", *TINY]  # fmt: skip
    assert main(train) == 0
    assert json.loads((run / "task.json").read_text())["label_names"] == ["aa", "zz"]
    capsys.readouterr()
    for name, alphabet in ALPHABETS.items():
        for extra in ([], ["--guidance", "2"]):
            args = ["text", "sample", str(run), "-n", "8", "--steps", "8", "--label", name]
            assert main([*args, *extra]) == 0
            out = capsys.readouterr().out
            texts = [b.split("\n", 1)[1] for b in out.split("=== sample")[1:]]
            letters = set("".join(texts)) - set(" \n\x1e")
            assert len(texts) == 8 and letters and letters <= set(alphabet), (name, texts)
    assert main(["text", "eval", str(run), "--no-progress"]) == 0
    assert "bits/char" in capsys.readouterr().out
    assert main(["text", "sample", str(run), "-n", "2", "--label", "qq"]) == 2
    assert "not one of aa, zz" in capsys.readouterr().err


def test_label_options_that_cannot_work_are_one_line(labelled, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("abcd " * 400)
    run = tmp_path / "run"
    assert main(["text", "train", str(plain), "--out", str(run), "--steps", "1", *TINY]) == 0
    capsys.readouterr()
    for args, message in (
        (["text", "sample", str(run), "--label", "aa"], "has no labels"),
        (["text", "sample", str(run), "--guidance", "2"], "label-conditioned"),
        (["text", "train", str(plain), "--labels", "folders", "--out", str(tmp_path / "r2"), *TINY],
         "folder of class subfolders"),
        (["text", "prepare", str(labelled / "aa"), "--labels", "folders", "--out",
          str(tmp_path / "d")], "two at least"),
    ):  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (args, err)
