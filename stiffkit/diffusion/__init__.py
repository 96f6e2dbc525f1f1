"""The diffusion world: exact Gaussian mixtures, learned toy denoisers, samplers and metrics.

* :mod:`~stiffkit.diffusion.mixtures` — exact mixtures (the tree, rings, grids, d-dimensional,
  the scikit-learn digits as images) with closed-form score, denoiser and drift Jacobian;
* :mod:`~stiffkit.diffusion.models` / :mod:`~stiffkit.diffusion.training` — the learned energy
  MLPs (the *learned ODE*) and their training on the exact score;
* :mod:`~stiffkit.diffusion.images` — learned EDM denoisers of the 8×8 digits, class-conditional
  with an unconditional side (``load_pretrained("digits")``, ``"digits_ag_guide"``);
* :mod:`~stiffkit.diffusion.samplers` — Heun / Euler / DPM-Solver-2 / DEIS with ERK-Guid
  (:mod:`~stiffkit.diffusion.erk`), :mod:`~stiffkit.diffusion.guidance` (CFG and autoguidance),
  :mod:`~stiffkit.diffusion.schedules` and per-sample-seeded :mod:`~stiffkit.diffusion.noise`;
* :mod:`~stiffkit.diffusion.metrics` — 2-D sample quality with bootstrap intervals.

The toy world of the paper's figures is :func:`stiffkit.paper.toy_world`.
"""

from stiffkit.diffusion.erk import W_STIFF_THEORY, ErkCorrection, ErkGuid, erk_guid_correction
from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.images import DigitsDenoiser
from stiffkit.diffusion.metrics import evaluate, noise_floor
from stiffkit.diffusion.mixtures import (
    GaussianMixture,
    IsotropicMixture,
    digits_mixture,
    grid_gmm,
    random_gmm,
    ring_gmm,
    tree_gmm,
)
from stiffkit.diffusion.models import (
    EnergyDenoiser,
    load_model,
    load_pretrained,
    save_model,
)
from stiffkit.diffusion.noise import initial_noise, mixture_samples, randn_per_sample
from stiffkit.diffusion.oracle import dominant_pair_oracle, mixture_oracle
from stiffkit.diffusion.samplers import (
    SOLVERS,
    deis_coefficients,
    pf_ode_drift,
    reference_sample,
    sample,
    sample_final,
)
from stiffkit.diffusion.schedules import edm_sigmas
from stiffkit.diffusion.training import TrainConfig, TrainResult, train

__all__ = [
    "W_STIFF_THEORY",
    "SOLVERS",
    "DigitsDenoiser",
    "EnergyDenoiser",
    "ErkCorrection",
    "ErkGuid",
    "GaussianMixture",
    "Guided",
    "IsotropicMixture",
    "TrainConfig",
    "TrainResult",
    "deis_coefficients",
    "digits_mixture",
    "dominant_pair_oracle",
    "edm_sigmas",
    "erk_guid_correction",
    "evaluate",
    "grid_gmm",
    "initial_noise",
    "load_model",
    "load_pretrained",
    "mixture_oracle",
    "mixture_samples",
    "noise_floor",
    "pf_ode_drift",
    "randn_per_sample",
    "random_gmm",
    "reference_sample",
    "ring_gmm",
    "sample",
    "sample_final",
    "save_model",
    "train",
    "tree_gmm",
]
