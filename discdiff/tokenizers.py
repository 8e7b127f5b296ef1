"""Text <-> token ids, saved as JSON beside a checkpoint, and fixed-length chunking.

Two tokenizers share one small interface (``Tokenizer``): ``CharTokenizer`` (one id per
character of a fixed alphabet) and ``BPETokenizer`` (byte-level BPE from the ``tokenizers``
library, lossless on any string), and ``PretrainedTokenizer``: a published tokenizer read from
its ``tokenizer.json`` (GPT-2's byte-level BPE, a masked LM's WordPiece), so that scores are
per token of a vocabulary others use. ``save(dir)`` writes ``tokenizer_config.json`` (the kind
and our settings; BPE adds the library's own ``tokenizer.json``) and ``load_tokenizer(dir)``
reads either back. Ids run over [0, vocab_size): that is the K of the text field; the
diffusion process adds its own mask state on top, so no tokenizer reserves one.

An optional pad id (``pad=True``) is the last id, outside what ``encode`` ever returns; it
decodes to nothing. Chunking does not need it: ``chunk_ids`` marks padding with a mask.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

__all__ = [
    "CONFIG_NAME",
    "Tokenizer",
    "CharTokenizer",
    "BPETokenizer",
    "PretrainedTokenizer",
    "load_tokenizer",
    "pretrained_file",
    "chunk_ids",
]

CONFIG_NAME = "tokenizer_config.json"
_BPE_FILE = "tokenizer.json"


def _as_id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(
                f"ids tensor must be 1-D integer, got shape {tuple(ids.shape)} {ids.dtype}"
            )
        return ids.tolist()
    if isinstance(ids, str | bytes):
        raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    return [int(i) for i in ids]


def _check_ids(ids: list[int], vocab_size: int) -> None:
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")


#: the largest BPE vocabulary trained (ids beyond it would not help a diffusion model's softmax
#: and the trainer's memory grows with it; Llama 3 uses 128,256)
BPE_MAX_VOCAB = 1 << 20
#: non-space runs longer than this train the merges with their first characters only
BPE_LONGEST_WORD = 64


class Tokenizer(ABC):
    """What a text task needs from a tokenizer: a vocabulary size, encode/decode, save/load."""

    kind: ClassVar[str]
    """Name written to ``tokenizer_config.json``; ``load_tokenizer`` dispatches on it."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (pad included when present); ids are in [0, vocab_size)."""

    @property
    @abstractmethod
    def pad_id(self) -> int | None:
        """The padding id (never produced by ``encode``, decoded to nothing), or None."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids`` (a list or a 1-D integer tensor); pad ids are dropped."""

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """Settings (JSON-able) that ``_from_config`` needs to rebuild this tokenizer."""

    @classmethod
    @abstractmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> Self:
        """Rebuild from ``_config()``'s output (and any extra files in ``directory``)."""

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer_config.json`` (and any library files) into ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"kind": self.kind, **self._config()}
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return folder

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Self:
        """Read a tokenizer of this class saved by ``save``."""
        config = _read_config(directory)
        if config["kind"] != cls.kind:
            raise ValueError(
                f"{str(Path(directory) / CONFIG_NAME)!r} holds a {config['kind']!r} tokenizer, "
                f"not {cls.kind!r}; use load_tokenizer() to load any kind"
            )
        return cls._from_config(config, Path(directory))


def _read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no tokenizer saved in {str(Path(directory))!r} (missing {CONFIG_NAME})"
        )
    config = json.loads(path.read_text())
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"{str(path)!r} has no 'kind' entry; it was not written by Tokenizer.save")
    return config


