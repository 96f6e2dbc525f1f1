"""Cheap stiffness estimates from data a solver already has (no extra evaluations).

* Proposition 1 of Kong et al. (ICLR 2026): for two points at the same time,
  ``ρ̂ = ‖f_a − f_b‖ / ‖x_a − x_b‖``. With ``Δx`` mostly along the dominant eigenvector
  ``v₁`` of a symmetric Jacobian, ``|λ₁|√(1 − ε²) ≤ ρ̂ ≤ |λ₁|`` (DESIGN.md §3).
* Directions: the normalised drift difference ``Δf/‖Δf‖`` (weights eigencomponent k by
  ``z_k²``, ERK-Guid's choice) and solution difference ``Δx/‖Δx‖`` (weights by ``z_k``).
* Hairer's stage-difference estimate [HNW II.10, p. 21]: the same ratio from two stages at
  the same abscissa (DOPRI5: stages 6/7, DOP853: 12/13), times ``h`` compared with the
  method's real stability boundary.
"""

from __future__ import annotations

from torch import Tensor

from stiffkit._utils import broadcast_per_sample, check_finite, check_same_shape, check_tensor, flat_norm

__all__ = ["PAIR_EPS", "pair_stiffness", "pair_directions"]

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
    num = flat_norm(f_a - f_b)
    den = flat_norm(x_a - x_b) + eps
    safe = den.clamp_min(1e-300) if eps == 0 else den
    return num / safe


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
