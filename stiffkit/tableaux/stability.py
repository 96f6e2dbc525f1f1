"""Linear stability of explicit Runge–Kutta methods.

On the test equation ``x' = λx`` one step multiplies ``x`` by the stability function
``R(z) = 1 + z bᵀ(I − zA)⁻¹𝟙`` with ``z = hλ``. For an explicit method ``A`` is nilpotent,
so ``R`` is the polynomial ``Σ_k (bᵀ A^{k−1} 𝟙) z^k`` of degree ≤ s, computed here with
exact rational coefficients.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from numpy.polynomial import Polynomial
from scipy.optimize import brentq

from stiffkit.tableaux.registry import get_tableau
from stiffkit.tableaux.tableau import ButcherTableau

__all__ = [
    "stability_coefficients",
    "stability_polynomial",
    "stability_function",
    "real_stability_interval",
]

#: Relative distance beyond a root of |R| = 1 at which instability is probed.
_PROBE = 1e-7


def stability_coefficients(
    tableau: ButcherTableau | str, embedded: bool = False
) -> tuple[Fraction, ...]:
    """Return the exact coefficients ``(1, bᵀ𝟙, bᵀA𝟙, bᵀA²𝟙, …)`` of ``R(z)``.

    Parameters
    ----------
    tableau : ButcherTableau or str
        The method.
    embedded : bool
        Use the embedded weights `b_hat` (the stability function ``R̂``).
    """
    tableau = get_tableau(tableau)
    if embedded and tableau.b_hat is None:
        raise ValueError(f"Tableau {tableau.name!r} has no embedded weights `b_hat`.")
    b = tableau.b_hat if embedded else tableau.b
    A, s = tableau.A, tableau.num_stages
    coeffs = [Fraction(1)]
    v = [Fraction(1)] * s  # A^{k-1} 𝟙
    for _ in range(s):
        coeffs.append(sum((bi * vi for bi, vi in zip(b, v)), Fraction(0)))
        v = [sum((A[i][j] * v[j] for j in range(i)), Fraction(0)) for i in range(s)]
    while len(coeffs) > 1 and coeffs[-1] == 0:
        coeffs.pop()
    return tuple(coeffs)


def stability_polynomial(tableau: ButcherTableau | str, embedded: bool = False) -> Polynomial:
    """Return ``R(z)`` (or ``R̂(z)``) as a float64 :class:`numpy.polynomial.Polynomial`."""
    return Polynomial([float(c) for c in stability_coefficients(tableau, embedded)])


def stability_function(tableau: ButcherTableau | str, z, embedded: bool = False) -> np.ndarray:
    """Evaluate ``R(z)`` at (complex) points `z` of any shape.

    Raises
    ------
    TypeError
        If `z` is not numeric (real or complex numbers, arrays or CPU tensors of them).
    ValueError
        If `z` is ragged or holds NaN or Inf.
    """
    R = stability_polynomial(tableau, embedded)
    try:
        points = np.asarray(z)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"`z` must be an array of numbers, got {type(z).__name__} "
                         f"({err}).") from err
    if points.dtype.kind not in "iufc":
        raise TypeError(f"`z` must hold real or complex numbers, got dtype {points.dtype}.")
    if not np.isfinite(points).all():
        raise ValueError("`z` contains NaN or Inf.")
    return R(points)


def real_stability_interval(tableau: ButcherTableau | str, embedded: bool = False) -> float:
    """Return r such that ``|R(x)| ≤ 1`` on ``[−r, 0]`` and not just beyond ``−r``.

    Known values: 2 for Euler and Heun, ≈ 2.7853 for RK4, ≈ 3.3066 for DOPRI5 and
    ≈ 6.3937 for DOP853.
    """
    R = stability_polynomial(tableau, embedded)
    if R.degree() < 1:
        return float("inf")
    candidates = []
    for target in (1.0, -1.0):
        for root in (R - target).roots():
            if abs(root.imag) <= 1e-7 * max(1.0, abs(root)) and root.real < -1e-12:
                candidates.append(root.real)
    for x in sorted(candidates, reverse=True):  # nearest to 0 first
        probe = x - _PROBE * max(1.0, abs(x))
        if abs(R(probe)) > 1.0:
            # Polish the root where |R| crosses 1 (the polynomial roots lose a few digits).
            target = 1.0 if R(probe) > 0 else -1.0
            lo, hi = x - 1e-4 * max(1.0, abs(x)), min(x + 1e-4 * max(1.0, abs(x)), -1e-12)
            if (R(lo) - target) * (R(hi) - target) < 0:
                x = brentq(lambda y, level=target: R(y) - level, lo, hi, xtol=1e-15, rtol=1e-15)
            return float(-x)
    return float("inf")  # pragma: no cover - an explicit method's |R| always grows
