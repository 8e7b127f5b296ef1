"""Forward processes, one family per module; all implement :class:`Process`."""

from discdiff.processes.absorbing import Absorbing
from discdiff.processes.base import Process
from discdiff.processes.dense import Dense
from discdiff.processes.marginal import Marginal
from discdiff.processes.mixing import MixingProcess
from discdiff.processes.registry import (
    PROCESSES,
    make_process,
    process_config,
    process_from_config,
    register_process,
)
from discdiff.processes.scores import score_entropy, scores_from_x0, x0_from_scores
from discdiff.processes.uniform import Uniform

__all__ = [
    "score_entropy",
    "scores_from_x0",
    "x0_from_scores",
    "Process",
    "MixingProcess",
    "Uniform",
    "Absorbing",
    "Marginal",
    "Dense",
    "PROCESSES",
    "register_process",
    "make_process",
    "process_config",
    "process_from_config",
]

# every module of this folder registers what it defines: a new file needs no edit here
from discdiff.registry import import_package_modules as _import_package_modules  # noqa: E402

_import_package_modules(__name__, __path__)
