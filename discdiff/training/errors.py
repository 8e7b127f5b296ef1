"""Exceptions of the training loop that callers (the CLI) tell apart."""

from __future__ import annotations

__all__ = ["TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a final checkpoint (``--resume`` continues)."""

    def __init__(self, message: str, step: int, signum: int) -> None:
        super().__init__(message)
        self.step, self.signum = step, signum
