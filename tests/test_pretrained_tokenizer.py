"""A published tokenizer (its ``tokenizer.json``) as a text task's vocabulary: GPT-2-style byte
BPE with ``<|endoftext|>`` and BERT-style WordPiece with ``[SEP]``, made here at random sizes
and saved to a folder (no download), prepared, trained, sampled and scored."""

from __future__ import annotations

import json
import random

import pytest

from discdiff.cli.main import main
from discdiff.tokenizers import PretrainedTokenizer, load_tokenizer

EOD = "\x1e"
WORDS = "the king and queen of england went to war with france in spring".split()


def gpt2_like(folder, vocab=300):
    """A byte-level BPE with GPT-2's end-of-text special token, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    rng = random.Random(0)
    tok.train_from_iterator([" ".join(rng.choice(WORDS) for _ in range(50))] * 20, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def bert_like(folder):
    """A WordPiece vocabulary with BERT's special tokens (lower-casing, so not lossless)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), "##s", "."]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def test_the_end_of_text_token_stands_for_the_document_mark(tmp_path):
    tok = PretrainedTokenizer.from_file(gpt2_like(tmp_path / "gpt2"))
    end = tok._tok.token_to_id("<|endoftext|>")
    assert tok.end_id == end
    ids = tok.encode(f"the king{EOD}went to war{EOD}")
    assert ids.count(end) == 2 and ids[-1] == end
    assert tok.encode(EOD) == [end]
    assert tok.decode(ids) == f"the king{EOD}went to war{EOD}"
    tok.save(tmp_path / "saved")
    back = load_tokenizer(tmp_path / "saved")
    assert isinstance(back, PretrainedTokenizer) and back.end_id == end
    assert back.encode("queen of england") == tok.encode("queen of england")
    bert_like(tmp_path / "bert")
    bert = PretrainedTokenizer.from_file(tmp_path / "bert")  # a folder holding tokenizer.json
    assert bert.end_id == bert._tok.token_to_id("[SEP]")
    assert bert.encode("The King") == bert.encode("the king")  # its own normaliser, kept
    assert bert.encode("the king")[0] != bert._tok.token_to_id("[CLS]")  # nothing added


def test_prepare_train_sample_and_score_on_a_published_vocabulary(tmp_path, capsys):
    rng = random.Random(0)
    corpus = tmp_path / "tiny.txt"
    docs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(6))
            for _ in range(40)]  # fmt: skip
    corpus.write_text("\n\n".join(docs))
    file = gpt2_like(tmp_path / "gpt2")
    data = tmp_path / "data"
    assert main(["text", "prepare", str(corpus), "--out", str(data), "--tokenizer", str(file),
                 "--doc-sep", "blank", "--no-progress"]) == 0  # fmt: skip
    meta = json.loads((data / "meta.json").read_text())
    tok = PretrainedTokenizer.from_file(file)
    assert meta["tokenizer"] == "pretrained" and meta["eod_id"] == tok.end_id
    assert meta["vocab_size"] == tok.vocab_size
    run = tmp_path / "run"
    tiny = ["--seq-len", "24", "--layers", "1", "--d-model", "32", "--heads", "2",
            "--cond-dim", "16", "--batch-size", "8", "--eval-every", "2", "--eval-batches", "1",
            "--no-progress"]  # fmt: skip
    assert main(["text", "train", str(data), "--out", str(run), "--steps", "2", *tiny]) == 0
    assert json.loads((run / "task.json").read_text())["tokenizer"] == "pretrained"
    capsys.readouterr()
    # a raw corpus with --tokenizer FILE goes through the cache the same way, and resumes
    raw = tmp_path / "raw"
    train = ["text", "train", str(corpus), "--out", str(raw), "--tokenizer", str(file), *tiny]
    assert main([*train, "--steps", "2"]) == 0
    assert main([*train, "--steps", "3", "--resume"]) == 0
    assert main([*train, "--steps", "4", "--resume", "--tokenizer", "char"]) == 2
    assert "--tokenizer 'char' differs" in capsys.readouterr().err
    assert main(["text", "sample", str(run), "-n", "2", "--steps", "4", "--stop-at-eod"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2
    assert main(["text", "eval", str(run), "--no-progress"]) == 0
    assert "bits/char" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["gpt2", "nowhere/tokenizer.json"])
def test_a_tokenizer_that_is_no_file_is_one_line(tmp_path, capsys, value):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the king and queen\n" * 50)
    code = main(["text", "prepare", str(corpus), "--out", str(tmp_path / "d"),
                 "--tokenizer", value])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"tokenizer={value!r}" in err and "\n" not in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = main(["text", "prepare", str(corpus), "--out", str(tmp_path / "d"),
                 "--tokenizer", str(bad)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot read" in err and "\n" not in err


def test_a_wordpiece_vocabulary_counts_characters_within_a_percent(tmp_path):
    """Bits per character need characters per window; a WordPiece vocabulary drops the spaces,
    so each word's first piece counts one for the space before it: on text of single-spaced
    words the windows' count is within 1% of the split's exact one."""
    from discdiff.datasets.token_files import TokenFiles, prepare_corpus
    from discdiff.tasks.text.data import PreparedWindows

    rng = random.Random(1)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(9)) for _ in range(400)))
    data = tmp_path / "data"
    prepare_corpus(str(corpus), data, tokenizer=str(bert_like(tmp_path / "bert")))
    files = TokenFiles(data)
    for split in ("train", "test"):
        windows = PreparedWindows(files, split, 24)
        counted = sum(int(windows[i]["chars"]) for i in range(len(windows)))
        exact = files.chars(split)
        assert abs(counted - exact) <= 0.01 * exact, (split, counted, exact)
