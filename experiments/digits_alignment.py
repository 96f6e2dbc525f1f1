"""Figs. 2–3 on the 8 × 8 digits — eigenvector alignment and ERK-Guid's ρ̂ (docs/figures.md).

Along plain-Heun trajectories (``w_stiff = 0``, EDM's grid: σ_max 80, σ_min 0.002, ρ = 7) of
two unconditional digits denoisers started from the same noise ``80 · N(0, I)`` — the learned
EDM model (``load_pretrained("digits")``, null label) and the exact mixture of the 1797 images
(:func:`stiffkit.diffusion.digits_mixture`, resolution 8, ``bandwidth`` 0) — every quantity is
measured at one point ``(σ_i, x_i)`` per step ``i ≥ 1``
(:func:`stiffkit.paper.alignment.heun_alignment`, ``nonnormal=True``), d = 64, float64:

* ``|cos|`` with the dominant eigenvector ``v₁`` of the symmetric part of ``J = ∂f/∂x`` of the
  Heun step's LTE (RK4 reference), of the ERK solution difference ``Δx`` and of ERK-Guid's
  direction ``Δf``, in log bins of ``h·|λ₁|`` (Fig. 2);
* ERK-Guid's ``ρ̂ = ‖Δf‖/‖Δx‖`` against the reference ``|λ₁|`` (Fig. 3) — and, because the
  learned model's ``J`` is not symmetric (its score is not a gradient), against each number
  Proposition 1 could be approximating there: the dominant ``|λ|`` of ``J`` itself, the power
  iteration's value on ``J``, and the largest singular value ``‖J‖₂``.

Reference Jacobians: dense from 64 forward-mode JVPs (learned), closed form (exact mixture).
Run: ``python experiments/digits_alignment.py`` (``--quick``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from _lib import binned, run_experiment
from torch import Tensor

from stiffkit.diffusion.noise import randn_per_sample, run_seeds
from stiffkit.diffusion.schedules import SIGMA_MAX, SIGMA_MIN, edm_sigmas

#: |cos| columns of the alignment panels, and their names.
QUANTITIES = {"cos_lte_v1": "LTE of the Heun step", "cos_dx_v1": "ERK solution difference Δx",
              "cos_df_v1": "ERK-Guid direction Δf",
              "cos_lte_vdom": "LTE, dominant eigenspace", "cos_dx_vdom": "Δx, dominant eigenspace",
              "cos_df_vdom": "Δf, dominant eigenspace",
              "eig_ratio": "eigenvalue ratio |λ₂|/|λ₁|"}
#: Mean |cos| between a fixed axis and a uniformly random direction in d = 64:
#: E|z₁|/‖z‖ = Γ(d/2)/(√π Γ((d+1)/2)).
RANDOM_COS = math.exp(math.lgamma(32) - math.lgamma(32.5)) / math.sqrt(math.pi)
#: What ρ̂ is compared with (columns of the rows): name -> legend.
REFERENCES = {"lambda_max": "|λ₁| of (J + Jᵀ)/2", "eig_abs": "|λ₁| of J",
              "power_abs": "power iteration on J", "sv_max": "‖J‖₂ (largest singular value)"}
FULL = dict(num_samples=48, num_steps=[16, 32], models=["learned", "exact"], bandwidth=0.0,
            substeps=8, bins=8, min_count=10, stiff_above=10.0)
QUICK = dict(num_samples=4, num_steps=[8], models=["learned", "exact"], bandwidth=0.0,
             substeps=4, bins=5, min_count=3, stiff_above=10.0)
MODELS = ("learned", "exact")


#: ``|λ₂| ≥ (1 − MULTIPLE_RTOL)|λ₁|``: a multiple top eigenvalue, v₁ undefined.
MULTIPLE_RTOL = 1e-9
#: Columns set to NaN where v₁ is undefined (they measure against one vector of the top).
UNDEFINED_WITHOUT_GAP = ["cos_lte_v1", "cos_dx_v1", "cos_df_v1", "cos_df_e1", "cos_dx_s1"]
#: Relative width of the dominant eigenvalue cluster of (J + Jᵀ)/2: eigenvalues with
#: |λ| ≥ (1 − CLUSTER_RTOL)|λ₁| span the dominant eigenspace. On digits |λ₁| is often the
#: trivial 1/σ of every direction the posterior has collapsed in (exact mixture: a multiple
#: eigenvalue, v₁ an arbitrary vector of it), so ``cos_*_vdom`` — the norm of the projection
#: onto that eigenspace — is the alignment that means something there (= |cos(·, v₁)| with a
#: gap).
CLUSTER_RTOL = 0.01
#: Columns :func:`spectrum_columns` adds to the alignment rows (from the same Jacobian).
SPECTRUM_COLUMNS = {
    "eig_abs": "|λ| of the dominant eigenvalue of J itself (eig, not its symmetric part)",
    "eig_imag": "|imaginary part| of that eigenvalue (0: a real dominant eigenpair)",
    "sv_max": "largest singular value ‖J‖₂ (≥ eig_abs; equal for a normal J)",
    "henrici": "departure from normality √(‖J‖_F² − Σ|λ_k|²) / ‖J‖_F (0: normal)",
    "lambda_power": "stiffkit's power iteration on J (products J v of the reference "
    "Jacobian: the JVP value; 200 products at most), its last Rayleigh quotient, signed",
    "power_converged": "whether it met its tolerance (residual ≤ 1e-6 |λ|)",
    "dom_mult": "eigenvalues of (J + Jᵀ)/2 in the dominant cluster (CLUSTER_RTOL)",
    "cos_lte_vdom": "‖P LTE‖/‖LTE‖, P the projector on the dominant eigenspace",
    "cos_dx_vdom": "‖P Δx‖/‖Δx‖", "cos_df_vdom": "‖P Δf‖/‖Δf‖",
    "cos_df_e1": "|cos(Δf, e₁)|, e₁ the dominant eigenvector of J itself (NaN if complex)",
    "cos_dx_s1": "|cos(Δx, s₁)|, s₁ the top right singular vector of J (ρ̂ = ‖J‖₂ needs Δx ∥ s₁)",
}

#: Columns kept in the CSV (the plotted and summarised numbers).
KEEP = ["model", "num_steps", "step", "sample", "sigma", "h", "lambda_1", "lambda_2",
        "lambda_max", "h_lambda", "eig_ratio", "v1_defined", "asymmetry", "rho_hat", "lte_norm",
        "cos_lte_v1", "cos_dx_v1", "cos_df_v1", *SPECTRUM_COLUMNS]


def spectrum_columns(jac: Tensor, vecs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Return :data:`SPECTRUM_COLUMNS` of ``jac: [batch, n, n]`` and the directions ``vecs``."""
    from stiffkit.estimators.eigen import power_iteration
    from stiffkit.estimators.spectrum import sorted_eig

    batch = jac.shape[0]
    flat = {k: v.reshape(batch, -1) for k, v in vecs.items()}
    values, vectors = sorted_eig(jac, symmetric=False)
    lam, e1 = values[:, 0], vectors[:, :, 0]
    if lam.is_complex():  # rotate a real eigenvalue's eigenvector (arbitrary phase) to real
        top = e1.gather(1, e1.abs().argmax(1, keepdim=True))
        e1 = torch.nn.functional.normalize((e1 * top.conj() / top.abs()).real, dim=1)
        e1 = torch.where((lam.imag == 0)[:, None], e1, torch.full_like(e1, torch.nan))
    _, svals, vh = torch.linalg.svd(jac)
    fro2 = torch.linalg.matrix_norm(jac).square()
    defect = (fro2 - values.abs().square().sum(1)).clamp_min(0)  # ‖N‖_F² of Schur's T = D + N
    power = power_iteration(lambda v: torch.bmm(jac, v[:, :, None])[:, :, 0],
                            torch.zeros_like(jac[:, 0]))
    sym_vals, sym_vecs = sorted_eig(jac, symmetric=True)
    in_cluster = sym_vals.abs() >= (1 - CLUSTER_RTOL) * sym_vals[:, :1].abs()

    def cos(u: Tensor, basis: Tensor, mask: Tensor | None = None) -> np.ndarray:
        coef = torch.einsum("bn,bnk->bk", u, basis) if mask is not None else (u * basis).sum(1)
        coef = coef.abs() if mask is None else (coef.square() * mask).sum(1).sqrt()
        return (coef / torch.linalg.vector_norm(u, dim=1)).numpy()

    cols = {"eig_abs": lam.abs().numpy(),
            "eig_imag": (lam.imag.abs() if lam.is_complex() else torch.zeros_like(lam)).numpy(),
            "sv_max": svals[:, 0].numpy(), "henrici": (defect / fro2).sqrt().numpy(),
            "lambda_power": power.value.numpy(), "power_converged": power.converged.numpy(),
            "dom_mult": in_cluster.sum(1).numpy()}
    for name in ("lte", "dx", "df"):
        cols[f"cos_{name}_vdom"] = (cos(flat[name], sym_vecs, in_cluster) if name in flat
                                    else np.full(batch, np.nan))
    cols["cos_df_e1"] = cos(flat["df"], e1)
    cols["cos_dx_s1"] = cos(flat["dx"], vh[:, 0])
    return cols


