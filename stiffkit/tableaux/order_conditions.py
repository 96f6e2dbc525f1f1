"""Order conditions of Runge–Kutta methods from rooted trees (Butcher's theory).

A method has order p iff for every rooted tree t with ``|t| ≤ p`` nodes its elementary
weight equals the inverse density: ``Φ(t) = bᵀ u(t) = 1/γ(t)`` [HNW, Thm. II.2.13], where

* ``u(•) = 𝟙`` and ``u([t₁, …, t_m]) = ∏_j A u(t_j)`` (elementwise product over children);
* ``γ(•) = 1`` and ``γ([t₁, …, t_m]) = |t| ∏_j γ(t_j)``.

Trees are generated programmatically (every tree of order n grows from one of order n − 1
by attaching a leaf), so no condition is typed by hand. Everything is evaluated in exact
rational arithmetic.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import pandas as pd

from stiffkit._utils import check_int
from stiffkit.tableaux.registry import get_tableau
from stiffkit.tableaux.tableau import ButcherTableau

__all__ = [
    "rooted_trees",
    "tree_order",
    "tree_density",
    "order_condition_residuals",
    "computed_order",
]

#: A rooted tree as the sorted tuple of its children; the single node is ``()``.
Tree = tuple

MAX_ORDER = 8


def _canonical(children) -> Tree:
    return tuple(sorted(children, key=_sort_key))


def _sort_key(tree: Tree):
    return (tree_order(tree), repr(tree))


@functools.lru_cache(maxsize=None)
def tree_order(tree: Tree) -> int:
    """Return the number of nodes ``|t|``."""
    return 1 + sum(tree_order(child) for child in tree)


@functools.lru_cache(maxsize=None)
def tree_density(tree: Tree) -> int:
    """Return the density ``γ(t)``."""
    out = tree_order(tree)
    for child in tree:
        out *= tree_density(child)
    return out


def _grow(tree: Tree) -> set[Tree]:
    """All trees obtained by attaching one leaf to some node of `tree`."""
    out = {_canonical(tree + ((),))}  # a new leaf on the root
    for i, child in enumerate(tree):
        rest = tree[:i] + tree[i + 1 :]
        for grown in _grow(child):
            out.add(_canonical(rest + (grown,)))
    return out


@functools.lru_cache(maxsize=None)
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """Return all rooted trees with exactly `order` nodes (canonical, sorted).

    Their counts are 1, 1, 2, 4, 9, 20, 48, 115 for orders 1..8 (OEIS A000081).
    """
    check_int(order, "order")
    if order == 1:
        return ((),)
    trees: set[Tree] = set()
    for smaller in rooted_trees(order - 1):
        trees |= _grow(smaller)
    return tuple(sorted(trees, key=_sort_key))


def _tree_string(tree: Tree) -> str:
    """Butcher's bracket notation: ``•``, ``[•]``, ``[•,•]``, ``[[•]]``, …"""
    if not tree:
        return "•"
    return "[" + ",".join(_tree_string(c) for c in tree) + "]"


def _weights(tableau: ButcherTableau, which: str) -> tuple[Fraction, ...]:
    if which == "main":
        return tableau.b
    vec = tableau.b_hat if which == "embedded" else tableau.b_hat_aux
    if vec is None:
        raise ValueError(f"Tableau {tableau.name!r} has no {which} weights.")
    return vec


def _stage_vectors(tableau: ButcherTableau):
    """Return a memoised ``u(t)`` for `tableau` (exact)."""
    A, s = tableau.A, tableau.num_stages

    @functools.lru_cache(maxsize=None)
    def u(tree: Tree) -> tuple[Fraction, ...]:
        vec = [Fraction(1)] * s
        for child in tree:
            uc = u(child)
            Au = [sum((A[i][j] * uc[j] for j in range(i) if A[i][j]), Fraction(0)) for i in range(s)]
            vec = [v * w for v, w in zip(vec, Au)]
        return tuple(vec)

    return u


def order_condition_residuals(
    tableau: ButcherTableau | str, max_order: int = MAX_ORDER, *, which: str = "main"
) -> pd.DataFrame:
    """Return every order condition up to `max_order` with its exact residual.

    Parameters
    ----------
    tableau : ButcherTableau or str
        The method.
    max_order : int
        Highest tree order to evaluate (≤ 8 is fast; higher works but grows quickly).
    which : {"main", "embedded", "aux"}
        Which weights play the role of ``b``.

    Returns
    -------
    pandas.DataFrame
        One row per tree: ``order``, ``tree`` (bracket notation), ``gamma``, ``phi``
        (float), ``residual`` (float of the exact ``Φ(t) − 1/γ(t)``), ``satisfied``.
    """
    tableau = get_tableau(tableau)
    if which not in ("main", "embedded", "aux"):
        raise ValueError("`which` must be 'main', 'embedded' or 'aux'.")
    b = _weights(tableau, which)
    u = _stage_vectors(tableau)
    rows = []
    for p in range(1, max_order + 1):
        for tree in rooted_trees(p):
            phi = sum((bi * ui for bi, ui in zip(b, u(tree))), Fraction(0))
            res = phi - Fraction(1, tree_density(tree))
            rows.append(
                dict(order=p, tree=_tree_string(tree), gamma=tree_density(tree),
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
    which = which or ("embedded" if embedded else "main")
    b = _weights(tableau, which)
    u = _stage_vectors(tableau)
    for p in range(1, max_order + 1):
        for tree in rooted_trees(p):
            phi = sum((bi * ui for bi, ui in zip(b, u(tree))), Fraction(0))
            if abs(phi - Fraction(1, tree_density(tree))) > tableau.tol:
                return p - 1
    return max_order
