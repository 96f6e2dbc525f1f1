"""Input coercion and argument checks shared by every metric family.

Samples arrive as torch tensors or numpy arrays ``[n, *dims]`` and leave as float64 numpy
arrays ``[n, D]`` (all non-batch dims flattened); every check raises an exception naming the
argument. Integer counts go through :func:`stiffkit._utils.check_int`, real scalars through
:func:`stiffkit._utils.check_real` (the helpers below only name its bounds).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_real
from stiffkit.diffusion.mixtures import GaussianMixture

#: Size (in float64 entries) of one chunk's distance/projection block: 32 MiB.
CHUNK_ELEMENTS = 2**22


def _as_samples(x: Any, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Return `x` as a float64 ``[n, D]`` array (all non-batch dims flattened)."""
    if isinstance(x, Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"`{name}` must have a real numeric dtype, got {x.dtype}.")
        shape = tuple(x.shape)
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"`{name}` must have a real numeric dtype, got {x.dtype}.")
        shape = x.shape
        arr = x.astype(np.float64, copy=False)
    else:
        raise TypeError(
            f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}."
        )
    if arr.ndim < 2 or math.prod(shape[1:]) == 0:
        raise ValueError(f"`{name}` must have shape [n, *dims] with dims non-empty, got {shape}.")
    if shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    arr = arr.reshape(shape[0], -1)
    if not allow_nonfinite and not np.isfinite(arr).all():
        raise ValueError(
            f"`{name}` contains NaN or Inf (evaluate() drops such rows and reports "
            "`nonfinite_rate`)."
        )
    return arr


def _as_reference(reference: Any, samples: Any) -> np.ndarray:
    """Return `reference` as ``[n, D]`` float64, checking it pairs row for row with `samples`."""
    ref = _as_samples(reference, "reference")
    if tuple(np.shape(samples)) != tuple(np.shape(reference)):
        raise ValueError(
            f"`samples` and `reference` must have the same shape, got "
            f"{tuple(np.shape(samples))} and {tuple(np.shape(reference))}."
        )
    return ref


def _check_gmm(gmm: Any) -> None:
    if not isinstance(gmm, GaussianMixture):
        raise TypeError(f"`gmm` must be a GaussianMixture, got {type(gmm).__name__}.")


def _check_dim(x: np.ndarray, dim: int, name: str, other: str) -> None:
    if x.shape[1] != dim:
        raise ValueError(f"`{name}` has {x.shape[1]} features per sample but {other} has {dim}.")


def _samples_of(samples: Any, gmm: Any, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Check `gmm` and return `samples` as float64 ``[n, gmm.dim]`` (the metrics' preamble)."""
    _check_gmm(gmm)
    x = _as_samples(samples, "samples", allow_nonfinite=allow_nonfinite)
    _check_dim(x, gmm.dim, "samples", "`gmm`")
    return x


def _check_fraction(v: Any, name: str) -> float:
    """Return `v` as a float, raising unless it is a real number strictly between 0 and 1."""
    return check_real(v, name, lo=0, hi=1, lo_open=True, hi_open=True)


def _check_choice(v: Any, name: str, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {v!r}.")
    return v


def _check_order(p: Any, name: str) -> None:
    """Raise unless `p` is a finite real number ≥ 1 (the order of a Wasserstein distance)."""
    check_real(p, name, lo=1)


def _check_threshold(v: Any, name: str) -> None:
    """Raise unless `v` is None or a finite real number."""
    if v is not None:
        check_real(v, name)
