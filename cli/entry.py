"""The `discdiff` command's entry point: the whole start-up (imports included) under one guard,
so that Ctrl-C in the first second is "interrupted" and exit 130, not a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    """Run the CLI (:func:`discdiff.cli.main.main`); Ctrl-C anywhere is exit 130."""
    try:
        from discdiff.cli.main import main as run
        from discdiff.startup import hand_over

        hand_over()
        return run()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
