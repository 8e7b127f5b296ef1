"""The text task: corpora and tokenizers, the diffusion transformer, bits per character.

``task.py`` is the :class:`TextTask` (registered as "text"); ``config.py`` its config and the
denoiser's view; ``data.py`` corpora and prepared token files; ``evaluation.py`` the held-out
bound and infill templates; ``metrics.py`` sample statistics; ``sampling.py`` drawing text;
``ar.py`` the autoregressive yardstick.
"""

from discdiff.tasks.text.task import *  # noqa: F403
from discdiff.tasks.text.task import __all__  # noqa: F401
