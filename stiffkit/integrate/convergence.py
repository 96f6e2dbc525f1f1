"""Measured convergence orders: global error against step size on uniform grids."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit.integrate.rk import solve_fixed
from stiffkit.tableaux import ButcherTableau

__all__ = ["convergence_study", "fitted_order"]


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
