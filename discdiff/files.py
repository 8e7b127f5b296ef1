"""Files that are never half-written: write to a temporary file beside the target, flush it
to disk, rename it into place. A reader sees the old file or the new one, never a mix; a
failure (disk full, permission, kill) leaves no file that looks finished."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "STDOUT",
    "output_path",
    "write_output",
    "is_stream",
    "claim_stdout",
    "atomic_path",
    "write_text_atomic",
    "write_json_atomic",
    "check_writable",
    "usual_permissions",
    "sha256_file",
    "sha256_tree",
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


#: errors of a write that failed for want of room or of a working disk (not a bug of ours)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


def write_failure(path: str | os.PathLike[str], err: BaseException) -> OSError | None:
    """An OSError naming ``path`` for a write that failed on a full, read-only or failing disk
    (an OSError, or a safetensors error wrapping one), else None (not a disk's failure)."""
    if isinstance(err, OSError) and getattr(err, "write_failure", None):
        why = err.write_failure  # named already by an inner write (a temporary): the outer name
    elif isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
        why = err.strerror or str(err)
    elif not isinstance(err, OSError) and "os error" in str(err):  # safetensors' own errors
        why = str(err).rsplit(": ", 1)[-1].split(" (os error")[0] or str(err)
    else:
        return None
    named = OSError(f"cannot write {str(path)!r}: {why}")
    named.errno = getattr(err, "errno", None) or errno.EIO
    named.write_failure = why  # type: ignore[attr-defined]
    return named


@contextlib.contextmanager
def named_write(path: str | os.PathLike[str]) -> Iterator[None]:
    """A block that writes ``path``: a disk's failure inside it becomes one OSError naming it
    (``[Errno 28] No space left on device`` named no file)."""
    try:
        yield
    except Exception as err:
        named = write_failure(path, err)
        if named is None:
            raise
        raise named from err


def save_tensors(
    tensors: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    name: str | os.PathLike[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """safetensors' ``save_file`` with a disk's failure named (:func:`named_write`; ``name``:
    the file to name when ``path`` is its temporary)."""
    from safetensors.torch import save_file

    with named_write(path if name is None else name):
        save_file(tensors, str(path), metadata=metadata)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with named_write(path), open(tmp, "wb") as handle:
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
        with named_write(final):
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
    is a file, or a folder without write permission (one-line ValueError). ``-`` and special
    files are written through (:func:`output_path`): they need write permission only."""
    out = Path(path)
    if is_stream(path):
        if str(path) != STDOUT and not os.access(path, os.W_OK):
            raise ValueError(f"{flag} {str(out)!r}: no permission to write it")
        return out
    if out.is_symlink():
        try:
            os.path.realpath(out, strict=True)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ValueError(f"{flag} {str(out)!r} is a loop of symbolic links") from None
    out = _regular_target(out)
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


# ---- outputs a user names: a regular file (atomic), standard output, or a special file ------

#: the output name that means standard output
STDOUT = "-"
_DATA_STDOUT: Any = None  # the stream the data goes to once an output claimed stdout


def _is_own_stdout(path: str | os.PathLike[str]) -> bool:
    try:
        a, b = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_stream(path: str | os.PathLike[str]) -> bool:
    """Whether an output is ``-`` or an existing file that is not a regular one (a terminal, a
    pipe, /dev/null, /dev/full, /dev/stdout): written through, never replaced by a rename."""
    if str(path) == STDOUT:
        return True
    try:
        mode = os.stat(path).st_mode  # follows symlinks: /dev/stdout -> /proc/self/fd/1
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def claim_stdout(path: str | os.PathLike[str] = STDOUT) -> None:
    """An output goes to standard output (``-``, or a name of this process's stdout): the data
    keep the stream stdout is now, and every message after this goes to stderr, so that
    ``cmd --out - | next`` sees the data alone."""
    global _DATA_STDOUT
    if str(path) != STDOUT and not _is_own_stdout(path):
        return
    if _DATA_STDOUT is None or sys.stdout is not sys.stderr:
        _DATA_STDOUT = sys.stdout
        sys.stdout = sys.stderr


def _deliver(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` through to standard output or a special file (no temporary, no rename)."""
    if str(path) == STDOUT or _is_own_stdout(path):
        claimed = _DATA_STDOUT is not None and sys.stdout is sys.stderr
        stream = _DATA_STDOUT if claimed else sys.stdout
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(data)
        else:
            stream.write(data.decode("utf-8"))
        stream.flush()
        return
    try:
        with open(path, "wb") as handle:  # O_TRUNC on a device is a no-op; a full one raises
            handle.write(data)
            handle.flush()
    except OSError as err:
        raise OSError(f"cannot write {str(path)!r}: {err.strerror or err}") from err


def _regular_target(path: str | os.PathLike[str]) -> Path:
    """The file a rename must replace: a symlink's target (the link itself stays a link)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def write_output(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a user-named output: ``-`` and special files through, a regular file (or a
    symlink's target) atomically."""
    if is_stream(path):
        _deliver(path, data)
    else:
        _write_bytes_atomic(_regular_target(path), data)
        usual_permissions(_regular_target(path))


@contextlib.contextmanager
def output_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """``with output_path(out, ".smi") as tmp: writer(tmp)`` for a user-named output: the
    writer writes a temporary file (named with ``out``'s suffix, or ``suffix`` for ``-`` and
    special files, so format-by-extension writers work); on success it replaces ``out``
    atomically, or is copied through to standard output or the special file."""
    if is_stream(path):
        with tempfile.TemporaryDirectory(prefix="discdiff-out-") as folder:
            tmp = Path(folder) / f"out{suffix or Path(str(path)).suffix}"
            yield tmp
            if tmp.exists():
                _deliver(path, tmp.read_bytes())
        return
    with atomic_path(_regular_target(path)) as tmp:
        yield tmp


# ---- content hashes: what a manifest records and a reader checks ----------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (read in 4 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(folder: str | os.PathLike[str]) -> str:
    """One sha256 over a folder's files: their relative names and contents, in sorted order."""
    import hashlib

    root = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode())
    return h.hexdigest()
