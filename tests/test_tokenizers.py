"""Tokenizers: round trips, unknown characters, save/load dispatch, chunking with a mask."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from discdiff.tokenizers import (
    CONFIG_NAME,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    chunk_ids,
    load_tokenizer,
)

CORPUS = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
    "And by opposing end them. To die: to sleep;\n"
) * 8


# ----------------------------------------------------------------------------- char


def test_char_from_text_alphabet_is_sorted_distinct_characters():
    tok = CharTokenizer.from_text("banana!")
    assert tok.alphabet == "!abn"
    assert tok.vocab_size == 4 and tok.pad_id is None
    assert tok.encode("nab!") == [3, 1, 2, 0]


def test_char_round_trip_on_corpus_and_tensor_decode():
    tok = CharTokenizer.from_text(CORPUS)
    assert tok.vocab_size == len(set(CORPUS))
    ids = tok.encode(CORPUS)
    assert len(ids) == len(CORPUS)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == CORPUS
    assert tok.decode(torch.tensor(ids)) == CORPUS


def test_char_unknown_character_names_it():
    tok = CharTokenizer("abc ")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 3"):
        tok.encode("ab zz")


def test_char_unk_gets_its_own_id_or_reuses_one():
    tok = CharTokenizer("ab", unk="?")
    assert tok.vocab_size == 3 and tok.unk_id == 2
    assert tok.encode("axb") == [0, 2, 1]
    assert tok.decode(tok.encode("axb")) == "a?b"
    shared = CharTokenizer("ab ", unk=" ")
    assert shared.vocab_size == 3 and shared.encode("aéb") == [0, 2, 1]


def test_char_pad_is_last_id_never_encoded_and_decodes_to_nothing():
    tok = CharTokenizer("ab", pad=True)
    assert tok.vocab_size == 3 and tok.pad_id == 2
    assert tok.decode([0, 2, 1, 2]) == "ab"
    assert 2 not in tok.encode("abba")


@pytest.mark.parametrize(
    ("alphabet", "message"), [("", "empty"), ("aba", "repeats"), (["a", "bc"], "single character")]
)
def test_char_bad_alphabet(alphabet, message):
    with pytest.raises(ValueError, match=message):
        CharTokenizer(alphabet)


def test_char_decode_rejects_out_of_range_ids_and_bad_types():
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError, match="token id 2 is outside"):
        tok.decode([0, 2])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        tok.encode(b"ab")


def test_char_save_load_round_trip(tmp_path):
    tok = CharTokenizer.from_text(CORPUS + "é漢", unk="<unk>", pad=True)
    tok.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["kind"] == "char"
    for loaded in (load_tokenizer(tmp_path), CharTokenizer.load(tmp_path)):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.alphabet == tok.alphabet
        assert (loaded.vocab_size, loaded.unk_id, loaded.pad_id) == (
            tok.vocab_size,
            tok.unk_id,
            tok.pad_id,
        )
        assert loaded.encode("tö漢") == tok.encode("tö漢")


# ----------------------------------------------------------------------------- BPE


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([CORPUS, "naïve café 漢字 \t\r\n"], vocab_size=300, min_frequency=2)


def test_bpe_learns_merges_and_compresses(bpe):
    assert 256 < bpe.vocab_size <= 300
    ids = bpe.encode(CORPUS)
    assert len(ids) < 0.7 * len(CORPUS.encode("utf-8"))  # merges shorten the text
    assert bpe.decode(ids) == CORPUS


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_bpe_byte_level_round_trip_on_any_text(bpe, s):
    ids = bpe.encode(s)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == s


def test_bpe_save_load_round_trip(bpe, tmp_path):
    bpe.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BPETokenizer) and loaded.vocab_size == bpe.vocab_size
    s = "To sleep, perchance to dream: ay, there's the rub 漢 é  \n"
    assert loaded.encode(s) == bpe.encode(s)
    assert loaded.decode(loaded.encode(s)) == s
    with pytest.raises(ValueError, match="holds a 'bpe' tokenizer"):
        CharTokenizer.load(tmp_path)


def test_bpe_pad_is_outside_the_library_vocabulary(tmp_path):
    tok = BPETokenizer.train([CORPUS], vocab_size=280, pad=True)
    assert tok.pad_id == tok.vocab_size - 1
    ids = tok.encode("<pad> to be")
    assert tok.pad_id not in ids
    assert tok.decode([*ids, tok.pad_id, tok.pad_id]) == "<pad> to be"
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).pad_id == tok.pad_id
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_bpe_bad_vocab_size():
    with pytest.raises(ValueError, match="vocab_size=100"):
        BPETokenizer.train([CORPUS], vocab_size=100)


def test_both_kinds_satisfy_the_interface(bpe):
    for tok in (bpe, CharTokenizer.from_text(CORPUS)):
        assert isinstance(tok, Tokenizer)
        assert tok.decode(tok.encode("To be")) == "To be"


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_tokenizer(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"kind": "wordpiece"}))
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 24, 25])
@pytest.mark.parametrize("pad_id", [None, 99])
def test_chunk_ids_matches_brute_force(n, pad_id):
    length = 8
    ids = list(range(100, 100 + n))
    chunks, mask = chunk_ids(ids, length, pad_id=pad_id)
    rows = -(-n // length)
    assert chunks.shape == mask.shape == (rows, length)
    assert chunks.dtype == torch.long and mask.dtype == torch.bool
    fill = 0 if pad_id is None else pad_id
    for r in range(rows):
        for c in range(length):
            k = r * length + c
            assert bool(mask[r, c]) == (k < n)
            assert int(chunks[r, c]) == (ids[k] if k < n else fill)
    assert chunks[mask].tolist() == ids  # the mask recovers the stream exactly


def test_chunk_ids_accepts_tensors_and_validates():
    chunks, mask = chunk_ids(torch.arange(5, dtype=torch.int32), 2)
    assert chunks.tolist() == [[0, 1], [2, 3], [4, 0]]
    assert mask.tolist() == [[True, True], [True, True], [True, False]]
    with pytest.raises(ValueError, match="length=0"):
        chunk_ids([1, 2], 0)
    with pytest.raises(ValueError, match="negative id -3"):
        chunk_ids([1, -3], 2)
    with pytest.raises(TypeError):
        chunk_ids(torch.zeros(2, 2, dtype=torch.long), 2)
    for bad in ([1.5, 2], [[1, 2], [3, 4]], ["a"], "ab", [True, False]):
        with pytest.raises(TypeError):
            chunk_ids(bad, 2)
    with pytest.raises(ValueError, match="pad_id=-1"):
        chunk_ids([1], 2, pad_id=-1)