def _model(name: str, bandwidth: float):
    """Return ``(denoiser, closed-form Jacobian or None)`` of a model name."""
    if name == "learned":
        from stiffkit.diffusion.models import load_pretrained
        from stiffkit.diffusion.samplers import pf_ode_drift
        from stiffkit.estimators.jvp import jacobian_dense

        # The trajectory in float64 (Δx, Δf and the LTE are differences of nearby states);
        # the dense reference Jacobian from float32 JVPs of the same weights (3× faster on
        # CPU, eigenvalues to ~1e-6 relative).
        fast = pf_ode_drift(load_pretrained("digits").unconditional())
        return (load_pretrained("digits", dtype=torch.float64).unconditional(),
                lambda s, x: jacobian_dense(fast, float(s), x.float()).double())
    from stiffkit.diffusion import digits_mixture

    mix = digits_mixture(8, bandwidth)
    return mix, (lambda s, x: mix.drift_jacobian(x, s))


def compute(config: dict) -> pd.DataFrame:
    """Return one row per model, grid, step and sample (columns :data:`KEEP`)."""
    from stiffkit.diffusion.samplers import sample
    from stiffkit.paper.alignment import heun_alignment

    unknown = [m for m in config["models"] if m not in MODELS]
    if unknown or not config["models"]:
        raise ValueError(f"`models` must be drawn from {MODELS}, got {config['models']!r}.")
    seeds = run_seeds(config["seed"], config["num_samples"])
    x_init = SIGMA_MAX * randn_per_sample(seeds, (1, 8, 8), dtype=torch.float64)
    frames = []
    for name in config["models"]:
        denoiser, jacobian = _model(name, config["bandwidth"])
        for n in config["num_steps"]:
            traj = sample(denoiser, x_init, edm_sigmas(n, SIGMA_MIN, SIGMA_MAX), solver="heun",
                          w_stiff=0.0)
            rows = heun_alignment(traj, jacobian=jacobian, substeps=config["substeps"],
                                  jacobian_columns=spectrum_columns, progress=True)
            rows.insert(0, "num_steps", n)
            rows.insert(0, "model", name)
            frames.append(rows)
    df = pd.concat(frames, ignore_index=True)
    df["eig_ratio"] = df["lambda_2"].abs() / df["lambda_max"]
    # A multiple top eigenvalue (to roundoff) has no v₁: LAPACK returns an arbitrary vector
    # of its eigenspace, so |cos| with it is no measurement (the *_vdom columns are).
    df["v1_defined"] = df["eig_ratio"] < 1 - MULTIPLE_RTOL
    df.loc[~df["v1_defined"], UNDEFINED_WITHOUT_GAP] = np.nan
    return df[KEEP]


