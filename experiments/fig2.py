"""Fig. 2 — eigenvector alignment across stiffness (docs/figures.md).

Along plain-Heun trajectories (``w_stiff = 0``) of the 2-D tree — the learned main model and
the exact class-A mixture — every quantity is measured at one point ``(σ_i, x_i)`` per step
``i ≥ 1`` (:func:`stiffkit.paper.alignment.toy_alignment`), and ``|cos|`` with the dominant
eigenvector ``v₁`` of ``∂f/∂x`` is averaged in log bins of ``|λ₁|``:

(a) the local truncation error of the Heun step (against an RK4 reference);
(b) the ERK solution difference ``Δx = x_i − x_E`` of ERK-Guid's pair;
(c) ERK-Guid's direction ``Δf = f_i − f_E`` against the CFG direction ``D − D_uncond`` and the
    autoguidance direction ``D − D_bad`` (learned guides; CFG also exactly, for the mixture).

Reference ``v₁``: dense Jacobian from forward-mode JVPs for the learned model (exact in 2-D),
the closed-form ``drift_jacobian`` for the mixture. Run: ``python experiments/fig2.py``
(``--quick``; ``--set stiffness=h_lambda`` bins by ``h·|λ₁|`` instead).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from _lib import binned, run_experiment

from stiffkit.diffusion.noise import run_seeds
from stiffkit.paper.alignment import toy_alignment
from stiffkit.paper.toy import toy_world

#: The binned columns: |cos| with v₁ by panel — (a), (b), (c) ERK-Guid's and the guidance
#: directions — and the eigenvalue ratio (drawn in (a)): v₁ is only defined by a gap.
QUANTITIES = {"cos_lte_v1": "LTE of the Heun step", "cos_dx_v1": "ERK solution difference Δx",
              "cos_df_v1": "ERK-Guid direction Δf", "cos_cfg_v1": "CFG direction",
              "cos_ag_v1": "autoguidance direction",
              "eig_ratio": "eigenvalue ratio |λ₂|/|λ₁|"}
#: Mean |cos| between a fixed axis and a uniformly random direction in 2-D: no alignment.
RANDOM_COS = 2 / np.pi
XLABEL = {"lambda_max": r"$|\lambda_{\max}|$ of $\partial f/\partial x$",
          "h_lambda": r"$h\,|\lambda_{\max}|$ of $\partial f/\partial x$"}

#: RK4 substeps of the LTE reference: 8 → 64/128 substeps moves |cos(LTE, v₁)| by ≤ 1e-3
#: (N = 16) / 4e-4 (N = 32) and ‖LTE‖ by ≤ 7e-4 relative, both models (measured, 128–256
#: samples); 16 substeps gave the same binned means to 3 decimals at twice the cost.
FULL = dict(num_samples=1024, num_steps=[16, 32], models=["learned", "exact"], substeps=8,
            stiffness="lambda_max", bins=10, min_count=20, stiff_above=10.0)
QUICK = dict(num_samples=64, num_steps=[16], models=["learned", "exact"], substeps=8,
             stiffness="lambda_max", bins=6, min_count=10, stiff_above=10.0)


def compute(config: dict) -> pd.DataFrame:
    """Return the binned table: one row per model, quantity and stiffness bin.

    The per-row data (:func:`~stiffkit.paper.alignment.toy_alignment`, ~90k rows in the
    full run) is binned here, so the cached frame and the CSV are the plotted numbers.
    """
    if config["stiffness"] not in XLABEL:
        raise ValueError(f"`stiffness` must be one of {sorted(XLABEL)}, "
                         f"got {config['stiffness']!r}.")
    # Sample k uses the per-sample seed SEED_STRIDE·seed + k (a quick run's initial states are
    # the first of a full run's, its samples equal to roundoff; fig2 and fig3 share them).
    seeds = run_seeds(config["seed"], config["num_samples"])
    rows = toy_alignment(toy_world(torch.float64), seeds, config["num_steps"],
                         models=config["models"], substeps=config["substeps"], progress=True)
    rows["eig_ratio"] = rows["lambda_2"].abs() / rows["lambda_max"]
    return binned(rows, config["stiffness"], list(QUANTITIES), bins=config["bins"], by="model",
                  min_count=config["min_count"], seed=config["seed"])


def _panel(ax, df, quantities, colors):
    from matplotlib.ticker import NullFormatter

    for (model, q), part in df[df["quantity"].isin(quantities)].groupby(["model", "quantity"]):
        part = part.sort_values("x_mid")
        style = dict(color=colors[q], ls="-" if model == "learned" else "--",
                     marker="o" if model == "learned" else "s", ms=3.5)
        if q == "eig_ratio":
            style.update(lw=0.9, ms=2.5, marker="^" if model == "learned" else "v")
        ax.plot(part["x_mid"], part["mean"], label=f"{QUANTITIES[q]} ({model})", **style)
        ax.fill_between(part["x_mid"], part["ci_lo"], part["ci_hi"], color=colors[q], alpha=0.18,
                        lw=0)
    ax.axhline(RANDOM_COS, color="0.35", ls=":", lw=1, label="random direction (2/π)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # narrow ranges (h·|λ|) label minor ticks
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both", lw=0.5)


def _counts(ax, df):
    """Rows per bin (per model) on a twin axis: how much each mean rests on."""
    twin = ax.twinx()
    counts = df[df["quantity"] == "cos_df_v1"]
    for model, part in counts.groupby("model"):
        part = part.sort_values("x_mid")
        twin.bar(part["x_mid"], part["count"], width=(part["x_hi"] - part["x_lo"]) * 0.9,
                 color="0.6", alpha=0.10,
                 edgecolor="0.5", ls="-" if model == "learned" else "--", lw=0.6)
    twin.set_yscale("log")
    twin.set_ylim(1, counts["count"].max() * 300)
    twin.set_ylabel("rows per bin (grey bars)", color="0.45", fontsize=8)
    twin.tick_params(axis="y", labelsize=7, colors="0.45")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)


def plot(df: pd.DataFrame, config: dict):
    """Draw panels (a)–(c): mean |cos| with v₁ per stiffness bin, 95 % bootstrap bands."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="ticks", context="paper")
    palette = sns.color_palette("colorblind")
    colors = {"eig_ratio": "0.3", "cos_lte_v1": palette[3], "cos_dx_v1": palette[4],
              "cos_df_v1": palette[0],
              "cos_cfg_v1": palette[1], "cos_ag_v1": palette[2]}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    panels = [("(a) local truncation error", ["cos_lte_v1", "eig_ratio"]),
              ("(b) ERK solution difference", ["cos_dx_v1"]),
              ("(c) correction vs guidance directions", ["cos_df_v1", "cos_cfg_v1", "cos_ag_v1"])]
    for ax, (title, quantities) in zip(axes, panels):
        _counts(ax, df)
        _panel(ax, df, quantities, colors)
        ax.set_title(title)
        ax.set_xlabel(XLABEL[config["stiffness"]])
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    axes[0].set_ylabel(r"mean $|\cos(\cdot,\, v_1)|$, grey: $|\lambda_2|/|\lambda_1|$ (95 % CI)")
    fig.suptitle(
        f"Eigenvector alignment along plain Heun (w_stiff = 0), N ∈ {config['num_steps']}, "
        f"{config['num_samples']} samples × steps 1…N−2, seed {config['seed']}; v₁ from the dense "
        "JVP Jacobian (learned, solid) / closed form (exact mixture, dashed)", fontsize=9)
    return fig


