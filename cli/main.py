"""Entry point of the `discdiff` command: one Typer app with a sub-app per task."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from discdiff import __version__
from discdiff.tasks.runs import TrainingInterrupted

app = typer.Typer(
    name="discdiff",
    help="Discrete diffusion for text, pixels and molecules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"discdiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Discrete diffusion for text, pixels and molecules."""


#: task sub-apps: (command name, module under discdiff.cli holding a Typer ``app``)
TASKS = (
    ("molecules", "molecules"),
    ("text", "text"),
    ("pixels", "pixels"),
    ("task", "task"),
    ("models", "models"),
)


def _register_subapps() -> None:
    import importlib
    import importlib.util

    from discdiff.cli import demo
    from discdiff.registry import load_plugins

    load_plugins()  # installed plug-ins register their samplers, processes, ... before --help

    app.command(name="demo")(demo.demo)
    for name, module in TASKS:
        if importlib.util.find_spec(f"discdiff.cli.{module}") is None:
            continue  # the task's CLI is not written yet
        sub = importlib.import_module(f"discdiff.cli.{module}")
        app.add_typer(sub.app, name=name)


def _every_command(fn: Any) -> Any:
    """``fn`` as every command is: with ``--import`` (files and modules imported before the
    command runs, so a newcomer's sampler, process, objective, denoiser or task reaches any
    command from one file) and refusing NaN and infinite float arguments in one line naming
    the flag (``--temperature nan`` once wrote empty samples and exited 0)."""
    import inspect
    import math

    from discdiff.cli._options import Imports, import_plugins, with_options

    own_import = "imports" in inspect.signature(fn).parameters

    def call(kwargs: dict[str, Any]) -> Any:
        for name, value in kwargs.items():
            for v in value if isinstance(value, list | tuple) else (value,):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"--{name.replace('_', '-')} {v}: not a finite number")
        import_plugins(kwargs.get("imports") if own_import else kwargs.pop("imports", None))
        return fn(**kwargs)

    added = [] if own_import else [("imports", Imports, None)]
    command = with_options(fn, added, call)
    command.every_command = True  # type: ignore[attr-defined]
    return command


def _wrap_every_command(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "every_command", False):
            info.callback = _every_command(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_every_command(group.typer_instance)


_register_subapps()
_wrap_every_command(app)


def torch_oom() -> type:
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


def _user_errors() -> tuple[type, ...]:
    """What a user can cause (bad values, files, disks, memory): one line and exit 2. A
    TypeError or KeyError is a bug (a traceback and exit 1); a choice the user made that a
    sampler cannot serve is a ProcessMismatch, a ValueError too."""
    import pickle

    from safetensors import SafetensorError

    return (
        ValueError,
        OSError,  # FileNotFoundError, PermissionError, disk full, read-only, ...
        FloatingPointError,
        MemoryError,
        torch_oom(),
        pickle.UnpicklingError,
        SafetensorError,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors (ValueError, OSError, ...: :func:`_user_errors`) become one line
    and exit 2; a bug stays a traceback with exit 1."""
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # large tensors without a page fault per page (discdiff.memory)
    try:
        # without standalone mode Typer returns an exit code instead of raising it: a command's
        # typer.Exit(n), and 130 for Ctrl-C (dropped before: an interrupted command exited 0)
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130:
                typer.echo("interrupted", err=True)
            return code
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except TrainingInterrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        return 130
    except _user_errors() as exc:
        text = str(exc).strip()
        msg = text.splitlines()[0] if text else type(exc).__name__
        if isinstance(exc, MemoryError | torch_oom()):
            msg = f"out of memory: {msg or 'allocation failed'}"
        typer.echo(f"error: {msg}", err=True)
        return 2
    except Exception as exc:  # click's usage errors (Typer may vendor click) carry their exit code
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
