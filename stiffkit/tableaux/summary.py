"""The tableau catalogue as a table: stages, declared and computed orders, stability."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from stiffkit.tableaux.order_conditions import computed_order
from stiffkit.tableaux.registry import get_tableau, list_tableaux
from stiffkit.tableaux.stability import real_stability_interval
from stiffkit.tableaux.tableau import ButcherTableau

__all__ = ["tableau_summary"]


def tableau_summary(names: Sequence[str] | None = None) -> pd.DataFrame:
    """Return one row per tableau: stages, declared and computed orders, FSAL, stability.

    Parameters
    ----------
    names : sequence of str or ButcherTableau, optional
        The tableaux, in this order (aliases resolve); default: the whole catalogue, sorted.

    Returns
    -------
    pandas.DataFrame
        Columns ``name, stages, order, computed_order, embedded_order,
        computed_embedded_order, fsal, evals_per_step, stability_interval,
        embedded_stability_interval, exact``.

    Raises
    ------
    TypeError
        If `names` is a single name or not iterable.
    ValueError
        If `names` is empty or names an unknown tableau.
    """
    if isinstance(names, str | ButcherTableau) or not (names is None or hasattr(names, "__iter__")):
        raise TypeError(f"`names` must be a sequence of tableau names (or None), got "
                        f"{names!r}; wrap a single name in a list.")
    names = list_tableaux() if names is None else list(names)
    if not names:
        raise ValueError("`names` must name at least one tableau (None: the whole catalogue).")
    rows = []
    for name in names:
        tab = get_tableau(name)
        rows.append(
            dict(
                name=tab.name,
                stages=tab.num_stages,
                order=tab.order,
                computed_order=computed_order(tab),
                embedded_order=tab.embedded_order,
                computed_embedded_order=(
                    computed_order(tab, embedded=True) if tab.is_embedded else None),
                fsal=tab.fsal,
                evals_per_step=tab.evals_per_step,
                stability_interval=real_stability_interval(tab),
                embedded_stability_interval=(
                    real_stability_interval(tab, embedded=True) if tab.is_embedded else np.nan
                ),
                exact=tab.exact,
            )
        )
    df = pd.DataFrame(rows)
    for col in ("embedded_order", "computed_embedded_order"):
        df[col] = df[col].astype("Int64")
    return df