class CharTokenizer(Tokenizer):
    """One id per character: id i is ``alphabet[i]``; optional unk and pad ids after it.

    unk: None (an unknown character raises ValueError naming it) or the string that unknown
    characters decode to; if that string is one of the alphabet's characters, unknowns share
    its id, otherwise unk gets the id after the alphabet. pad: add a pad id (the last id).
    """

    kind = "char"

    def __init__(self, alphabet: str | Sequence[str], unk: str | None = None, pad: bool = False):
        chars = list(alphabet)
        if not chars:
            raise ValueError("alphabet is empty: expected at least one character")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            bad = next(c for c in chars if not isinstance(c, str) or len(c) != 1)
            raise ValueError(f"alphabet entry {bad!r} is not a single character")
        if len(set(chars)) != len(chars):
            dup = next(c for i, c in enumerate(chars) if c in chars[:i])
            raise ValueError(f"alphabet repeats the character {dup!r}")
        if unk is not None and (not isinstance(unk, str) or not unk):
            raise ValueError(f"unk={unk!r}: expected None or a non-empty string")
        self.alphabet = "".join(chars)
        self.unk = unk
        self.pad = bool(pad)
        self._ids = {c: i for i, c in enumerate(chars)}
        self._symbols = list(chars)
        self.unk_id: int | None = None
        if unk is not None:
            self.unk_id = self._ids.get(unk, len(self._symbols))
            if self.unk_id == len(self._symbols):
                self._symbols.append(unk)
        self._pad_id = len(self._symbols) if self.pad else None
        if self.pad:
            self._symbols.append("")

    @classmethod
    def from_text(cls, text: str, unk: str | None = None, pad: bool = False) -> CharTokenizer:
        """The tokenizer over the distinct characters of ``text``, in sorted (code point) order."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)), unk=unk, pad=pad)

    @property
    def vocab_size(self) -> int:
        return len(self._symbols)

    @property
    def pad_id(self) -> int | None:
        return self._pad_id

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        table = self._ids
        if self.unk_id is not None:
            unk_id = self.unk_id
            return [table.get(c, unk_id) for c in text]
        try:
            return [table[c] for c in text]
        except KeyError as err:
            c = err.args[0]
            raise ValueError(
                f"character {c!r} (U+{ord(c):04X}) at position {text.index(c)} is not in the "
                f"tokenizer's {len(self.alphabet)}-character alphabet; build it with unk=... "
                "to map unknown characters"
            ) from None

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = _as_id_list(ids)
        _check_ids(ids, self.vocab_size)
        symbols = self._symbols
        return "".join(symbols[i] for i in ids)

    def _config(self) -> dict[str, Any]:
        return {"alphabet": list(self.alphabet), "unk": self.unk, "pad": self.pad}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> CharTokenizer:
        return cls(config["alphabet"], unk=config.get("unk"), pad=bool(config.get("pad", False)))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk={self.unk!r}, pad={self.pad})"


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) from the ``tokenizers`` library: lossless on any string.

    Text is split into UTF-8 bytes first, so nothing is ever unknown and
    ``decode(encode(s)) == s`` for every ``s``. The library tokenizer has no special tokens;
    with pad=True the pad id is one past the library's vocabulary and never appears in text.
    """

    kind = "bpe"

    def __init__(self, tokenizer: Any, pad: bool = False):
        from tokenizers import Tokenizer as HFTokenizer

        if not isinstance(tokenizer, HFTokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self._tok = tokenizer
        self.pad = bool(pad)
        self._base = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        min_frequency: int = 2,
        pad: bool = False,
    ) -> BPETokenizer:
        """Learn merges from ``texts`` (any iterable of strings) up to ``vocab_size`` tokens.

        vocab_size counts the 256 byte symbols plus merges (a small corpus may stop short of
        it), at most :data:`BPE_MAX_VOCAB`; pad=True adds one id on top. Deterministic for a
        given corpus. Runs of more than :data:`BPE_LONGEST_WORD` non-space characters (URLs,
        base64, a file without spaces) train the merges with their start only: the trainer's
        memory grows with the distinct words it holds, and one 50 MB word took 7 GB.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if not isinstance(vocab_size, int) or not 256 <= vocab_size <= BPE_MAX_VOCAB:
            raise ValueError(
                f"vocab_size={vocab_size!r}: expected an int in [256, {BPE_MAX_VOCAB:,}] (the 256 "
                "byte symbols plus merges)"
            )
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency={min_frequency!r}: expected an int >= 1")
        if isinstance(texts, str):
            texts = [texts]
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        long_run = re.compile(rf"(\S{{{BPE_LONGEST_WORD}}})\S+")
        try:
            tok.train_from_iterator((long_run.sub(r"\1", t) for t in texts), trainer)
        except BaseException as err:  # a Rust panic arrives as pyo3's PanicException
            if isinstance(err, KeyboardInterrupt | SystemExit | GeneratorExit):
                raise
            raise ValueError(f"BPE training failed in the tokenizers library: {err}") from None
        return cls(tok, pad=pad)

    @property
    def vocab_size(self) -> int:
        return self._base + int(self.pad)

    @property
    def pad_id(self) -> int | None:
        return self._base if self.pad else None

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = _as_id_list(ids)
        _check_ids(ids, self.vocab_size)
        if self.pad:
            ids = [i for i in ids if i != self._base]
        return self._tok.decode(ids, skip_special_tokens=False)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer_config.json`` and the library's ``tokenizer.json``."""
        folder = super().save(directory)
        self._tok.save(str(folder / _BPE_FILE))
        return folder

    def _config(self) -> dict[str, Any]:
        return {"pad": self.pad, "file": _BPE_FILE}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        path = directory / config.get("file", _BPE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"BPE tokenizer file {str(path)!r} is missing")
        return cls(HFTokenizer.from_file(str(path)), pad=bool(config.get("pad", False)))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, pad={self.pad})"


#: the special tokens that end a text in published vocabularies, in the order they are looked for
END_OF_TEXT = ("<|endoftext|>", "</s>", "<eos>", "[SEP]")


