"""Forward processes, one family per module; all implement :class:`Process`."""

from discdiff.processes.absorbing import Absorbing
from discdiff.processes.base import Process
from discdiff.processes.dense import Dense
from discdiff.processes.marginal import Marginal
from discdiff.processes.mixing import MixingProcess
from discdiff.processes.uniform import Uniform

__all__ = ["Process", "MixingProcess", "Uniform", "Absorbing", "Marginal", "Dense"]
