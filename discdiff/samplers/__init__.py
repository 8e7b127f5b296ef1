"""Samplers: one object per algorithm, with its settings, and ``sample(...) -> SampleResult``.

- :class:`AncestralSampler`: any process, ``steps`` reverse posterior steps from t = 1 to 0.
- :class:`CachingSampler`: MDLM's cached ancestral sampler for absorbing processes (same
  samples as ancestral for the same seed, fewer denoiser calls).
- :class:`FirstHittingSampler`: exact one-token-per-call sampler for absorbing processes.
- :class:`ConfidenceSampler`: MaskGIT confidence decoding for absorbing processes.
- :class:`SundaeSampler`: SUNDAE unrolled denoising for uniform processes.
- :class:`PlannedSampler`: planned unmasking (confidence, margin, entropy or random order)
  with P2 self-planning (``eta > 0`` remasks decoded tokens the model doubts).
- :class:`TauLeapingSampler`, :class:`TweedieSampler`: score models (SEDD) or any mixing-process
  model (``output="x0"``): Euler tau-leaping of the reverse CTMC, and the Tweedie step.
- :class:`DFMEulerSampler`: discrete flow matching's Euler solver on a mixture path, with
  the divergence-free corrector term (``div_free``).
- :class:`ReMDMSampler`: ancestral sampling of absorbing models with ReMDM remasking
  (``cap``, ``rescale`` and ``loop`` strategies; eta = 0 is ancestral).

- :func:`sample_blocks`: semi-autoregressive generation past the model's context (MDLM's
  semi-AR), with an end-of-sequence token for variable-length output.
- :func:`sample_block_diffusion`: block diffusion (BD3-LM) block by block with a key/value
  cache of the finished blocks.

Each is registered by name (:data:`SAMPLERS`, :func:`make_sampler`); ``config()`` /
``Sampler.from_config()`` round-trip a sampler's settings through JSON.
"""

from discdiff.samplers.ancestral import AncestralSampler
from discdiff.samplers.base import ProcessMismatch, Sampler, SampleResult, time_grid
from discdiff.samplers.blocks import sample_block_diffusion, sample_blocks
from discdiff.samplers.caching import CachingSampler, FirstHittingSampler
from discdiff.samplers.confidence import ConfidenceSampler
from discdiff.samplers.dfm import DFMEulerSampler
from discdiff.samplers.planned import PlannedSampler
from discdiff.samplers.registry import (
    SAMPLERS,
    make_sampler,
    register_sampler,
    sampler_options,
)
from discdiff.samplers.remdm import ReMDMSampler
from discdiff.samplers.scores import ScoresAsX0, TauLeapingSampler, TweedieSampler
from discdiff.samplers.sundae import SundaeSampler

__all__ = [
    "SampleResult",
    "Sampler",
    "ProcessMismatch",
    "time_grid",
    "AncestralSampler",
    "CachingSampler",
    "FirstHittingSampler",
    "ConfidenceSampler",
    "SundaeSampler",
    "ReMDMSampler",
    "PlannedSampler",
    "DFMEulerSampler",
    "TauLeapingSampler",
    "TweedieSampler",
    "ScoresAsX0",
    "sample_blocks",
    "sample_block_diffusion",
    "SAMPLERS",
    "register_sampler",
    "make_sampler",
    "sampler_options",
]

# every module of this folder registers what it defines: a new file needs no edit here
from discdiff.registry import import_package_modules as _import_package_modules  # noqa: E402

_import_package_modules(__name__, __path__)