def ratio_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per model and reference: median, 5th / 95th percentile of ρ̂/ref and log–log r, slope."""
    df = df.assign(power_abs=df["lambda_power"].abs())
    out = []
    for model, part in df.groupby("model"):
        for ref in REFERENCES:
            x, y = np.log(part[ref].to_numpy(float)), np.log(part["rho_hat"].to_numpy(float))
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 2:
                continue
            ratio = np.exp(y[ok] - x[ok])
            slope = np.polyfit(x[ok], y[ok], 1)[0]
            out.append(dict(model=model, reference=ref, n=int(ok.sum()),
                            median_ratio=float(np.median(ratio)),
                            p05_ratio=float(np.quantile(ratio, 0.05)),
                            p95_ratio=float(np.quantile(ratio, 0.95)),
                            within_upper=float((ratio <= 1 + 1e-6).mean()),
                            r=float(np.corrcoef(x[ok], y[ok])[0, 1]), slope=float(slope)))
    return pd.DataFrame(out)


def stiff_split(df: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Median |cos| with v₁ per model in the stiff (|λ₁| ≥ stiff_above) and non-stiff rows."""
    stiff = df["lambda_max"] >= config["stiff_above"]
    out = []
    for (model, is_stiff), part in df.groupby([df["model"], stiff]):
        row = dict(model=model, stiff=bool(is_stiff), n=len(part),
                   v1_defined=float(part["v1_defined"].mean()))
        for q in ("cos_lte_v1", "cos_dx_v1", "cos_df_v1", "cos_lte_vdom", "cos_dx_vdom",
                  "cos_df_vdom", "cos_df_e1", "eig_ratio", "dom_mult"):
            row[q] = float(part[q].median())
        out.append(row)
    return pd.DataFrame(out)


