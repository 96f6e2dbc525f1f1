"""DEIS's tAB multistep sampler (Zhang & Chen 2023) on the σ grid, with ERK-Guid across steps.

Step n extrapolates the drift by the polynomial through the current and up to
``max_order − 1`` previous drifts and integrates it exactly:
``x_{n+1} = x_n + Σ_j C_j f_{n−j}`` (:func:`deis_coefficients`; for the VE / EDM
parametrisation the exponential integrator's linear part vanishes). The first step is
Euler; the order then rises by one per step up to `max_order`. ERK-Guid's pair spans two
steps: ``(x_n, f_n)`` and ``(x_{n−1}, f_{n−1})`` with the previous step's size; the
reference code *adds* the correction (``correction_sign = +1``) — the opposite sign is not
explained upstream, so it is an option.

Stability: on ``dx/dσ = λx`` with ``z = (σ_{n+1} − σ_n) λ`` and normalised weights
``c_j = C_j/(σ_{n+1} − σ_n)``, step n maps the history ``(x_n, …, x_{n−p})`` by the
companion matrix with first row ``(1 + z c_0, z c_1, …, z c_p)`` and ones below the
diagonal. Its boundary is the smallest ``r_n`` beyond which the spectral radius of that
matrix exceeds 1 for real ``z ∈ [−r_n, 0]`` — the frozen-step linear stability of a
variable-step method (constant steps give Adams–Bashforth's 2, 1, 6/11, 3/10).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.erk import ErkPair
from stiffkit.diffusion.samplers.drift import Drift
from stiffkit.diffusion.samplers.solvers import Solver, StepOut

__all__ = [
    "DEIS_MAX_ORDER",
    "check_max_order",
    "check_deis_options",
    "deis_coefficients",
    "deis_step",
    "deis_boundaries",
    "multistep_boundary",
    "DEIS",
]

#: DEIS's maximal number of drifts in its polynomial extrapolation.
DEIS_MAX_ORDER = 4
#: Scan of ``|z|`` for the first instability: geometric from 1e-6 to 1e3.
_SCAN = np.geomspace(1e-6, 1e3, 1200)

History = tuple[tuple[Tensor, Tensor, Tensor], ...]


def check_max_order(max_order: int) -> int:
    """Return `max_order` as an int, raising ``ValueError`` unless it lies in 1 … 4."""
    if check_int(max_order, "max_order") > 4:
        raise ValueError(f"`max_order` must be an integer in [1, 4], got {max_order!r}.")
    return int(max_order)


def check_deis_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return DEIS's options ``{"max_order": ...}`` checked (:func:`check_max_order`)."""
    return {"max_order": check_max_order(options["max_order"])}


def deis_coefficients(sigmas: list[float], sigma_next: float) -> list[float]:
    """Return DEIS (tAB) weights ``C_j = ∫_{σ_i}^{σ_next} ℓ_j(σ) dσ`` for drifts at `sigmas`.

    ``sigmas = [σ_i, σ_{i−1}, …]`` are the levels of the current and previous drifts and
    ``ℓ_j`` their Lagrange basis polynomials, so ``x_next = x_i + Σ_j C_j f_j`` integrates
    the polynomial extrapolation of the drift exactly (Zhang & Chen 2023, "tAB"; for the VE /
    EDM parametrisation the exponential integrator's linear part vanishes). One level gives
    Euler, ``C = σ_next − σ_i``.
    """
    P = np.polynomial.Polynomial
    coeffs = []
    for j, sj in enumerate(sigmas):
        basis = P([1.0])
        for m, sm in enumerate(sigmas):
            if m != j:
                basis = basis * P([-sm, 1.0]) / (sj - sm)
        antider = basis.integ()
        coeffs.append(float(antider(sigma_next) - antider(sigmas[0])))
    return coeffs


