"""Fig. 4 — ERK-Guid's hyperparameter grid on the learned toy model: quality vs w_con per w_stiff.

The paper (Fig. 4) sweeps w_con for several w_stiff at 16 and 32 steps on ImageNet and reports
FID / FD-DINOv2. Here the learned class-A model of the tree (no guidance) is sampled with EDM
Heun + ERK-Guid at 8, 16 and 32 steps from the same exact samples of p_{σ_max}, over a grid that
runs from "always on" (w_con = 0) to "never on" (w_con = 100, above the 99th percentile of the
ρ̂ the sampler sees, ≈ 70 at the last steps), for w_stiff = 0 (plain Heun, a flat reference), the
linear theory's 1/√6 and the paper's values. Panels (docs/theory/quality.md): sliced Wasserstein to
exact class-A samples (with the exact samples' own value, the noise floor), endpoint error against
a converged solve of the same ODE from the same start, mean NLL under the true mixture (with the
truth's own NLL: lower than that is over-contraction, not quality) and the fraction of corrected
steps. Bands are 95 % basic bootstrap intervals (they undo the upward bias of resampled SW, so near
the floor an SW band can reach below its biased point estimate); stars mark the paper's settings.

    python experiments/fig4.py [--quick] [--seed S] [--out DIR] [--set key=value]
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
from stiffkit.paper.quality import (
    EXACT_LABEL,
    PAPER_SETTINGS,
    PAPER_W_STIFF_32,
    Method,
    compare,
)

NAME = "fig4"
FULL = dict(
    num_samples=8192,
    steps=[8, 16, 32],
    w_stiff=[0.0, W_STIFF_THEORY, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5],
    w_con=[0.0, 0.1, 0.3, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0],
    num_bootstrap=200,
    reference_steps=128,  # RK4 steps of the converged solve (endpoint errors)
    ci="basic",  # basic bootstrap intervals: they undo the upward bias of resampled SW
)
QUICK = dict(
    num_samples=512,
    steps=[8, 16],
    w_stiff=[0.0, W_STIFF_THEORY, 1.0],
    w_con=[0.0, 0.5, 10.0, 100.0],
    num_bootstrap=50,
    ci="basic",
    reference_steps=32,  # a smoke run; the full run's 128-step solve is converged
)
#: (column, interval low, interval high, title, log y) of each panel.
PANELS = (
    ("sw", "sw_lo", "sw_hi", "sliced Wasserstein to exact class A", False),
    ("endpoint_error_mean", "endpoint_error_mean_lo", "endpoint_error_mean_hi",
     "endpoint error (mean) vs converged solve", True),
    ("nll_mean", "nll_mean_lo", "nll_mean_hi", "NLL under the true mixture (mean)", False),
    ("gate_rate", None, None, "fraction of corrected (sample, step) pairs", False),
)


def paper_w_stiffs(num_steps: int) -> tuple[float, ...]:
    """Return the paper's unguided w_stiff values at `num_steps` (32 steps: the sweep)."""
    if num_steps == 32:
        return PAPER_W_STIFF_32
    key = (False, num_steps)
    return (PAPER_SETTINGS[key][0],) if key in PAPER_SETTINGS else ()


def is_paper_setting(num_steps: int, w_stiff: float, w_con: float) -> bool:
    """Whether ``(w_stiff, w_con)`` is one of the paper's unguided settings at `num_steps`."""
    key = (False, int(num_steps))
    if key not in PAPER_SETTINGS:
        return False
    paper_con = PAPER_SETTINGS[key][1]
    return math.isclose(w_con, paper_con) and any(
        math.isclose(w_stiff, w) for w in paper_w_stiffs(num_steps))


