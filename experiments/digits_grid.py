"""Digits grid — Fig. 4 on the learned 8×8 digits model: quality over the w_stiff × w_con grid.

The paper (Fig. 4) sweeps w_con for several w_stiff at 16 and 32 steps on ImageNet. Here the
shipped class-conditional digits model (no guidance; labels drawn uniformly per sample, fixed
by the seed) is sampled with EDM Heun + ERK-Guid on EDM's grid (σ_max 80, σ_min 0.002, ρ 7) at
16 and 32 steps from the same noise, for w_stiff = 1/√6 (the linear theory) and the paper's
values, and w_con from 0 ("always on") to 100 (closed at all but the last steps); w_stiff = 0
(plain Heun, one run per N: the gate does nothing without a correction) is the reference row.
Heatmaps: FD-digits to the 1797 real digits and the endpoint error against a converged solve
of the same ODE from the same noise, each cell with its 95 % bootstrap interval in the CSV;
cells whose interval lies below Heun's are outlined, stars mark the paper's settings and a
ring the best cell.

    python experiments/digits_grid.py [--quick] [--seed S] [--out DIR] [--set key=value]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from _lib import run_experiment

from stiffkit.diffusion.erk import W_STIFF_THEORY
from stiffkit.paper.digits import REAL_LABEL, compare_digits
from stiffkit.paper.quality import PAPER_SETTINGS, PAPER_W_STIFF_32, Method

NAME = "digits_grid"
FULL = dict(
    num_samples=256,
    steps=[16, 32],
    w_stiff=[W_STIFF_THEORY, 0.5, 0.75, 1.0, 2.0],
    w_con=[0.0, 0.3, 0.5, 1.0, 3.0, 10.0, 100.0],
    num_bootstrap=200,
    reference_steps=48,  # RK4 steps of the converged solve (endpoint errors)
    ci="basic",
)
QUICK = dict(num_samples=64, steps=[4, 6], w_stiff=[W_STIFF_THEORY, 1.0], w_con=[0.0, 0.5, 100.0],
             num_bootstrap=20, reference_steps=8, ci="basic")
#: (column, title) of each heatmap column.
PANELS = (("fd", "FD-digits vs real digits"),
          ("endpoint_error_mean", "endpoint error (mean) vs converged solve"))


def is_paper_setting(num_steps: int, w_stiff: float, w_con: float) -> bool:
    """Whether ``(w_stiff, w_con)`` is one of the paper's unguided settings at `num_steps`."""
    key = (False, int(num_steps))
    if key not in PAPER_SETTINGS:
        return False
    paper_stiff, paper_con = PAPER_SETTINGS[key]
    stiffs = PAPER_W_STIFF_32 if num_steps == 32 else (paper_stiff,)
    return math.isclose(w_con, paper_con) and any(math.isclose(w_stiff, w) for w in stiffs)


def compute(config: dict[str, Any]) -> pd.DataFrame:
    """Sample every (N, w_stiff, w_con) of the grid and Heun per N; one row per run (+ floor)."""
    from stiffkit.paper.digits import digits_world

    plan = []
    for n in config["steps"]:
        plan.append((int(n), Method("Heun")))
        plan += [(int(n), Method(f"w_stiff={ws:.3g}", "none", float(ws), float(wc)))
                 for ws in config["w_stiff"] for wc in config["w_con"]]
    df = compare_digits(digits_world(), plan, num_samples=config["num_samples"],
                        seed=config["seed"], num_bootstrap=config["num_bootstrap"],
                        ci=config["ci"], reference_steps=config["reference_steps"],
                        progress=True)
    df["paper_setting"] = [
        r.method != REAL_LABEL and r.w_stiff > 0 and is_paper_setting(r.num_steps, r.w_stiff,
                                                                      r.w_con)
        for r in df.itertuples()
    ]
    return df


def _below(row: pd.Series, base: pd.Series, col: str) -> bool:
    return bool(row[f"{col}_hi"] < base[f"{col}_lo"])


