"""Measured convergence orders: global error against step size on uniform grids."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import (
    check_finite,
    check_int,
    check_real,
    check_same_shape,
    check_tensor,
)
from stiffkit.integrate.rk import solve_fixed
from stiffkit.tableaux import ButcherTableau

__all__ = ["convergence_study", "fitted_order"]


def fitted_order(h: Sequence[float], error: Sequence[float]) -> float:
    """Return the least-squares slope of ``log(error)`` against ``log(h)``.

    Parameters
    ----------
    h, error : sequence of float, length >= 2
        Step sizes and the errors measured with them; finite and positive.

    Raises
    ------
    ValueError
        If a value is not a real number, the sequences are not 1-D of the same length, fewer
        than two distinct step sizes are given, or a value is not finite and positive.
    """
    arrays = []
    for name, values in (("h", h), ("error", error)):
        try:
            arrays.append(np.asarray(values, dtype=float))
        except (TypeError, ValueError) as err:
            raise ValueError(f"`{name}` must be a sequence of real numbers, got {values!r}.") \
                from err
    h, error = arrays
    if h.ndim != 1 or h.shape != error.shape or h.size < 2:
        raise ValueError("`h` and `error` must have the same length, at least 2.")
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(error))):
        raise ValueError("`h` and `error` must be finite.")
    if not (np.all(h > 0) and np.all(error > 0)):
        raise ValueError("`h` and `error` must be positive.")
    if np.unique(h).size < 2:
        raise ValueError("`h` must hold at least two different step sizes (a slope needs two).")
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

    Parameters
    ----------
    f : callable
        The drift ``f(t, x)``.
    x0 : Tensor, shape [batch, *dims]
        Initial state (floating dtype; the grids use its dtype).
    t_span : pair of float
        ``(t0, t1)``, finite and different (``t1 < t0`` integrates backwards).
    exact : Tensor, shape [batch, *dims]
        The exact solution at ``t1``, the shape of `x0`.
    tableau : ButcherTableau or str
        The method.
    num_steps : sequence of int
        Step counts (positive integers), one grid each.

    Returns
    -------
    pandas.DataFrame
        Columns ``num_steps, h, error`` (max-norm of the final error over the batch)
        and ``order``, the slope fitted over all rows (same value on every row; NaN with
        a single row or a zero error).

    Raises
    ------
    TypeError
        If `t_span` or `num_steps` is not a sequence.
    ValueError
        If an argument is malformed (including a non-finite `exact` or repeated step
        counts); the message names it.
    """
    check_tensor(x0, "x0")
    check_tensor(exact, "exact")
    check_same_shape(exact, x0, "exact", "x0")
    check_finite(exact, "exact")
    if isinstance(t_span, str) or not hasattr(t_span, "__len__"):
        raise TypeError(f"`t_span` must be a pair (t0, t1), got {t_span!r}.")
    if len(t_span) != 2:
        raise ValueError(f"`t_span` must be a pair (t0, t1), got {len(t_span)} values.")
    t_span = tuple(check_real(t, "t_span") for t in t_span)
    if t_span[0] == t_span[1]:
        raise ValueError("`t_span` must have two different ends.")
    if isinstance(num_steps, str) or not hasattr(num_steps, "__iter__"):
        raise TypeError(f"`num_steps` must be a sequence of step counts, got {num_steps!r}.")
    num_steps = [check_int(n, "num_steps") for n in num_steps]
    if not num_steps:
        raise ValueError("`num_steps` must hold at least one step count.")
    if len(set(num_steps)) != len(num_steps):
        raise ValueError(f"`num_steps` must hold different step counts, got {num_steps}.")
    rows = []
    for n in num_steps:
        grid = torch.linspace(t_span[0], t_span[1], int(n) + 1, dtype=x0.dtype)
        traj = solve_fixed(f, x0, grid, tableau)
        err = float((traj.states[-1] - exact).abs().max())
        rows.append(dict(num_steps=int(n), h=abs(t_span[1] - t_span[0]) / n, error=err))
    df = pd.DataFrame(rows)
    df["order"] = fitted_order(df.h, df.error) if (df.error > 0).all() and len(df) > 1 else np.nan
    return df