def compute(config: dict[str, Any]) -> pd.DataFrame:
    """Sample every (N, w_stiff, w_con) of the grid and score it; one row per run (+ exact)."""
    from stiffkit.paper.toy import toy_world

    plan = [(int(n), Method(f"w_stiff={ws:.3g}", "none", float(ws), float(wc)))
            for n in config["steps"] for ws in config["w_stiff"] for wc in config["w_con"]]
    df = compare(toy_world(), plan, num_samples=config["num_samples"], seed=config["seed"],
                 num_bootstrap=config["num_bootstrap"], ci=config["ci"],
                 reference_steps=config["reference_steps"], progress=True)
    df["paper_setting"] = [
        r.method != EXACT_LABEL and is_paper_setting(r.num_steps, r.w_stiff, r.w_con)
        for r in df.itertuples()
    ]
    df["theory_w_stiff"] = np.isclose(df["w_stiff"], W_STIFF_THEORY)
    return df


def _style(w_stiff: float, values: Sequence[float]):
    """Return (colour, linestyle, label) of a w_stiff curve."""
    import matplotlib.pyplot as plt

    if w_stiff == 0:
        return "black", "--", "w_stiff = 0 (Heun)"
    if math.isclose(w_stiff, W_STIFF_THEORY):
        return "tab:red", "-", f"w_stiff = 1/√6 ≈ {W_STIFF_THEORY:.3f} (theory)"
    others = sorted(v for v in values if v > 0 and not math.isclose(v, W_STIFF_THEORY))
    frac = others.index(w_stiff) / max(len(others) - 1, 1)
    return plt.cm.viridis(0.9 * frac), "-", f"w_stiff = {w_stiff:g}"


def plot(df: pd.DataFrame, config: dict[str, Any]):
    """Draw quality vs w_con, one curve per w_stiff: rows = step counts, columns = metrics."""
    import matplotlib.pyplot as plt

    runs = df[df["method"] != EXACT_LABEL]
    exact = df[df["method"] == EXACT_LABEL].iloc[0]
    steps = sorted(runs["num_steps"].unique())
    w_stiffs = sorted(runs["w_stiff"].unique())
    w_cons = sorted(runs["w_con"].unique())
    positive = [w for w in w_cons if w > 0]
    linthresh = min(positive) if positive else 1.0
    fig, axes = plt.subplots(len(steps), len(PANELS), figsize=(4.2 * len(PANELS), 3.3 * len(steps)),
                             squeeze=False, sharex=True)
    for r, n in enumerate(steps):
        at_n = runs[runs["num_steps"] == n]
        for c, (col, lo, hi, title, logy) in enumerate(PANELS):
            ax = axes[r, c]
            for ws in w_stiffs:
                part = at_n[at_n["w_stiff"] == ws].sort_values("w_con")
                colour, ls, label = _style(ws, w_stiffs)
                if ws == 0 and col == "gate_rate":
                    continue  # Heun has no gate
                ax.plot(part["w_con"], part[col], ls, color=colour, lw=1.8 if ws == 0 else 1.3,
                        marker="" if ws == 0 else "o", ms=3, label=label)
                if lo is not None:
                    ax.fill_between(part["w_con"], part[lo], part[hi], color=colour, alpha=0.12,
                                    lw=0)
                star = part[part["paper_setting"]]
                if len(star):
                    ax.plot(star["w_con"], star[col], "*", ms=13, mfc=colour, mec="black",
                            mew=0.8, zorder=5, label="paper's setting")
            if col == "sw":
                ax.axhline(exact["sw"], color="0.45", ls=":", lw=1.5,
                           label=f"exact samples (noise floor, n = {int(exact['n'])})")
            if col == "nll_mean":
                ax.axhline(exact["nll_truth_mean"], color="0.45", ls=":", lw=1.5,
                           label="truth's own NLL (below = over-contraction)")
            ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
            ax.set_xticks(w_cons, [f"{w:g}" for w in w_cons], fontsize=7, rotation=90)
            ax.minorticks_off()
            if logy:
                ax.set_yscale("log")
            if r == 0:
                ax.set_title(title, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"N = {n} steps (NFE {2 * n - 1})")
            if r == len(steps) - 1:
                ax.set_xlabel("w_con (gate: correct where ρ̂ > w_con)")
            ax.grid(alpha=0.3, which="both", lw=0.5)
    handles, labels = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.suptitle(
        f"ERK-Guid grid on the learned toy model (EDM Heun, no guidance; n = {int(exact['n'])}, "
        f"seed {config['seed']}; bands: 95 % {config['ci']} bootstrap CI; stars: the paper's "
        f"settings)", fontsize=11)
    legend_rows = math.ceil(len(labels) / 5)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.1) / fig.get_figheight(), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def _fmt(row: pd.Series, col: str, scale: float = 1.0, digits: int = 3) -> str:
    v, lo, hi = (row[col] * scale, row[f"{col}_lo"] * scale, row[f"{col}_hi"] * scale)
    return f"{v:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def _versus(row: pd.Series, base: pd.Series, col: str) -> str:
    """Return "better", "worse" (non-overlapping intervals, lower is better) or "~"."""
    if row[f"{col}_hi"] < base[f"{col}_lo"]:
        return "better"
    return "worse" if row[f"{col}_lo"] > base[f"{col}_hi"] else "~"


