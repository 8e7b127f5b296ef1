"""Files that are never half-written: write to a temporary file beside the target, flush it
to disk, rename it into place. A reader sees the old file or the new one, never a mix; a
failure (disk full, permission, kill) leaves no file that looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "write_text_atomic",
    "write_json_atomic",
    "check_writable",
    "usual_permissions",
]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


_UMASK = _umask()


def usual_permissions(path: str | os.PathLike[str]) -> None:
    """Give a written file the permissions a plain ``open`` would (0666 minus the umask):
    some writers (safetensors) create files readable by their owner only."""
    os.chmod(path, 0o666 & ~_UMASK)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file and ``os.replace``: a reader
    never sees a half-written file, a failed write leaves the old one (or none)."""
    _write_bytes_atomic(Path(path), text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and ``os.replace``."""
    _write_bytes_atomic(Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_path(out) as tmp: writer(tmp)``: the writer writes ``tmp`` (same folder,
    same suffix, so format-by-extension writers work); on success it replaces ``out``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        if tmp.exists():
            _fsync_file(tmp)
            usual_permissions(tmp)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: str | os.PathLike[str], flag: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot be written: a folder, a parent that
    is a file, or a folder without write permission (one-line ValueError)."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{flag} {str(out)!r} is a folder, not a file")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {str(out)!r}: {str(parent)!r} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"{flag} {str(out)!r}: no permission to write in {str(parent)!r}")
            break
    return out
