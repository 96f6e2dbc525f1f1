"""Cheap stiffness estimates from data a solver already has (no extra evaluations).

* Proposition 1 of Kong et al. (ICLR 2026): for two points at the same time,
  ``ρ̂ = ‖f_a − f_b‖ / ‖x_a − x_b‖``. With ``Δx`` mostly along the dominant eigenvector
  ``v₁`` of a symmetric Jacobian, ``|λ₁|√(1 − ε²) ≤ ρ̂ ≤ |λ₁|``
  (docs/theory/proposition1.md, eq. (4)).
* Directions: the normalised drift difference ``Δf/‖Δf‖`` (weights eigencomponent k by
  ``z_k²``, ERK-Guid's choice) and solution difference ``Δx/‖Δx‖`` (weights by ``z_k``).
* Hairer's stage-difference estimate [HNW II.10, p. 21]: the same ratio from two stages at
  the same abscissa (DOPRI5: stages 6/7, DOP853: 12/13), times ``h`` compared with the
  method's real stability boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stiffkit._utils import (
    broadcast_per_sample,
    check_finite,
    check_same_shape,
    check_tensor,
    flat_norm,
    secant_ratio,
)
from stiffkit.tableaux import get_tableau, real_stability_interval

__all__ = [
    "PAIR_EPS",
    "embedded_stiffness",
    "hairer_stiffness",
    "pair_directions",
    "pair_stiffness",
    "stage_pair",
    "stiffness_indicator",
]

#: Guard added to denominators of pair estimates. ERK-Guid's reference code uses 1e-8;
#: with it, identical points give ρ̂ = 0 instead of NaN.
PAIR_EPS = 1e-8


def _check_pair(x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor) -> None:
    for name, v in (("x_a", x_a), ("f_a", f_a), ("x_b", x_b), ("f_b", f_b)):
        check_tensor(v, name)
        check_finite(v, name)
    check_same_shape(x_a, x_b, "x_a", "x_b")
    check_same_shape(f_a, f_b, "f_a", "f_b")
    check_same_shape(x_a, f_a, "x_a", "f_a")


def pair_stiffness(
    x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor, *, eps: float = PAIR_EPS
) -> Tensor:
    """Return ``ρ̂ = ‖f_a − f_b‖ / (‖x_a − x_b‖ + eps)`` per sample (Proposition 1).

    Parameters
    ----------
    x_a, x_b : Tensor, [batch, *dims]
        Two states at the same time.
    f_a, f_b : Tensor, [batch, *dims]
        The drift at each.
    eps : float
        Zero-denominator guard (:data:`PAIR_EPS`); identical points give 0, never NaN.

    Returns
    -------
    Tensor, [batch]
    """
    _check_pair(x_a, f_a, x_b, f_b)
    if not eps >= 0:
        raise ValueError("`eps` must be non-negative.")
    return secant_ratio(f_a - f_b, x_a - x_b, eps)


def pair_directions(
    x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor, *, eps: float = PAIR_EPS
) -> tuple[Tensor, Tensor]:
    """Return the unit drift difference and unit solution difference, ``[batch, *dims]`` each.

    The drift difference ``(f_a − f_b)/(‖f_a − f_b‖ + eps)`` is ERK-Guid's ``v̂``; the
    solution difference ``(x_a − x_b)/(‖x_a − x_b‖ + eps)`` is the alternative that weights
    eigencomponents by ``z_k`` instead of ``z_k²``. Zero differences give zero vectors.
    """
    _check_pair(x_a, f_a, x_b, f_b)
    df, dx = f_a - f_b, x_a - x_b
    v_f = df / broadcast_per_sample(flat_norm(df) + eps, df)
    v_x = dx / broadcast_per_sample(flat_norm(dx) + eps, dx)
    return v_f, v_x


# --------------------------------------------------------------------- from RK steps
def stage_pair(tableau) -> tuple[int, int] | None:
    """Return the last two stages ``(i, j)``, ``i < j``, at the same abscissa, or None.

    DOPRI5 and Tsit5 give stages 6/7 (0-based ``(5, 6)``), DOP853 12/13, RK4 2/3. Their
    difference ``k_j − k_i ≈ J (g_j − g_i)`` is Hairer's stiffness probe.
    """
    tab = get_tableau(tableau)
    for j in reversed(range(tab.num_stages)):
        for i in reversed(range(j)):
            if abs(tab.c[i] - tab.c[j]) <= tab.tol and any(
                abs(tab.A[i][m] - tab.A[j][m]) > tab.tol for m in range(tab.num_stages)
            ):
                return i, j
    return None


def hairer_stiffness(step, tableau, *, eps: float = PAIR_EPS) -> Tensor:
    """Return Hairer's stage-difference estimate ``‖k_j − k_i‖ / ‖g_j − g_i‖`` per sample.

    Uses two stages of an :class:`~stiffkit.integrate.rk.RKStep` at the same abscissa
    (:func:`stage_pair`); no extra evaluation. Multiply by ``|h|`` and compare with
    :func:`~stiffkit.tableaux.stability.real_stability_interval` (DOPRI5 flags ``h·ρ̂ > 3.25``).

    Raises
    ------
    ValueError
        If the tableau has no two stages at the same abscissa (Heun, Bogacki–Shampine,
        Cash–Karp, Fehlberg): use :func:`embedded_stiffness` instead.
    """
    tab = get_tableau(tableau)
    pair = stage_pair(tab)
    if pair is None:
        raise ValueError(
            f"Tableau {tab.name!r} has no two stages at the same abscissa; "
            "use `embedded_stiffness` (one extra evaluation) instead."
        )
    if len(step.k) != tab.num_stages:
        raise ValueError(f"`step` has {len(step.k)} stages but `tableau` has {tab.num_stages}.")
    i, j = pair
    return pair_stiffness(step.g[j], step.k[j], step.g[i], step.k[i], eps=eps)


def embedded_stiffness(f, step, *, f_new: Tensor | None = None, eps: float = PAIR_EPS) -> Tensor:
    """Return ``‖f(t+h, x̂) − f(t+h, x)‖ / ‖x̂ − x‖`` per sample from a step's two solutions.

    The fallback for tableaux without a same-abscissa stage pair: one extra evaluation
    ``f(t + h, x̂)`` (two if `f_new` = ``f(t + h, x)`` is not supplied; FSAL methods have
    it as ``step.k[-1]``). Exact on linear problems: it is the Rayleigh-type quotient of
    Proposition 1 with ``Δx = x − x̂``.
    """
    if step.x_hat is None:
        raise ValueError("`step` has no embedded solution (tableau without `b_hat`).")
    t_new = step.t + step.h
    if f_new is None:
        f_new = f(t_new, step.x)
    f_hat = f(t_new, step.x_hat)
    return pair_stiffness(step.x, f_new, step.x_hat, f_hat, eps=eps)


def stiffness_indicator(h, rho: Tensor, tableau) -> Tensor:
    """Return ``|h|·ρ̂ / real_stability_interval(tableau)``: ≳ 1 when stability limits h."""
    boundary = real_stability_interval(tableau)
    return torch.as_tensor(h, dtype=rho.dtype).abs() * rho / boundary
