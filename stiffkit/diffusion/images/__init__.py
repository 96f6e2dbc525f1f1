"""Learned image denoisers: EDM-preconditioned class-conditional conv nets of the 8×8 digits.

* :mod:`~stiffkit.diffusion.images.denoiser` — :class:`DigitsDenoiser`
  (``D(x, sigma, labels=None)``, EDM preconditioning, label dropout);
* :mod:`~stiffkit.diffusion.images.pretrained` — its weight files and the shipped models
  (``load_pretrained("digits")``, ``load_pretrained("digits_ag_guide")``);
* :mod:`~stiffkit.diffusion.images.training` — EDM training on CPU,
  ``python -m stiffkit.diffusion.images.training``;
* :mod:`~stiffkit.diffusion.images.report` — learned-vs-exact denoiser error per σ against
  :func:`~stiffkit.diffusion.digits_mixture`, memorisation and class consistency of samples,
  ``python -m stiffkit.diffusion.images.report``.
"""

from stiffkit.diffusion.images.denoiser import (
    NULL_LABEL,
    ConditionedDenoiser,
    DigitsDenoiser,
    edm_preconditioning,
)
from stiffkit.diffusion.images.pretrained import (
    DIGITS_PRETRAINED,
    load_digits_model,
    load_digits_pretrained,
    save_digits_model,
)

#: Names served lazily from :mod:`~stiffkit.diffusion.images.training`: importing it here
#: would make ``python -m stiffkit.diffusion.images.training`` find it already imported.
_FROM_TRAINING = ("DIGITS_RUNS", "DigitsTrainConfig", "DigitsTrainResult", "train_digits")


def __getattr__(name: str):
    if name in _FROM_TRAINING:
        from stiffkit.diffusion.images import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DIGITS_PRETRAINED",
    "DIGITS_RUNS",
    "NULL_LABEL",
    "ConditionedDenoiser",
    "DigitsDenoiser",
    "DigitsTrainConfig",
    "DigitsTrainResult",
    "edm_preconditioning",
    "load_digits_model",
    "load_digits_pretrained",
    "save_digits_model",
    "train_digits",
]
