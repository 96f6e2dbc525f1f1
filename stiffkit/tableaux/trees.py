"""Rooted trees and elementary weights: the order conditions as pure functions of coefficients.

A method has order p iff for every rooted tree t with ``|t| ≤ p`` nodes its elementary
weight equals the inverse density: ``Φ(t) = bᵀ u(t) = 1/γ(t)`` [HNW, Thm. II.2.13], where

* ``u(•) = 𝟙`` and ``u([t₁, …, t_m]) = ∏_j A u(t_j)`` (elementwise product over children);
* ``γ(•) = 1`` and ``γ([t₁, …, t_m]) = |t| ∏_j γ(t_j)``.

Trees are generated programmatically (every tree of order n grows from one of order n − 1
by attaching a leaf), so no condition is typed by hand. Everything here takes coefficients,
not tableaux, so the tableau type can verify its declared order without an import cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction

from stiffkit._utils import check_int

__all__ = [
    "MAX_ORDER",
    "rooted_trees",
    "tree_order",
    "tree_density",
    "tree_string",
    "stage_vectors",
    "satisfied_order",
]

Matrix = Sequence[Sequence[Fraction]]

#: A rooted tree as the sorted tuple of its children; the single node is ``()``.
Tree = tuple

MAX_ORDER = 8


def _canonical(children) -> Tree:
    return tuple(sorted(children, key=_sort_key))


def _sort_key(tree: Tree):
    return (tree_order(tree), repr(tree))


@functools.cache
def tree_order(tree: Tree) -> int:
    """Return the number of nodes ``|t|``."""
    return 1 + sum(tree_order(child) for child in tree)


@functools.cache
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


@functools.cache
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


def tree_string(tree: Tree) -> str:
    """Butcher's bracket notation: ``•``, ``[•]``, ``[•,•]``, ``[[•]]``, …"""
    if not tree:
        return "•"
    return "[" + ",".join(tree_string(c) for c in tree) + "]"


def stage_vectors(A: Matrix):
    """Return a memoised ``u(t)``, the stage vector of tree t for the coefficients `A` (exact)."""
    s = len(A)

    @functools.cache
    def u(tree: Tree) -> tuple[Fraction, ...]:
        vec = [Fraction(1)] * s
        for child in tree:
            uc = u(child)
            Au = [sum((A[i][j] * uc[j] for j in range(i) if A[i][j]), Fraction(0))
                  for i in range(s)]
            vec = [v * w for v, w in zip(vec, Au)]
        return tuple(vec)

    return u


def satisfied_order(A: Matrix, b: Sequence[Fraction], tol: Fraction, max_order: int = MAX_ORDER
                    ) -> int:
    """Return the highest order p ≤ `max_order` whose conditions ``Φ(t) = 1/γ(t)`` all hold.

    Parameters
    ----------
    A : sequence of sequences of Fraction, [s, s]
        Stage coefficients.
    b : sequence of Fraction, [s]
        Weights.
    tol : Fraction
        Allowed ``|Φ(t) − 1/γ(t)|`` (0: exact).
    max_order : int
        Stop here.
    """
    u = stage_vectors(A)
    for p in range(1, max_order + 1):
        for tree in rooted_trees(p):
            phi = sum((bi * ui for bi, ui in zip(b, u(tree))), Fraction(0))
            if abs(phi - Fraction(1, tree_density(tree))) > tol:
                return p - 1
    return max_order
