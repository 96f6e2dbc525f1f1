"""Fig. 3 — accuracy of ERK-Guid's free stiffness estimate (docs/theory/proposition1.md).

Along plain-Heun trajectories (``w_stiff = 0``) of the 2-D tree — the learned main model and
the exact class-A mixture — at each step ``i ≥ 1`` and one point ``(σ_i, x_i)``
(:func:`stiffkit.paper.alignment.toy_alignment`, no LTE needed):

(a) ERK-Guid's ``ρ̂ = ‖Δf‖/‖Δx‖`` (the sampler's ``erk_rho``; pair: ``(x_i, f_i)`` and the
    previous step's Euler point at σ_i) against the reference ``|λ₁|`` of ``∂f/∂x`` at
    ``(σ_i, x_i)`` — dense JVP Jacobian (learned), closed-form Jacobian (exact mixture):
    log–log Pearson correlation, fitted slope, and the share of points inside Proposition 1's
    bound ``ρ̂ ≤ |λ₁|`` (exact only for a linear drift: here ``Δf`` sees the Jacobian along the
    whole segment from ``x_E`` to ``x_i``, not at ``x_i`` alone);
(b) ``|cos|`` with ``v₁`` of the drift difference ``Δf`` (ERK-Guid's direction, weights
    eigencomponents by ``z²``) and of the solution difference ``Δx`` (weights by ``z``), in log
    bins of ``|λ₁|``.

Run: ``python experiments/fig3.py`` (``--quick``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from _lib import binned, run_experiment

from stiffkit.diffusion.noise import run_seeds
from stiffkit.paper.alignment import toy_alignment
from stiffkit.paper.toy import toy_world

#: Relative slack of the bound checks: roundoff of ‖Δf‖/‖Δx‖ in float64 is ≲ 1e-10 here.
BOUND_RTOL = 1e-6
#: Columns kept in the output (the plotted numbers), then the bound flags.
KEEP = ["model", "num_steps", "step", "sample", "sigma", "h", "lambda_1", "lambda_2",
        "lambda_max", "rho_hat", "cos_dx_v1", "cos_df_v1"]

FULL = dict(num_samples=256, num_steps=[16, 32], models=["learned", "exact"], bins=10,
            min_count=20, stiff_above=10.0)
QUICK = dict(num_samples=48, num_steps=[16], models=["learned", "exact"], bins=6,
             min_count=10, stiff_above=10.0)


def compute(config: dict) -> pd.DataFrame:
    """Return one row per model, grid, step and sample: ρ̂, |λ₁| and the two |cos|.

    The bound flags are evaluated here, in float64 (the CSV keeps 6 digits): ``within_upper``
    is ``ρ̂ ≤ |λ₁|``, ``within_prop1`` adds the lower bound ``‖Δf‖/‖Δx‖ ≥ |λ₁|·|cos(Δx, v₁)|``.
    """
    # Sample k uses the per-sample seed SEED_STRIDE·seed + k (a quick run's initial states are
    # the first of a full run's, its samples equal to roundoff; fig2 and fig3 share them).
    seeds = run_seeds(config["seed"], config["num_samples"])
    rows = toy_alignment(toy_world(torch.float64), seeds, config["num_steps"],
                         models=config["models"], lte=False, guidance=False, progress=True)
    lam = rows["lambda_max"]
    upper = rows["rho_hat"] <= lam * (1 + BOUND_RTOL)
    lower = rows["df_norm"] / rows["dx_norm"] >= lam * rows["cos_dx_v1"] * (1 - BOUND_RTOL)
    out = rows[KEEP].copy()
    out["within_upper"] = upper.to_numpy()
    out["within_prop1"] = (upper & lower).to_numpy()
    return out


def estimator_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Return per model: n, log–log Pearson r and OLS slope of ρ̂ on |λ₁|, bound shares."""
    out = []
    for model, part in df.groupby("model"):
        x, y = np.log(part["lambda_max"].to_numpy(float)), np.log(part["rho_hat"].to_numpy(float))
        ok = np.isfinite(x) & np.isfinite(y)
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        ratio = np.exp(y[ok] - x[ok])
        out.append(dict(model=model, n=int(ok.sum()), r=float(np.corrcoef(x[ok], y[ok])[0, 1]),
                        slope=float(slope), intercept=float(intercept),
                        median_ratio=float(np.median(ratio)),
                        p05_ratio=float(np.quantile(ratio, 0.05)),
                        within_upper=float(part["within_upper"].mean()),
                        within_prop1=float(part["within_prop1"].mean()),
                        within_5pct=float((ratio <= 1.05).mean())))
    return pd.DataFrame(out).set_index("model")


