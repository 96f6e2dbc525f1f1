"""Noise levels for diffusion samplers: EDM's grid, grid validation and σ coercion.

σ runs down (docs/conventions.md, eq. (3)). :func:`check_sigmas` validates a sampler's grid;
:func:`as_sigma` is the one place a noise level becomes a tensor of the state's dtype and
device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stiffkit._utils import as_per_sample, check_float_dtype, check_int, check_real

__all__ = [
    "edm_sigmas",
    "check_sigmas",
    "as_sigma",
    "SigmaLike",
    "SIGMA_MIN",
    "SIGMA_MAX",
    "TOY_SIGMA_MAX",
    "MAX_GRID_STEPS",
    "RHO",
]

#: A noise level: a Python number, a 0-d tensor, or one level per sample ``[batch]``.
SigmaLike = float | Tensor

#: EDM's defaults (Karras et al. 2022): σ_min, σ_max for images, and the grid exponent ρ.
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
#: σ_max of the 2-D toy (the autoguidance paper's tree).
TOY_SIGMA_MAX = 5.0
#: Most levels :func:`edm_sigmas` builds: no sampler or reference solve needs more, and a
#: larger grid would not be solved (one denoiser call per level at least).
MAX_GRID_STEPS = 10**7


def edm_sigmas(
    num_steps: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return EDM's grid ``σ_0 = σ_max > … > σ_{N−1} = σ_min`` with a trailing ``σ_N = 0``.

    ``σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`` for ``i = 0 … N−1``
    (Karras et al. 2022, eq. 5). With Heun and a final Euler step to 0 this costs
    ``2N − 1`` denoiser evaluations.

    Parameters
    ----------
    num_steps : int
        ``N``, the number of positive noise levels (1 … :data:`MAX_GRID_STEPS`; ``N = 1``
        gives ``[σ_max, 0]``).
    sigma_min, sigma_max : float
        ``0 < σ_min < σ_max`` (``σ_min = σ_max`` is allowed only for ``N = 1``).
    rho : float
        Grid exponent (> 0); larger concentrates steps at low noise.

    Returns
    -------
    Tensor, shape [N + 1]

    Raises
    ------
    TypeError
        If `dtype` is not a floating torch dtype.
    ValueError
        Naming the argument for bad values, or if the grid is not strictly decreasing once
        rounded to `dtype` (levels too close together for it).
    """
    num_steps = check_int(num_steps, "num_steps")
    if num_steps > MAX_GRID_STEPS:
        raise ValueError(f"`num_steps` must be at most MAX_GRID_STEPS = {MAX_GRID_STEPS:.0e} (one "
                         f"denoiser call per level), got {num_steps}.")
    check_float_dtype(dtype)
    for name, val in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        check_real(val, name, lo=0, lo_open=True)
    if num_steps > 1 and not sigma_min < sigma_max:
        raise ValueError(
            f"`sigma_min` must be smaller than `sigma_max`, got {sigma_min} and {sigma_max}."
        )
    i = torch.arange(num_steps, dtype=torch.float64)
    frac = i / (num_steps - 1) if num_steps > 1 else i
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + frac * (lo - hi)) ** rho
    sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    out = sigmas.to(dtype=dtype)
    if not bool((out[1:] < out[:-1]).all()):
        raise ValueError(f"The grid of {num_steps} levels from `sigma_max` = {sigma_max:g} to "
                         f"`sigma_min` = {sigma_min:g} is not strictly decreasing in {dtype}: "
                         "the levels are too close together for it.")
    return out.to(device=device)


def check_sigmas(sigmas, *, name: str = "sigmas") -> Tensor:
    """Validate a sampler grid and return it as a 1-D float64 tensor.

    A grid is strictly decreasing and finite, with every level positive except possibly
    the last, which may be 0 (then the sampler's last step is an Euler step to σ = 0).

    Raises
    ------
    TypeError
        If `sigmas` is not numeric (or complex).
    ValueError
        Naming the problem: wrong shape, fewer than 2 levels, NaN/Inf, not strictly
        decreasing, non-positive levels before the last.
    """
    if isinstance(sigmas, Tensor) and (sigmas.is_complex() or sigmas.dtype == torch.bool):
        raise TypeError(f"`{name}` must be real, got a {sigmas.dtype} tensor.")
    try:
        s = torch.as_tensor(sigmas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"`{name}` must be a 1-D sequence or tensor of noise levels, got "
                        f"{sigmas!r}.") from err
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError(
            f"`{name}` must be a 1-D grid with at least 2 levels, got shape {tuple(s.shape)}."
        )
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"`{name}` contains NaN or Inf.")
    if not bool((s[1:] < s[:-1]).all()):
        raise ValueError(f"`{name}` must be strictly decreasing (σ runs down).")
    if not bool((s[:-1] > 0).all()) or float(s[-1]) < 0:
        raise ValueError(f"`{name}` must be positive, except a final 0.")
    return s


def as_sigma(
    sigma: SigmaLike,
    like: Tensor,
    *,
    dtype: torch.dtype | None = None,
    check: bool = False,
    positive: bool = False,
    name: str = "sigma",
) -> Tensor:
    """Return the noise level `sigma` as a tensor on `like`'s device (the one σ coercion).

    Parameters
    ----------
    sigma : float or Tensor, [] or [batch]
        One level for the whole batch, or one per sample.
    like : Tensor, [batch, *dims]
        The state the level belongs to: it sets the device, the default dtype and the
        batch size of a per-sample level.
    dtype : torch.dtype, optional
        The result's dtype (default: ``like.dtype``; exact mixtures ask for float64).
    check : bool
        Validate the shape (``[]`` or ``[batch]``) and the values (finite and ``≥ 0``, or
        ``> 0`` with `positive`). Off by default: the samplers' levels come from a grid
        :func:`check_sigmas` already validated, and a check would synchronise the device at
        every drift evaluation.
    positive : bool
        With `check`, also reject ``σ = 0`` (where the probability-flow drift is singular).
    name : str
        The argument's name in error messages.

    Returns
    -------
    Tensor, [] or [batch]
        ``sigma`` converted (not copied when it already has the dtype and device); use
        :func:`stiffkit._utils.broadcast_per_sample` to broadcast it against the state.

    Raises
    ------
    ValueError
        With `check`: a shape other than ``[]`` / ``[batch]``, NaN/Inf, negative values (or
        zero, with `positive`).
    """
    return as_per_sample(sigma, name, batch=like.shape[0] if like.ndim else 1,
                         dtype=like.dtype if dtype is None else dtype, device=like.device,
                         check=check, bound="positive" if positive else "non-negative")