def deis_step(drift: Drift, x: Tensor, f: Tensor, sigma: Tensor, sigma_next: Tensor,
              carry: History | None = None, *, max_order: int = DEIS_MAX_ORDER) -> StepOut:
    """One DEIS step (no evaluation beyond the driver's ``f``); `carry` holds past drifts.

    Parameters
    ----------
    carry : tuple of (sigma, x, f), optional
        The previous levels, states ``[batch, *dims]`` and drifts, newest last.

    Returns
    -------
    StepOut
        ``x_next``; the pair ``(x − x_prev, f − f_prev)`` with the previous step's size
        (None on the first step); the history, newest last.
    """
    history = carry or ()
    hist = history[-(max_order - 1):] if max_order > 1 else ()
    levels = [float(sigma)] + [float(h_[0]) for h_ in reversed(hist)]
    drifts = [f] + [h_[2] for h_ in reversed(hist)]
    x_next = x
    for c, fj in zip(deis_coefficients(levels, float(sigma_next)), drifts):
        x_next = x_next + c * fj
    pair = None
    if history:
        s_prev, x_prev, f_prev = history[-1]
        pair = ErkPair(x - x_prev, f - f_prev, s_prev - sigma)
    history = (*history, (sigma, x, f))[-max(max_order - 1, 1):]
    return StepOut(x_next, pair, carry=history)


def _spectral_radius(weights: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Spectral radius of the companion matrix of ``x_{n+1} = x_n + z Σ_j c_j x_{n−j}``."""
    k = weights.shape[0]
    M = np.zeros((z.shape[0], k, k))
    M[:, 0, :] = z[:, None] * weights[None, :]
    M[:, 0, 0] += 1.0
    for i in range(1, k):
        M[:, i, i - 1] = 1.0
    return np.abs(np.linalg.eigvals(M)).max(axis=1)


@functools.lru_cache(maxsize=4096)
def multistep_boundary(weights: tuple[float, ...]) -> float:
    """Return the real stability boundary of ``x_{n+1} = x_n + z Σ_j c_j x_{n−j}``.

    Parameters
    ----------
    weights : tuple of float
        The normalised weights ``c_0, c_1, …`` (they sum to 1 for a consistent method).

    Returns
    -------
    float
        The smallest ``r > 0`` with spectral radius ≤ 1 on ``[−r, 0]`` and > 1 just beyond
        (found on a geometric scan of ``|z|`` and polished by Brent's method); ``inf`` if
        the scan up to ``|z| = 1e3`` finds no instability.
    """
    c = np.asarray(weights, dtype=np.float64)
    unstable = np.nonzero(_spectral_radius(c, -_SCAN) > 1.0 + 1e-12)[0]
    if unstable.size == 0:
        return float("inf")
    i = int(unstable[0])
    lo = _SCAN[i - 1] if i > 0 else 0.5 * _SCAN[0]
    def excess(a: float) -> float:
        return float(_spectral_radius(c, np.array([-a]))[0]) - 1.0

    if excess(lo) > 0:  # unstable below the scan's first point
        return float(lo)
    return float(brentq(excess, lo, _SCAN[i], xtol=1e-14, rtol=1e-13))


def deis_boundaries(sigmas: Tensor, *, max_order: int = DEIS_MAX_ORDER) -> Tensor:
    """Return each step's boundary on the positive float64 grid `sigmas` ``[M + 1]``.

    Step n uses the drifts of ``min(n, max_order − 1)`` previous levels, as
    :func:`deis_step` does.

    Returns
    -------
    Tensor, [M], float64
    """
    levels = [float(s) for s in sigmas]
    out = []
    for n in range(len(levels) - 1):
        p = min(n, max_order - 1)
        back = [levels[n - j] for j in range(p + 1)]  # σ_n, σ_{n−1}, …
        h = levels[n + 1] - levels[n]
        weights = tuple(c / h for c in deis_coefficients(back, levels[n + 1]))
        out.append(multistep_boundary(weights))
    return torch.tensor(out, dtype=torch.float64)


DEIS = Solver("deis", deis_step, deis_boundaries, correction_sign=+1.0,
              options={"max_order": DEIS_MAX_ORDER}, check_options=check_deis_options)