def _alignment_bins(df: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Bin |cos(Δf, v₁)|, |cos(Δx, v₁)| and the eigenvalue ratio |λ₂|/|λ₁| by |λ₁|."""
    df = df.assign(eig_ratio=df["lambda_2"].abs() / df["lambda_max"])
    return binned(df, "lambda_max", ["cos_df_v1", "cos_dx_v1", "eig_ratio"], bins=config["bins"],
                  by="model", min_count=config["min_count"], seed=config["seed"])


def plot(df: pd.DataFrame, config: dict):
    """Draw (a) ρ̂ vs |λ₁| per model (coloured by σ) and (b) |cos(Δf, v₁)| vs |cos(Δx, v₁)|."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import LogNorm

    sns.set_theme(style="ticks", context="paper")
    palette = sns.color_palette("colorblind")
    stats = estimator_stats(df)
    models = [m for m in ("learned", "exact") if m in stats.index]
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(5 * (len(models) + 1), 4.6),
                             constrained_layout=True)
    lo = float(min(df["lambda_max"].min(), df["rho_hat"][df["rho_hat"] > 0].min()))
    hi = float(max(df["lambda_max"].max(), df["rho_hat"].max()))
    norm = LogNorm(float(df["sigma"].min()), float(df["sigma"].max()))
    for ax, model in zip(axes, models):
        part = df[df["model"] == model]
        s = stats.loc[model]
        sc = ax.scatter(part["lambda_max"], part["rho_hat"], c=part["sigma"], norm=norm, s=3,
                        alpha=0.5, lw=0, cmap="viridis", rasterized=True)
        grid = np.geomspace(lo, hi, 50)
        ax.plot(grid, grid, color="0.2", lw=1, ls="--", label="y = x (Prop. 1 bound)")
        ax.plot(grid, np.exp(s["intercept"]) * grid ** s["slope"], color=palette[3], lw=1.2,
                label=f"fit: slope {s['slope']:.3f}")
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
               xlabel=r"reference $|\lambda_1|$ of $\partial f/\partial x$ at $(\sigma_i, x_i)$ "
               + ("(JVP, dense)" if model == "learned" else "(closed form)"),
               ylabel=r"ERK-Guid $\hat\rho = \|\Delta f\| / \|\Delta x\|$")
        ax.set_title(f"(a) {model} model: log–log r = {s['r']:.4f}, slope {s['slope']:.3f}\n"
                     f"ρ̂ ≤ |λ₁| for {100 * s['within_upper']:.1f} % of {int(s['n'])} points "
                     f"(median ρ̂/|λ₁| = {s['median_ratio']:.3f})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3, lw=0.5)
    fig.colorbar(sc, ax=axes[: len(models)], label=r"$\sigma_i$", shrink=0.85)

    ax = axes[-1]
    bins = _alignment_bins(df, config)
    colors = {"cos_df_v1": palette[0], "cos_dx_v1": palette[4], "eig_ratio": "0.3"}
    names = {"cos_df_v1": r"drift difference $\Delta f$",
             "cos_dx_v1": r"solution difference $\Delta x$",
             "eig_ratio": r"eigenvalue ratio $|\lambda_2|/|\lambda_1|$"}
    for (model, q), part in bins.groupby(["model", "quantity"]):
        part = part.sort_values("x_mid")
        thin = q == "eig_ratio"
        ax.plot(part["x_mid"], part["mean"], color=colors[q],
                ls="-" if model == "learned" else "--",
                marker=("^" if thin else "o") if model == "learned" else ("v" if thin else "s"),
                ms=2.5 if thin else 3.5, lw=0.9 if thin else 1.5, label=f"{names[q]} ({model})")
        ax.fill_between(part["x_mid"], part["ci_lo"], part["ci_hi"], color=colors[q], alpha=0.18,
                        lw=0)
    counts = bins[(bins["quantity"] == "cos_df_v1") & (bins["model"] == models[0])]
    counts = counts.sort_values("bin")
    for _, row in counts.iterrows():
        ax.annotate(f"{row['count']}", (row["x_mid"], 0.02), ha="center", fontsize=6, color="0.4",
                    rotation=90)
    ax.axhline(2 / np.pi, color="0.35", ls=":", lw=1, label="random direction (2/π)")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel=r"$|\lambda_1|$ of $\partial f/\partial x$",
           ylabel=r"mean $|\cos(\cdot,\, v_1)|$, grey: $|\lambda_2|/|\lambda_1|$ (95 % CI)")
    ax.set_title(f"(b) alignment with v₁ of the ERK pair's differences\n(numbers: {models[0]} "
                 "rows per bin)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    fig.suptitle(f"ERK-Guid's pair estimates along plain Heun (w_stiff = 0), "
                 f"N ∈ {config['num_steps']}, {config['num_samples']} samples × steps 1…N−2, "
                 f"seed {config['seed']}", fontsize=10)
    return fig


