"""Order conditions of Runge–Kutta methods from rooted trees (Butcher's theory).

A method has order p iff for every rooted tree t with ``|t| ≤ p`` nodes its elementary
weight equals the inverse density: ``Φ(t) = bᵀ u(t) = 1/γ(t)`` [HNW, Thm. II.2.13], where

* ``u(•) = 𝟙`` and ``u([t₁, …, t_m]) = ∏_j A u(t_j)`` (elementwise product over children);
* ``γ(•) = 1`` and ``γ([t₁, …, t_m]) = |t| ∏_j γ(t_j)``.

The trees and elementary weights are :mod:`stiffkit.tableaux.trees` (pure functions of the
coefficients, which :class:`~stiffkit.tableaux.tableau.ButcherTableau` also uses to verify a
declared order on construction); this module is the public face that accepts names and
reports every condition. Everything is evaluated in exact rational arithmetic.
"""

from __future__ import annotations

from fractions import Fraction

import pandas as pd

from stiffkit._utils import check_int
from stiffkit.tableaux.registry import get_tableau
from stiffkit.tableaux.tableau import ButcherTableau
from stiffkit.tableaux.trees import (
    MAX_ORDER,
    rooted_trees,
    satisfied_order,
    stage_vectors,
    tree_density,
    tree_order,
    tree_string,
)

__all__ = [
    "rooted_trees",
    "tree_order",
    "tree_density",
    "order_condition_residuals",
    "computed_order",
]

#: Largest `max_order` of :func:`order_condition_residuals`: order 12 alone has 4766 trees
#: (15 s of exact arithmetic), and each order costs about three times the one before.
MAX_REPORT_ORDER = 12
WHICH = ("main", "embedded", "aux")


def _weights(tableau: ButcherTableau, which: str) -> tuple[Fraction, ...]:
    if which not in WHICH:
        raise ValueError(f"`which` must be 'main', 'embedded' or 'aux', got {which!r}.")
    if which == "main":
        return tableau.b
    vec = tableau.b_hat if which == "embedded" else tableau.b_hat_aux
    if vec is None:
        raise ValueError(f"Tableau {tableau.name!r} has no {which} weights.")
    return vec


def order_condition_residuals(
    tableau: ButcherTableau | str, max_order: int = MAX_ORDER, *, which: str = "main"
) -> pd.DataFrame:
    """Return every order condition up to `max_order` with its exact residual.

    Parameters
    ----------
    tableau : ButcherTableau or str
        The method.
    max_order : int
        Highest tree order to evaluate, 1 … :data:`MAX_REPORT_ORDER` (≤ 8 is fast; higher
        grows quickly).
    which : {"main", "embedded", "aux"}
        Which weights play the role of ``b``.

    Returns
    -------
    pandas.DataFrame
        One row per tree: ``order``, ``tree`` (bracket notation), ``gamma``, ``phi``
        (float), ``residual`` (float of the exact ``Φ(t) − 1/γ(t)``), ``satisfied``.
    """
    tableau = get_tableau(tableau)
    max_order = check_int(max_order, "max_order")
    if max_order > MAX_REPORT_ORDER:
        raise ValueError(f"`max_order` must be at most {MAX_REPORT_ORDER} (the number of trees "
                         f"grows about threefold per order), got {max_order}.")
    b = _weights(tableau, which)
    u = stage_vectors(tableau.A)
    rows = []
    for p in range(1, max_order + 1):
        for tree in rooted_trees(p):
            phi = sum((bi * ui for bi, ui in zip(b, u(tree))), Fraction(0))
            res = phi - Fraction(1, tree_density(tree))
            rows.append(
                dict(order=p, tree=tree_string(tree), gamma=tree_density(tree),
                     phi=float(phi), residual=float(res), satisfied=abs(res) <= tableau.tol)
            )
    return pd.DataFrame(rows)


def computed_order(
    tableau: ButcherTableau | str,
    embedded: bool = False,
    *,
    max_order: int = MAX_ORDER,
    which: str | None = None,
) -> int:
    """Return the highest order p ≤ `max_order` whose order conditions all hold.

    Conditions are checked exactly for exact tableaux and to ``tableau.tol`` for
    tableaux given by published decimals (Tsit5, DOP853).

    Parameters
    ----------
    tableau : ButcherTableau or str
        The method.
    embedded : bool
        Check the embedded weights `b_hat` instead of `b`.
    max_order : int
        Stop here (a method of order ≥ `max_order` returns `max_order`).
    which : {"main", "embedded", "aux"}, optional
        Overrides `embedded`; ``"aux"`` checks DOP853's order-3 weights.
    """
    tableau = get_tableau(tableau)
    max_order = check_int(max_order, "max_order")
    which = which or ("embedded" if embedded else "main")
    return satisfied_order(tableau.A, _weights(tableau, which), tableau.tol, max_order)
