"""An exclusive lock on a run directory for as long as a process writes to it.

``fcntl.flock`` on ``run_dir/.lock``: the kernel drops it when the holder exits, however it
dies (``kill -9`` included), so a stale lock never blocks a resume, and whatever temporary
files are found while holding the lock belong to this process or to a dead holder. The lock
is re-entrant within a process (the spine and the Trainer both take it).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

__all__ = ["RunLock", "LOCK_NAME"]

LOCK_NAME = ".lock"
_held: dict[str, tuple[int, int]] = {}  # resolved run dir -> (fd, depth)


class RunLock:
    """``with RunLock(run_dir):`` holds the run dir exclusively; a second writer gets a
    one-line ``ValueError`` naming the holder's pid."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._key = ""

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._key = str(self.run_dir.resolve())
        if self._key in _held:
            fd, depth = _held[self._key]
            _held[self._key] = (fd, depth + 1)
            return self
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (documented limitation)
            _held[self._key] = (-1, 1)
            return self
        path = self.run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"run dir {str(self.run_dir)!r} is being written by another process (pid "
                f"{holder}); wait for it to finish or use another run dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[self._key] = (fd, 1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, depth = _held[self._key]
        if depth > 1:
            _held[self._key] = (fd, depth - 1)
            return
        del _held[self._key]
        if fd >= 0:
            os.close(fd)  # releases the flock