def summarize(df: pd.DataFrame, config: dict) -> str:
    """One line per model for (a); bottom → top bin and the stiff region for (b)."""
    stats = estimator_stats(df)
    lines = []
    for model, s in stats.iterrows():
        lines.append(
            f"  (a) {model}: n={int(s['n'])}, log–log r={s['r']:.4f}, slope={s['slope']:.3f}, "
            "median "
            f"ρ̂/|λ₁|={s['median_ratio']:.3f} (5th pct {s['p05_ratio']:.3f}), ρ̂ ≤ |λ₁| "
            f"{100 * s['within_upper']:.1f} %, ≤ 1.05|λ₁| {100 * s['within_5pct']:.1f} %, "
            f"two-sided Prop. 1 {100 * s['within_prop1']:.1f} %")
    bins = _alignment_bins(df, config)
    for model, part in bins.groupby("model"):
        piv = part.pivot_table(index=["bin", "x_mid", "count"], columns="quantity", values="mean")
        piv = piv.reset_index().sort_values("bin")
        lo, hi = piv.iloc[0], piv.iloc[-1]
        rows = df[df["model"] == model]
        stiff = rows[rows["lambda_max"] >= config["stiff_above"]]
        lines.append(
            f"  (b) {model}: |cos(Δf,v1)| vs |cos(Δx,v1)|: "
            f"{lo['cos_df_v1']:.3f} vs {lo['cos_dx_v1']:.3f} "
            f"(bottom bin |λ|≈{lo['x_mid']:.2g}, n={int(lo['count'])}) → {hi['cos_df_v1']:.3f} vs "
            f"{hi['cos_dx_v1']:.3f} (top bin |λ|≈{hi['x_mid']:.2g}, n={int(hi['count'])}); "
            f"|λ| ≥ {config['stiff_above']:g}: {stiff['cos_df_v1'].mean():.3f} vs "
            f"{stiff['cos_dx_v1'].mean():.3f} (n={len(stiff)}); Δf better on "
            f"{100 * (rows['cos_df_v1'] >= rows['cos_dx_v1']).mean():.1f} % of rows")
    return "fig3: estimator accuracy\n" + "\n".join(lines)


def main(argv=None):
    """Run the figure from the command line (see ``--help``)."""
    return run_experiment("fig3", compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