def _bins(df: pd.DataFrame, config: dict) -> pd.DataFrame:
    return binned(df, "lambda_max", list(QUANTITIES), bins=config["bins"], by="model",
                  min_count=config["min_count"], seed=config["seed"])


def _alignment_panel(ax, bins: pd.DataFrame, quantities: list[str], colors: dict) -> None:
    for (model, q), part in bins[bins["quantity"].isin(quantities)].groupby(["model",
                                                                             "quantity"]):
        part = part.sort_values("x_mid")
        thin = q == "eig_ratio" or q.endswith("vdom")
        color = colors[q.replace("vdom", "v1")]
        ax.plot(part["x_mid"], part["mean"], color=color, alpha=0.55 if thin else 1,
                ls="-" if model == "learned" else "--",
                marker=("^" if thin else "o") if model == "learned" else ("v" if thin else "s"),
                ms=2.5 if thin else 3.5, lw=0.9 if thin else 1.5,
                label=f"{QUANTITIES[q]} ({model})")
        if not thin:
            ax.fill_between(part["x_mid"], part["ci_lo"], part["ci_hi"], color=color,
                            alpha=0.18, lw=0)
    ax.axhline(RANDOM_COS, color="0.35", ls=":", lw=1, label="random direction, d = 64")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel=r"$|\lambda_1|$ of $(J + J^T)/2$ (≈ 1/σ on digits)")
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=6.5, loc="upper left")