def summarize(df: pd.DataFrame, config: dict[str, Any]) -> str:
    """Return the findings per step count: best settings, Heun, theory and the paper's setting."""
    runs = df[df["method"] != EXACT_LABEL]
    exact = df[df["method"] == EXACT_LABEL].iloc[0]
    lines = [f"fig4: n = {int(exact['n'])}; exact samples' SW (noise floor) = {exact['sw']:.4f}, "
             f"truth NLL = {exact['nll_truth_mean']:.3f}"]
    for n in sorted(runs["num_steps"].unique()):
        at_n = runs[runs["num_steps"] == n]
        heun = at_n[at_n["w_stiff"] == 0].iloc[0]
        erk = at_n[at_n["w_stiff"] > 0]
        lines.append(f"N = {n}: Heun SW {_fmt(heun, 'sw')}, "
                     f"endpoint {_fmt(heun, 'endpoint_error_mean')}, "
                     f"NLL {heun['nll_mean']:.3f}")
        for col, name in (("sw", "SW"), ("endpoint_error_mean", "endpoint")):
            best = erk.loc[erk[col].idxmin()]
            beats = best[f"{col}_hi"] < heun[f"{col}_lo"]
            verdict = ("below Heun's CI" if beats else
                       "not below Heun's CI" if best[col] < heun[col] else "no better than Heun")
            lines.append(f"  best {name}: w_stiff {best['w_stiff']:.3g}, "
                         f"w_con {best['w_con']:g} -> "
                         f"{_fmt(best, col)} ({verdict})")
        theory = erk[np.isclose(erk["w_stiff"], W_STIFF_THEORY)]
        if len(theory):
            t = theory.loc[theory["endpoint_error_mean"].idxmin()]
            lines.append(f"  theory 1/√6: best endpoint at w_con {t['w_con']:g} -> "
                         f"{_fmt(t, 'endpoint_error_mean')}, SW {_fmt(t, 'sw')}")
        for _, p in at_n[at_n["paper_setting"]].iterrows():
            lines.append(
                f"  paper ({p['w_stiff']:g}/{p['w_con']:g}) vs Heun: SW {_fmt(p, 'sw')} "
                f"({_versus(p, heun, 'sw')}), endpoint {_fmt(p, 'endpoint_error_mean')} "
                f"({_versus(p, heun, 'endpoint_error_mean')}), NLL {_fmt(p, 'nll_mean')} "
                f"({_versus(p, heun, 'nll_mean')}; truth {exact['nll_truth_mean']:.2f})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the figure from the command line (see the module docstring)."""
    return run_experiment(NAME, compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main(sys.argv[1:])
