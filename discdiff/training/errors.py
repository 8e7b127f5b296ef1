"""How training stops on purpose: the interrupt it raises, and the signals that ask for it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["TrainingInterrupted", "catch_stop_signals", "restore_signals"]


def catch_stop_signals(note: Callable[[int], None]) -> dict[int, Any]:
    """Route SIGINT and SIGTERM to ``note(signum)`` (main thread only); returns the previous
    handlers for :func:`restore_signals`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, frame: note(signum))
    return previous


def restore_signals(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`catch_stop_signals` replaced."""
    for sig, old in previous.items():
        signal.signal(sig, old)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a final checkpoint (``--resume`` continues)."""

    def __init__(self, message: str, step: int, signum: int) -> None:
        super().__init__(message)
        self.step, self.signum = step, signum