def plot(df: pd.DataFrame, config: dict[str, Any]):
    """Draw one heatmap per (N, metric): rows w_stiff (0 = Heun), columns w_con."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    runs = df[df["method"] != REAL_LABEL]
    floor = df[df["method"] == REAL_LABEL].iloc[0]
    steps = sorted(runs["num_steps"].unique())
    w_stiffs = sorted(runs.loc[runs["w_stiff"] > 0, "w_stiff"].unique())
    w_cons = sorted(runs.loc[runs["w_stiff"] > 0, "w_con"].unique())
    fig, axes = plt.subplots(len(steps), len(PANELS), squeeze=False,
                             figsize=(1.0 * len(w_cons) * len(PANELS) + 3,
                                      0.62 * (len(w_stiffs) + 1) * len(steps) + 1.6))
    for r, n in enumerate(steps):
        at_n = runs[runs["num_steps"] == n]
        heun = at_n[at_n["w_stiff"] == 0].iloc[0]
        for c, (col, title) in enumerate(PANELS):
            ax = axes[r, c]
            grid = np.full((len(w_stiffs) + 1, len(w_cons)), heun[col])
            for i, ws in enumerate(w_stiffs):
                for j, wc in enumerate(w_cons):
                    cell = at_n[(at_n["w_stiff"] == ws) & (at_n["w_con"] == wc)]
                    if len(cell):
                        grid[i + 1, j] = cell[col].iloc[0]
            image = ax.imshow(grid, cmap="viridis_r", aspect="auto", norm="log")
            fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
            best = at_n.loc[at_n[col].idxmin()]
            for i, ws in enumerate([0.0, *w_stiffs]):
                for j, wc in enumerate(w_cons):
                    cell = (at_n[at_n["w_stiff"] == 0] if ws == 0 else
                            at_n[(at_n["w_stiff"] == ws) & (at_n["w_con"] == wc)])
                    if not len(cell):
                        continue
                    cell = cell.iloc[0]
                    dark = float(image.norm(cell[col])) > 0.5  # viridis_r: high = dark
                    ax.text(j, i, f"{cell[col]:.3g}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
                    if ws > 0 and _below(cell, heun, col):
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                               ec="red", lw=1.6))
                    if bool(cell["paper_setting"]):
                        ax.plot(j + 0.33, i - 0.25, "*", ms=9, mfc="gold", mec="black", mew=0.6)
                    if cell.name == best.name and (ws > 0 or j == 0):
                        ax.plot(j, i, "o", ms=22, mfc="none", mec="magenta", mew=1.5)
            ax.set_xticks(range(len(w_cons)), [f"{w:g}" for w in w_cons], fontsize=8)
            ax.set_yticks(range(len(w_stiffs) + 1),
                          ["0 (Heun)"] + [f"{w:.3g}" for w in w_stiffs], fontsize=8)
            ax.set_xlabel("w_con (gate: correct where ρ̂ > w_con)")
            ax.set_ylabel(f"N = {n} (NFE {2 * n - 1}): w_stiff")
            extra = (f"; floor {floor[col]:.3g}" if col == "fd" else "")
            ax.set_title(f"{title}{extra}", fontsize=10)
    fig.suptitle(
        f"ERK-Guid grid on the learned digits model (EDM Heun, σ_max 80, no guidance; "
        f"n = {int(runs['n'].iloc[0])}, seed {config['seed']}). Red: 95 % {config['ci']} "
        f"interval below Heun's; star: paper's setting; ring: best cell", fontsize=10)
    fig.tight_layout()
    return fig


def summarize(df: pd.DataFrame, config: dict[str, Any]) -> str:
    """Return per N: Heun, the best cell per metric and the paper's setting, with intervals."""
    runs = df[df["method"] != REAL_LABEL]
    floor = df[df["method"] == REAL_LABEL].iloc[0]

    def fmt(row: pd.Series, col: str) -> str:
        return f"{row[col]:.3g} [{row[f'{col}_lo']:.3g}, {row[f'{col}_hi']:.3g}]"

    lines = [f"digits_grid: n = {int(runs['n'].iloc[0])}; real-vs-real FD floor "
             f"{floor['fd']:.3g} (n = {int(floor['n'])})"]
    for n in sorted(runs["num_steps"].unique()):
        at_n = runs[runs["num_steps"] == n]
        heun = at_n[at_n["w_stiff"] == 0].iloc[0]
        erk = at_n[at_n["w_stiff"] > 0]
        lines.append(f"N = {n}: Heun FD {fmt(heun, 'fd')}, endpoint "
                     f"{fmt(heun, 'endpoint_error_mean')}")
        for col, name in PANELS:
            best = erk.loc[erk[col].idxmin()]
            state = ("below Heun's CI" if _below(best, heun, col) else
                     "within Heun's CI" if best[col] < heun[col] else "no better than Heun")
            below = int(sum(_below(r, heun, col) for _, r in erk.iterrows()))
            above = int(sum(_below(heun, r, col) for _, r in erk.iterrows()))
            lines.append(f"  best {name.split(' ')[0]}: w_stiff {best['w_stiff']:.3g}, w_con "
                         f"{best['w_con']:g} -> {fmt(best, col)} ({state}); cells below / above "
                         f"Heun's CI: {below} / {above} of {len(erk)}")
        for _, p in at_n[at_n["paper_setting"]].iterrows():
            lines.append(f"  paper ({p['w_stiff']:g}/{p['w_con']:g}): FD {fmt(p, 'fd')}, "
                         f"endpoint {fmt(p, 'endpoint_error_mean')}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the figure from the command line (see the module docstring)."""
    return run_experiment(NAME, compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main(sys.argv[1:])
