"""Butcher tableaux: the immutable type, the shipped catalogue, and their analysis.

* :mod:`~stiffkit.tableaux.tableau` — :class:`ButcherTableau`, exact rational coefficients
  validated on construction;
* :mod:`~stiffkit.tableaux.catalogue` — the shipped methods as data, with references;
* :mod:`~stiffkit.tableaux.registry` — :func:`get_tableau`, :func:`list_tableaux`,
  :func:`register_tableau`;
* :mod:`~stiffkit.tableaux.order_conditions` — order conditions by rooted trees (exact);
* :mod:`~stiffkit.tableaux.stability` — stability polynomials and real stability intervals;
* :mod:`~stiffkit.tableaux.summary` — the catalogue as a table.
"""

from stiffkit.tableaux.order_conditions import (
    computed_order,
    order_condition_residuals,
    rooted_trees,
)
from stiffkit.tableaux.registry import get_tableau, list_tableaux, register_tableau
from stiffkit.tableaux.stability import (
    real_stability_interval,
    stability_function,
    stability_polynomial,
)
from stiffkit.tableaux.summary import tableau_summary
from stiffkit.tableaux.tableau import ButcherTableau

__all__ = [
    "ButcherTableau",
    "computed_order",
    "get_tableau",
    "list_tableaux",
    "order_condition_residuals",
    "real_stability_interval",
    "register_tableau",
    "rooted_trees",
    "stability_function",
    "stability_polynomial",
    "tableau_summary",
]
