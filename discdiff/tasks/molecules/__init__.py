"""The molecules task: graphs of atoms and bonds, both diffused, and the chemist's metrics.

``task.py`` is the :class:`MoleculeTask` (registered as "molecules"); ``config.py`` its config;
``data.py`` training SMILES and padded graph files; ``encoding.py`` SMILES -> graphs in
parallel; ``sampling.py`` node counts, the reverse process and the guards; ``conditioning.py``
property labels and guidance.
"""

from discdiff.tasks.molecules.task import *  # noqa: F403
from discdiff.tasks.molecules.task import __all__  # noqa: F401
