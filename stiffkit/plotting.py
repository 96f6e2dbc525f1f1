"""Figures of stiffkit's results: the only module that imports matplotlib and seaborn.

* :func:`plot_stability_region` — ``{z : |R(z)| <= 1}`` of one or several tableaux;
* :func:`plot_stiffness` — stiffness along a trajectory (a frame of :func:`stiffkit.analyze`);
* :func:`plot_estimate_vs_reference` — a cheap estimate against its reference, log–log.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from stiffkit._utils import check_int, check_real
from stiffkit.tableaux import (
    ButcherTableau,
    get_tableau,
    real_stability_interval,
    stability_function,
)

__all__ = ["plot_stability_region", "plot_stiffness", "plot_estimate_vs_reference"]


def plot_stability_region(
    tableaux: ButcherTableau | str | Sequence[ButcherTableau | str],
    *,
    ax=None,
    embedded: bool = False,
    extent: tuple[float, float, float, float] | None = None,
    resolution: int = 400,
    fill: bool = True,
):
    """Draw the stability region ``{z : |R(z)| ≤ 1}`` of one or several tableaux.

    Parameters
    ----------
    tableaux : tableau, name or sequence of them
        Methods to draw, one colour each.
    ax : matplotlib.axes.Axes, optional
        Where to draw (a new figure otherwise).
    embedded : bool
        Draw ``R̂`` instead of ``R``.
    extent : (xmin, xmax, ymin, ymax), optional
        Plot window in the complex z-plane; chosen from the stability intervals if omitted.
    resolution : int
        Grid points per axis.
    fill : bool
        Shade the interior of each region.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    TypeError
        If `tableaux` is not a tableau, a name or a sequence of them, or `ax` not an Axes.
    ValueError
        Naming the argument: no tableau, an `extent` that is not four finite numbers with
        ``xmin < xmax`` and ``ymin < ymax``, a `resolution` below 2.
    """
    if isinstance(tableaux, (str, ButcherTableau)):
        tableaux = [tableaux]
    if not hasattr(tableaux, "__iter__"):
        raise TypeError(f"`tableaux` must be a tableau, a name or a sequence of them, got "
                        f"{type(tableaux).__name__}.")
    tabs = [get_tableau(t) for t in tableaux]
    if not tabs:
        raise ValueError("`tableaux` must name at least one method.")
    resolution = check_int(resolution, "resolution", 2)
    if extent is not None:
        extent = _check_extent(extent)
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"`ax` must be a matplotlib Axes, got {type(ax).__name__}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5))
    if extent is None:
        r = max(min(real_stability_interval(t, embedded), 8.0) for t in tabs)
        extent = (-1.15 * r - 0.5, 1.0, -0.8 * r - 1.5, 0.8 * r + 1.5)
    xs = np.linspace(extent[0], extent[1], resolution)
    ys = np.linspace(extent[2], extent[3], resolution)
    Z = xs[None, :] + 1j * ys[:, None]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for i, tab in enumerate(tabs):
        col = colors[i % len(colors)]
        mag = np.abs(stability_function(tab, Z, embedded))
        if fill:
            ax.contourf(xs, ys, mag, levels=[0, 1], colors=[col], alpha=0.15)
        ax.contour(xs, ys, mag, levels=[1], colors=[col], linewidths=1.5)
        label = f"{tab.name}{' (embedded)' if embedded else ''}"
        handles.append(Line2D([], [], color=col, label=label))
    ax.axhline(0, color="0.5", lw=0.5)
    ax.axvline(0, color="0.5", lw=0.5)
    ax.set_xlabel(r"Re $h\lambda$")
    ax.set_ylabel(r"Im $h\lambda$")
    ax.set_aspect("equal")
    ax.legend(handles=handles, loc="upper left", fontsize="small")
    ax.set_title(r"Stability regions $|R(h\lambda)| \leq 1$")
    return ax


def _check_extent(extent) -> tuple[float, float, float, float]:
    """`extent` as four floats ``(xmin, xmax, ymin, ymax)``, or raise naming it."""
    if isinstance(extent, str) or not hasattr(extent, "__len__") or len(extent) != 4:
        raise ValueError(f"`extent` must be (xmin, xmax, ymin, ymax), got {extent!r}.")
    x0, x1, y0, y1 = (check_real(v, "extent") for v in extent)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"`extent` must have xmin < xmax and ymin < ymax, got {extent!r}.")
    return x0, x1, y0, y1


def _finite(df, columns, *, log: bool, what: str) -> pd.DataFrame:
    """`df[columns]` as numbers, NaN where a value is not a finite number; on a log axis a
    warning says how many non-positive values it cannot show (they stay in the statistics)."""
    for col in columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise ValueError(f"`df` column `{col}` must be numeric, got dtype {df[col].dtype}.")
    data = df[list(columns)].astype(float).replace([np.inf, -np.inf], np.nan)
    nonpositive = int((data <= 0).to_numpy().sum()) if log else 0
    if nonpositive:
        warnings.warn(f"{what}: {nonpositive} non-positive value(s) cannot be shown on the "
                      "log-scaled axis.", RuntimeWarning, stacklevel=3)
    return data


def _check_frame(df, required) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`df` must be a pandas DataFrame, got {type(df).__name__}.")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"`df` has no column(s) {missing}.")


def plot_stiffness(df: pd.DataFrame, *, ax=None, columns=("lambda_max", "rho_hat"),
                   log: bool = True):
    """Plot stiffness along the trajectory: median and 95 % band over samples vs ``t``.

    `columns` is a column name or a sequence of them (absent ones are skipped); non-finite
    values are dropped; non-positive ones, which a log axis cannot show, raise a warning.

    Raises
    ------
    TypeError
        If `df` is not a DataFrame.
    ValueError
        If `df` has no ``t`` column, a requested column is not numeric, or there are no
        finite values in the requested `columns`.
    """
    _check_frame(df, ["t"])
    columns = [columns] if isinstance(columns, str) else list(columns)
    present = [c for c in columns if c in df]
    values = _finite(df, present, log=log, what="plot_stiffness")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    long = pd.concat([df[["t"]], values], axis=1).melt(id_vars=["t"], value_vars=present,
                                                        var_name="quantity")
    long = long.dropna()
    if long.empty:
        raise ValueError("`df` has no finite values in the requested `columns`.")
    sns.lineplot(data=long, x="t", y="value", hue="quantity", estimator="median",
                 errorbar=("pi", 95), ax=ax)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(r"stiffness $|\lambda_{\max}|$ of $\partial f/\partial x$")
    ax.set_xlabel(df.attrs.get("time_name", "t"))
    return ax


def plot_estimate_vs_reference(df: pd.DataFrame, *, ax=None, x: str = "lambda_max",
                               y: str = "rho_hat"):
    """Scatter the cheap estimate against the reference, with y = x and the correlation.

    Rows with a non-finite value are left out; non-positive values, which the logarithmic
    axes cannot show, raise a warning.

    Raises
    ------
    TypeError
        If `df` is not a DataFrame.
    ValueError
        If `x` and `y` are the same column, missing or not numeric, or no row has both.
    """
    _check_frame(df, [x, y])
    if x == y:
        raise ValueError(f"`x` and `y` must be different columns, got {x!r} twice.")
    data = _finite(df, [x, y], log=True, what="plot_estimate_vs_reference").dropna()
    if data.empty:
        raise ValueError(f"`df` has no rows with both `{x}` and `{y}`.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    sns.scatterplot(data=data, x=x, y=y, s=8, alpha=0.4, linewidth=0, ax=ax)
    lo, hi = float(data.min().min()), float(data.max().max())
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="y = x")
    lx, ly = np.log(data[x].clip(lower=1e-300)), np.log(data[y].clip(lower=1e-300))
    if lx.std() > 0 and ly.std() > 0:
        ax.set_title(f"log–log correlation r = {np.corrcoef(lx, ly)[0, 1]:.3f} (n = {len(data)})")
    else:  # a constant reference (e.g. a linear ODE) has no correlation to report
        ax.set_title(f"n = {len(data)} (constant `{x if lx.std() == 0 else y}`)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend()
    return ax
