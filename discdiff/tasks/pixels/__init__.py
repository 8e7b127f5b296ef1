"""The pixels task: images as one field of intensity ids, bits per dimension, sample quality.

``task.py`` is the :class:`PixelTask` (registered as "pixels") with data, training and
sampling; ``config.py`` its config, process and denoiser; ``metrics.py`` the bound, grids, the
classifier and the nearest-neighbour check.
"""

from discdiff.tasks.pixels.task import *  # noqa: F403
from discdiff.tasks.pixels.task import __all__  # noqa: F401
