"""Tasks: data + denoiser + metrics plugged into one spine (:mod:`discdiff.tasks.runs`).

:class:`~discdiff.tasks.base.Task` is the interface; text, pixels and molecules implement it
and are registered in :data:`TASKS` (so are plug-ins' tasks). The task modules import torch
and their data libraries, so they are loaded here on first use of the registry.
"""

from discdiff.tasks.base import TASKS, Evaluation, Task, register_task

__all__ = ["Task", "Evaluation", "TASKS", "register_task", "load_builtin_tasks"]


def load_builtin_tasks() -> None:
    """Import the task modules of this folder so that they register themselves (a new task
    file here needs no edit of this one)."""
    from discdiff.registry import import_package_modules
    from discdiff.tasks import molecules, pixels, text  # noqa: F401

    import_package_modules(__name__, __path__)


load_builtin_tasks()