class PretrainedTokenizer(BPETokenizer):
    """A published tokenizer from its ``tokenizer.json`` (the ``tokenizers`` library's format:
    GPT-2's ``tokenizer.json`` from the Hugging Face hub, any ``PreTrainedTokenizerFast``'s).

    Its end-of-text special token (the first of :data:`END_OF_TEXT` it has) stands for the
    end-of-document mark (U+001E): ``encode`` gives that id for the mark and ``decode`` gives
    the mark back, so prepared corpora end their documents with the vocabulary's own token.
    Without one, the mark is encoded as the tokenizer encodes it (it must be one id to
    prepare a corpus). Special tokens are never added around a text.
    """

    kind = "pretrained"

    def __init__(self, tokenizer: Any, pad: bool = False, end_id: int | None = None):
        super().__init__(tokenizer, pad=pad)
        self.end_id = end_id

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], pad: bool = False) -> PretrainedTokenizer:
        """Read ``path``: a ``tokenizer.json``, or a folder holding one."""
        from tokenizers import Tokenizer as HFTokenizer

        file = pretrained_file(str(path))
        try:
            tok = HFTokenizer.from_file(str(file))
        except Exception as err:  # the library's parse errors are its own exception type
            raise ValueError(f"cannot read {str(file)!r} as a tokenizers file: {err}") from None
        specials = {a.content for a in tok.get_added_tokens_decoder().values() if a.special}
        end = next((s for s in END_OF_TEXT if s in specials), None)
        return cls(tok, pad=pad, end_id=None if end is None else tok.token_to_id(end))

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.end_id is None or _EOD not in text:
            return self._tok.encode(text, add_special_tokens=False).ids
        out: list[int] = []
        for i, part in enumerate(text.split(_EOD)):
            if i:
                out.append(self.end_id)
            if part:
                out.extend(self._tok.encode(part, add_special_tokens=False).ids)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = _as_id_list(ids)
        if self.end_id is None or self.end_id not in ids:
            return super().decode(ids)
        parts, run = [], []
        for i in ids:
            if i == self.end_id:
                parts.append(super().decode(run))
                run = []
            else:
                run.append(i)
        parts.append(super().decode(run))
        return _EOD.join(parts)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "end_id": self.end_id}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> PretrainedTokenizer:
        base = BPETokenizer._from_config(config, directory)
        return cls(base._tok, pad=base.pad, end_id=config.get("end_id"))

    def __repr__(self) -> str:
        return f"PretrainedTokenizer(vocab_size={self.vocab_size}, end_id={self.end_id})"


#: the end-of-document mark of prepared corpora (:data:`discdiff.datasets.token_files.EOD`)
_EOD = "\x1e"


def pretrained_file(spec: str) -> Path:
    """The ``tokenizer.json`` a ``--tokenizer`` value names (the file, or a folder holding
    one); ValueError naming the value when it is neither char, bpe nor such a file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / _BPE_FILE
    if not path.is_file():
        raise ValueError(
            f"tokenizer={spec!r}: expected 'char', 'bpe' or a tokenizer.json file (or a folder "
            f"holding one) in the tokenizers library's format"
        )
    return path


_KINDS: dict[str, type[Tokenizer]] = {
    CharTokenizer.kind: CharTokenizer,
    BPETokenizer.kind: BPETokenizer,
    PretrainedTokenizer.kind: PretrainedTokenizer,
}


def load_tokenizer(directory: str | os.PathLike[str]) -> Tokenizer:
    """Load whatever tokenizer ``Tokenizer.save`` wrote into ``directory``."""
    config = _read_config(directory)
    kind = config["kind"]
    if kind not in _KINDS:
        raise ValueError(
            f"unknown tokenizer kind {kind!r} in {CONFIG_NAME}; expected one of {sorted(_KINDS)}"
        )
    return _KINDS[kind]._from_config(config, Path(directory))


def chunk_ids(
    ids: Sequence[int] | torch.Tensor, length: int, pad_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a token stream into rows of ``length``; the last partial row is padded and masked.

    Returns (chunks (N, L) long, mask (N, L) bool) with N = ceil(len(ids) / L); mask is True
    on real tokens and False on padding, which holds ``pad_id`` (0 when None: the loss never
    sees it). An empty stream gives N = 0.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length={length!r}: expected a positive int")
    if pad_id is not None and (
        isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0
    ):
        raise ValueError(f"pad_id={pad_id!r}: expected None or a non-negative int")
    if isinstance(ids, str | bytes):
        raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    if not isinstance(ids, torch.Tensor):
        try:
            ids = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"ids must be a flat sequence of ints ({err})") from None
        if ids.numel() == 0:  # [] becomes an empty float tensor
            ids = ids.reshape(0).long()
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"ids must be 1-D integers, got shape {tuple(ids.shape)} {ids.dtype}")
    flat = ids.to(torch.long).cpu()  # (n,)
    n = flat.numel()
    if n and int(flat.min()) < 0:
        raise ValueError(f"ids hold the negative id {int(flat.min())}; expected ids >= 0")
    rows = -(-n // length)
    chunks = torch.full((rows * length,), 0 if pad_id is None else pad_id, dtype=torch.long)
    chunks[:n] = flat
    mask = torch.zeros(rows * length, dtype=torch.bool)
    mask[:n] = True
    return chunks.view(rows, length), mask.view(rows, length)  # (N, L), (N, L)
