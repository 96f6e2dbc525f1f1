"""ERK-Guid: the embedded Runge–Kutta pair's error turned into a stabilising correction.

Kong, Lee, Hong, Kim, "Error as Signal: Stiffness-Aware Diffusion Sampling via Embedded
Runge-Kutta Guidance" (ICLR 2026), DESIGN.md §4. Given two points of the trajectory with
their drifts, ``(x_a, f_a)`` and ``(x_b, f_b)``, the pair estimates the stiffness and its
direction at no extra evaluation (Proposition 1)::

    ρ̂ = ‖f_a − f_b‖ / (‖x_a − x_b‖ + ε),   v̂ = (f_a − f_b) / (‖f_a − f_b‖ + ε),

and the step ``x_next`` of size ``h`` is corrected along ``v̂``::

    z = (w_stiff · h · ρ̂)²,   β = 1[ρ̂ > w_con],   x_next ← x_next + sign · h β z ⟨v̂, f⟩ v̂,

with ``f`` the drift at the step's start and ``sign = −1`` (Heun, DPM-Solver-2) or ``+1``
(DEIS, as in the reference code). On a linear drift with Heun, ``w_stiff = 1/√6`` cancels the
leading local truncation error along ``v̂`` (:data:`W_STIFF_THEORY`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Union

import torch
from torch import Tensor

from stiffkit._utils import broadcast_per_sample, flat_dot, flat_norm
from stiffkit.estimators.pair import PAIR_EPS

__all__ = [
    "W_STIFF_THEORY",
    "ErkCorrection",
    "erk_guid_correction",
    "Oracle",
    "dominant_pair_oracle",
    "mixture_oracle",
]

#: The w_stiff that cancels Heun's leading LTE on a linear drift: (hλ)³/6 = w²(hλ)³.
W_STIFF_THEORY = 1.0 / math.sqrt(6.0)

#: An oracle maps ``(sigma, x)`` to the exact ``(|λ₁| [batch], v₁ [batch, *dims])``.
Oracle = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]


class ErkCorrection(NamedTuple):
    """One ERK-Guid correction, per sample.

    Attributes
    ----------
    delta : Tensor, [batch, *dims]
        What is added to the step's result (already signed).
    rho : Tensor, [batch]
        The stiffness used (ρ̂ from the pair, or the oracle's |λ₁|).
    beta : Tensor, [batch]
        The gate ``1[ρ > w_con]`` (0 or 1, in the state's dtype).
    delta_norm : Tensor, [batch]
        ``‖delta‖`` per sample (the sampler's ``erk_correction_norm`` diagnostic).
    """

    delta: Tensor
    rho: Tensor
    beta: Tensor
    delta_norm: Tensor


def erk_guid_correction(
    f: Tensor,
    h: float | Tensor,
    *,
    w_stiff: float,
    w_con: float,
    dx: Tensor | None = None,
    df: Tensor | None = None,
    rho: Tensor | None = None,
    v: Tensor | None = None,
    sign: float = -1.0,
    eps: float = PAIR_EPS,
) -> ErkCorrection:
    """Return ERK-Guid's correction of one step (no function evaluations).

    Parameters
    ----------
    f : Tensor, [batch, *dims]
        Drift at the step's start; its component along the direction is what is removed.
    h : float or Tensor
        Positive step size ``σ_i − σ_{i+1}`` (DEIS: the previous step's size).
    w_stiff, w_con : float
        Strength and gate threshold (the paper's ``w_stiff`` and ``w_con``).
    dx, df : Tensor, [batch, *dims]
        The pair's solution and drift differences ``x_a − x_b``, ``f_a − f_b``; used when
        `rho` / `v` are not given.
    rho, v : Tensor, optional
        Replace the pair estimates (the *oracle* variant: exact ``|λ₁|`` and unit ``v₁``).
    sign : float
        −1 subtracts the correction (Heun, DPM-Solver-2), +1 adds it (DEIS upstream).
    eps : float
        Denominator guard of the pair estimates (:data:`stiffkit.estimators.PAIR_EPS`, the reference
        code's 1e-8).
    """
    if (rho is None or v is None) and (dx is None or df is None):
        raise ValueError("Give the pair differences `dx` and `df`, or both `rho` and `v`.")
    norm_df = flat_norm(df) if df is not None else None
    if rho is None:
        rho = norm_df / (flat_norm(dx) + eps)
    beta = (rho > w_con).to(f.dtype)
    z = (w_stiff * h * rho) ** 2
    if v is None:
        # v̂ = df / (‖df‖ + ε), kept implicit: delta = c·df with c = sign·h·β·z·⟨df, f⟩/(‖df‖ + ε)².
        # Same values as forming v̂, with two fewer full-size passes (the sampler's hot loop).
        coef = sign * h * beta * z * flat_dot(df, f) / (norm_df + eps) ** 2  # [batch]
        delta = broadcast_per_sample(coef, df) * df
        return ErkCorrection(delta, rho, beta, coef.abs() * norm_df)
    coef = sign * h * beta * z * flat_dot(v, f)  # [batch]
    delta = broadcast_per_sample(coef, f) * v
    return ErkCorrection(delta, rho, beta, flat_norm(delta))


def dominant_pair_oracle(drift: Callable[[Tensor, Tensor], Tensor], method: str = "dense", *,
                         symmetric: bool = True, **eig_kwargs) -> Oracle:
    """Return an oracle from :func:`stiffkit.dominant_eig` on ``drift(sigma, x)``.

    ``method`` is "dense" (exact for small dimensions), "power" or "arpack" (matrix-free);
    probability-flow drifts of conservative denoisers have symmetric Jacobians.
    """
    from stiffkit.estimators.eigen import dominant_eig

    def oracle(sigma: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        eig = dominant_eig(drift, sigma, x, method=method, symmetric=symmetric, **eig_kwargs)
        value = eig.value.real if eig.value.is_complex() else eig.value
        vector = eig.vector.real if eig.vector.is_complex() else eig.vector
        return value.abs().to(x.dtype), vector.to(x.dtype)

    return oracle


def mixture_oracle(mixture) -> Oracle:
    """Return the exact oracle of an (unguided) Gaussian mixture's drift: closed-form ``J_f`` + ``eigh``."""

    def oracle(sigma: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        jac = mixture.drift_jacobian(x, sigma).to(torch.float64)  # [batch, d, d]
        values, vectors = torch.linalg.eigh(jac)
        idx = values.abs().argmax(dim=1)  # [batch]
        rho = values.abs().gather(1, idx[:, None])[:, 0]
        v = vectors.gather(2, idx[:, None, None].expand(-1, jac.shape[1], 1))[..., 0]
        return rho.to(x.dtype), v.to(x.dtype)

    return oracle


OracleSpec = Union[None, str, Oracle]