def plot(df: pd.DataFrame, config: dict):
    """Draw (a)–(c) alignment per stiffness bin, (d)–(e) ρ̂ vs references, (f) non-symmetry."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import LogNorm

    sns.set_theme(style="ticks", context="paper")
    pal = sns.color_palette("colorblind")
    colors = {"cos_lte_v1": pal[3], "cos_dx_v1": pal[4], "cos_df_v1": pal[0], "eig_ratio": "0.3"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 9), constrained_layout=True)
    bins = _bins(df, config)
    panels = [("(a) LTE of the Heun step", ["cos_lte_v1", "cos_lte_vdom", "eig_ratio"]),
              ("(b) ERK solution difference Δx", ["cos_dx_v1", "cos_dx_vdom"]),
              ("(c) ERK-Guid direction Δf", ["cos_df_v1", "cos_df_vdom"])]
    for ax, (title, qs) in zip(axes[0], panels):
        _alignment_panel(ax, bins, qs, colors)
        ax.set_title(title, fontsize=9)
    axes[0, 0].set_ylabel(r"mean $|\cos(\cdot,\,v_1)|$ (95 % CI)" "\n"
                          r"faint: dominant eigenspace, $|\lambda| \geq 0.99|\lambda_1|$")
    stats = ratio_stats(df).set_index(["model", "reference"])
    norm = LogNorm(float(df["sigma"].min()), float(df["sigma"].max()))
    markers = {"lambda_max": "o", "eig_abs": "^", "power_abs": "x", "sv_max": "s"}
    data = df.assign(power_abs=df["lambda_power"].abs())
    sc = None
    for ax, model in zip(axes[1, :2], MODELS):
        part = data[data["model"] == model]
        if part.empty:
            ax.set_visible(False)
            continue
        refs = list(REFERENCES) if model == "learned" else ["lambda_max"]
        lo = float(np.nanmin(part[[*refs, "rho_hat"]].to_numpy()))
        hi = float(np.nanmax(part[[*refs, "rho_hat"]].to_numpy()))
        for k, ref in enumerate(refs):
            s = stats.loc[(model, ref)]
            sc = ax.scatter(part[ref], part["rho_hat"], c=part["sigma"], norm=norm, s=6 if k else 4,
                            marker=markers[ref], alpha=0.45 if k == 0 else 0.35, lw=0.4,
                            cmap="viridis", rasterized=True,
                            label=f"vs {REFERENCES[ref]}: median ratio {s['median_ratio']:.3f}, "
                            f"r = {s['r']:.3f}")
        grid = np.geomspace(lo, hi, 20)
        ax.plot(grid, grid, color="0.2", ls="--", lw=1, label="y = x")
        ax.set(xscale="log", yscale="log", xlabel="reference at $(\\sigma_i, x_i)$",
               ylabel=r"ERK-Guid $\hat\rho = \|\Delta f\|/\|\Delta x\|$")
        ax.set_title(f"({'d' if model == 'learned' else 'e'}) {model}: ρ̂ against the reference"
                     + (" (J not symmetric: four candidates)" if model == "learned" else
                        " (J symmetric, closed form)"), fontsize=9)
        ax.legend(fontsize=6.5, loc="upper left")
        ax.grid(alpha=0.3, lw=0.5)
    if sc is not None:
        fig.colorbar(sc, ax=axes[1, :2], label=r"$\sigma_i$", shrink=0.8)
    ax = axes[1, 2]
    learned = data[data["model"] == "learned"]
    for k, (n, part) in enumerate(learned.groupby("num_steps")):
        per = part.groupby("sigma")[["asymmetry", "henrici", "sv_max", "eig_abs"]].median()
        per = per.reset_index()
        ls = ["-", "--", ":"][k % 3]
        ax.plot(per["sigma"], per["asymmetry"], ls=ls, marker="o", ms=3, color=pal[0],
                label=f"‖J − Jᵀ‖_F / ‖J‖_F, N = {n}")
        ax.plot(per["sigma"], per["henrici"], ls=ls, marker="^", ms=3, color=pal[2],
                label=f"departure from normality, N = {n}")
        ax.plot(per["sigma"], per["sv_max"] / per["eig_abs"] - 1, ls=ls, marker="s", ms=3,
                color=pal[3], label=f"‖J‖₂ / |λ₁(J)| − 1, N = {n}")
    exact = data.loc[data["model"] == "exact", "asymmetry"]
    ax.set(xscale="log", yscale="log", xlabel=r"$\sigma_i$", ylabel="median over samples")
    ax.set_title("(f) learned J: non-symmetry and non-normality"
                 + (f" (exact mixture: ≤ {exact.max():.1g})" if len(exact) else ""), fontsize=9)
    ax.legend(fontsize=6, loc="best")
    ax.grid(alpha=0.3, which="both", lw=0.5)
    fig.suptitle(
        f"Digits 8 × 8 (d = 64): plain Heun on EDM's grid, N ∈ {config['num_steps']}, "
        f"{config['num_samples']} samples from the same noise, seed {config['seed']}; learned "
        f"(solid) vs exact mixture, bandwidth {config['bandwidth']:g} (dashed)", fontsize=10)
    return fig


def summarize(df: pd.DataFrame, config: dict) -> str:
    """The report's numbers: alignment stiff vs non-stiff, ρ̂/ref, non-symmetry."""
    lines = ["digits_alignment: alignment and ρ̂ on digits"]
    for _, r in stiff_split(df, config).iterrows():
        lines.append(f"  {r['model']:7s} {'stiff' if r['stiff'] else 'non-stiff':9s} "
                     f"(|λ₁| {'≥' if r['stiff'] else '<'} {config['stiff_above']:g}, "
                     f"n={r['n']}, v₁ defined {100 * r['v1_defined']:.0f} %): median |cos| LTE "
                     f"{r['cos_lte_v1']:.3f}, Δx "
                     f"{r['cos_dx_v1']:.3f}, Δf {r['cos_df_v1']:.3f} (Δf vs J's e₁ "
                     f"{r['cos_df_e1']:.3f}); dominant eigenspace (median size "
                     f"{r['dom_mult']:g}): LTE {r['cos_lte_vdom']:.3f}, Δx {r['cos_dx_vdom']:.3f}, "
                     f"Δf {r['cos_df_vdom']:.3f}; |λ₂|/|λ₁| {r['eig_ratio']:.3f}")
    for _, s in ratio_stats(df).iterrows():
        lines.append(f"  {s['model']:7s} ρ̂ / {s['reference']:10s}: median {s['median_ratio']:.3f} "
                     f"[5 %: {s['p05_ratio']:.3f}, 95 %: {s['p95_ratio']:.3f}], log–log r "
                     f"{s['r']:.3f}, slope {s['slope']:.3f}, "
                     f"ρ̂ ≤ ref {100 * s['within_upper']:.1f} %")
    for model, part in df.groupby("model"):
        between = (part["rho_hat"] > part["eig_abs"] * (1 + 1e-9)) & (
            part["rho_hat"] <= part["sv_max"] * (1 + 1e-9))
        err = {ref: np.nanmedian(np.abs(np.log(part["rho_hat"] / part[ref].abs())))
               for ref in ("eig_abs", "sv_max")}
        lines.append(f"  {model:7s} ρ̂ in (|λ₁(J)|, ‖J‖₂]: {100 * between.mean():.1f} % of rows; "
                     f"median |log(ρ̂/ref)|: |λ₁(J)| {err['eig_abs']:.4f}, ‖J‖₂ "
                     f"{err['sv_max']:.4f}; power iteration converged "
                     f"{100 * part['power_converged'].mean():.1f} %")
        trivial = (part["lambda_max"] * part["sigma"] - 1).abs() <= 0.01
        lines.append(f"  {model:7s} |λ₁| within 1 % of the trivial 1/σ: {100 * trivial.mean():.1f} "
                     "% of rows")
        lines.append(f"  {model:7s} ‖J−Jᵀ‖_F/‖J‖_F median {part['asymmetry'].median():.3g} "
                     f"(max {part['asymmetry'].max():.3g}), departure from normality median "
                     f"{part['henrici'].median():.3g}, complex dominant eigenvalue "
                     f"{100 * (part['eig_imag'] > 0).mean():.1f} % of rows")
    return "\n".join(lines)


def main(argv=None):
    """Run the figure from the command line (see ``--help``)."""
    return run_experiment("digits_alignment", compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