def _pooled(df: pd.DataFrame, model: str, quantity: str, above: float) -> tuple[float, int]:
    """Count-weighted mean of the bins at or above `above` (= the mean over their rows)."""
    part = df[(df["model"] == model) & (df["quantity"] == quantity) & (df["x_lo"] >= above)]
    if part.empty:
        return float("nan"), 0
    return float(np.average(part["mean"], weights=part["count"])), int(part["count"].sum())


def summarize(df: pd.DataFrame, config: dict) -> str:
    """One line per claim: bottom → top bin for (a), (b); the stiff region for (c)."""
    lines = []
    sym = {"lambda_max": "|λ|", "h_lambda": "h|λ|"}[config["stiffness"]]
    for q in ("cos_lte_v1", "cos_dx_v1", "cos_df_v1", "eig_ratio"):
        parts = []
        for model, part in df[df["quantity"] == q].groupby("model"):
            part = part.sort_values("bin")
            lo, hi = part.iloc[0], part.iloc[-1]
            parts.append(f"{model} {lo['mean']:.3f} (n={lo['count']}, {sym}≈{lo['x_mid']:.2g}) → "
                         f"{hi['mean']:.3f} (n={hi['count']}, {sym}≈{hi['x_mid']:.2g})")
        label = QUANTITIES[q] if q == "eig_ratio" else f"|cos({QUANTITIES[q]}, v1)|"
        lines.append(f"  mean {label}: " + "; ".join(parts))
    key = config["stiffness"]
    # |λ| ≥ stiff_above; for another stiffness key, the top three bins.
    above = config["stiff_above"] if key == "lambda_max" else float(
        np.sort(df["x_lo"].unique())[-3:][0])
    for model in sorted(df["model"].unique()):
        stats = [(QUANTITIES[q], *_pooled(df, model, q, above))
                 for q in ("cos_df_v1", "cos_cfg_v1", "cos_ag_v1")]
        lines.append(f"  {model}, bins with {key} ≥ {above:.3g}: " + ", ".join(
            f"{name} {m:.3f} (n={n})" for name, m, n in stats if n))
    return "fig2: eigenvector alignment vs stiffness\n" + "\n".join(lines)


def main(argv=None):
    """Run the figure from the command line (see ``--help``)."""
    return run_experiment("fig2", compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
