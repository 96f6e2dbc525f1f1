"""diffusers integration: a Heun scheduler with ERK-Guid, and EDM denoisers of diffusers UNets.

* :class:`EDMERKHeunScheduler` — EDM's Heun sampler as a diffusers scheduler
  (``SchedulerMixin`` + ``ConfigMixin``), with ERK-Guid kept as scheduler state: the
  ordinary loop ``scale_model_input → model → step(...).prev_sample`` drives it, at
  ``2N − 1`` model calls and no extra one for the correction;
* :func:`edm_denoiser` — ``D(x, σ)`` of a model in the scheduler's EDM preconditioning, so
  :func:`stiffkit.diffusion.sample` runs the same sampler outside diffusers;
* :func:`denoiser_from_diffusers` — ``D(x, σ)`` of an ε-, v- or x₀-prediction UNet trained
  with a DDPM-style (VP) schedule, for :func:`stiffkit.diffusion.sample`,
  :func:`stiffkit.analyze` and the eigen-estimators.

Needs diffusers (``pip install stiffkit[diffusers]``, Python ≥ 3.11).
"""

from __future__ import annotations

try:
    import diffusers  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "stiffkit.integrations.diffusers needs diffusers: pip install 'stiffkit[diffusers]' "
        "(diffusers 0.42 needs Python >= 3.11)."
    ) from err

from stiffkit.integrations.diffusers.denoiser import DiffusersDenoiser, denoiser_from_diffusers
from stiffkit.integrations.diffusers.scheduler import (
    EDMERKHeunScheduler,
    EDMERKHeunSchedulerOutput,
    edm_denoiser,
)

__all__ = [
    "DiffusersDenoiser",
    "EDMERKHeunScheduler",
    "EDMERKHeunSchedulerOutput",
    "denoiser_from_diffusers",
    "edm_denoiser",
]
