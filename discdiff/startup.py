"""Ctrl-C while the `discdiff` command is still starting (importing torch takes a second or
more): "interrupted" and exit 130, not a KeyboardInterrupt traceback. Imported first by the
package; it acts only in the `discdiff` console script, and only until the command's
:func:`hand_over` puts Python's own handler back (training then saves and stops on SIGINT as
it always did)."""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["hand_over"]


def _interrupted(signum: int, frame: object) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)  # nothing has been written yet: no cleanup to run


def _starting_the_command() -> bool:
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "discdiff"


if _starting_the_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted)


def hand_over() -> None:
    """Python's KeyboardInterrupt handler again (the command has started)."""
    if signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
