"""Tabular summaries: the tableau catalogue and measured convergence orders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit.order_conditions import computed_order
from stiffkit.rk import solve_fixed
from stiffkit.stability import real_stability_interval
from stiffkit.tableaux import ButcherTableau, get_tableau, list_tableaux

__all__ = ["tableau_summary", "convergence_study", "fitted_order"]


def tableau_summary(names: Sequence[str] | None = None) -> pd.DataFrame:
    """Return one row per tableau: stages, declared and computed orders, FSAL, stability.

    Columns: ``name, stages, order, computed_order, embedded_order,
    computed_embedded_order, fsal, evals_per_step, stability_interval,
    embedded_stability_interval, exact``.
    """
    rows = []
    for name in names or list_tableaux():
        tab = get_tableau(name)
        rows.append(
            dict(
                name=tab.name,
                stages=tab.num_stages,
                order=tab.order,
                computed_order=computed_order(tab),
                embedded_order=tab.embedded_order,
                computed_embedded_order=computed_order(tab, embedded=True) if tab.is_embedded else None,
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


def fitted_order(h: Sequence[float], error: Sequence[float]) -> float:
    """Return the least-squares slope of ``log(error)`` against ``log(h)``."""
    h, error = np.asarray(h, dtype=float), np.asarray(error, dtype=float)
    if h.shape != error.shape or h.size < 2:
        raise ValueError("`h` and `error` must have the same length, at least 2.")
    if not (np.all(h > 0) and np.all(error > 0)):
        raise ValueError("`h` and `error` must be positive.")
    return float(np.polyfit(np.log(h), np.log(error), 1)[0])


def convergence_study(
    f: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    t_span: tuple[float, float],
    exact: Tensor,
    tableau: ButcherTableau | str,
    num_steps: Sequence[int],
) -> pd.DataFrame:
    """Measure the global error at ``t_span[1]`` on uniform grids of `num_steps` steps.

    Returns
    -------
    pandas.DataFrame
        Columns ``num_steps, h, error`` (max-norm of the final error over the batch)
        and ``order``, the slope fitted over all rows (same value on every row).
    """
    rows = []
    for n in num_steps:
        grid = torch.linspace(t_span[0], t_span[1], int(n) + 1, dtype=x0.dtype)
        traj = solve_fixed(f, x0, grid, tableau)
        err = float((traj.states[-1] - exact).abs().max())
        rows.append(dict(num_steps=int(n), h=abs(t_span[1] - t_span[0]) / n, error=err))
    df = pd.DataFrame(rows)
    df["order"] = fitted_order(df.h, df.error) if (df.error > 0).all() and len(df) > 1 else np.nan
    return df
