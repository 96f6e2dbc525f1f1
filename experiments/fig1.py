"""Fig. 1 of ERK-Guid on the 2-D tree: where the learned ODE is stiff, and what its error is like.

Three panels (docs/figures.md, Fig. 1):

* **(a) stiffness map** — exact samples of ``p_σ`` (class A of the tree) at a few levels of the
  sampler's grid, coloured by ``|λ_max|`` of ``∂f/∂x``: the exact drift (closed-form Jacobian,
  ``eigvalsh``) in the top row, the learned drift (dense Jacobian from JVPs) in the bottom row.
* **(b) drift across a branch** — ``⟨f(x(s); σ), n⟩`` along the line through a branch's centre
  perpendicular to it, for the trunk (thick) and a depth-6 tip (thin), exact and learned.
  The slope at the centre is the stiffness along ``n``; the lines ``s/h`` (an Euler step lands
  on the centre) and ``2s/h`` (the real stability limit of Euler and Heun) show it against
  the step ``h`` of the grid.
* **(c) error directions** — on Heun trajectories of the learned model, the local truncation
  error ``LTE_i = x_ref(σ_{i+1}) − x_{i+1}`` and the ERK solution difference
  ``Δx_i = x_i − x_E`` (the previous step's Euler point, also at σ_i) in the eigenbasis
  ``(v₁, v₂)`` of ``∂f/∂x(σ_i, x_i)``, normalised: ``(⟨u, v₁⟩, ⟨u, v₂⟩)/‖u‖ = (cos θ, sin θ)``.
  In 2-D these points all lie on the unit circle, so the plot is polar: angle θ (folded to
  0°…90°, eigenvector signs being arbitrary) at radius = stiffness; ``u ∥ v₁`` is θ = 0.

Run ``python experiments/fig1.py`` (``--quick`` for a CI-sized run); ``--set
stiffness=h_lambda`` colours by ``h·|λ_max|`` instead (``h`` = the grid's step from σ).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from _lib import binned, run_experiment

from stiffkit import eig_dense, jacobian_dense
from stiffkit.diffusion.mixtures.tree import TREE_DEPTH, TREE_POINTS_PER_BRANCH
from stiffkit.diffusion.noise import mixture_samples, sub_seed
from stiffkit.diffusion.samplers import sample
from stiffkit.estimators.lte import reference_step
from stiffkit.paper.toy import toy_world, tree_branch_depths, tree_branches

NAME = "fig1"
#: Stiffness measures a plot can colour by: |λ_max| or h·|λ_max|.
STIFFNESS = ("lambda", "h_lambda")
STIFFNESS_LABEL = {"lambda": "|λ_max| of ∂f/∂x", "h_lambda": "h·|λ_max| of ∂f/∂x"}
#: Independent seed streams of the experiment (mixed with ``config["seed"]``).
MAP_STREAM, TRAJ_STREAM = 1, 2
#: Half-length of a drift line, in noisy branch widths ``sqrt(width² + σ²)``.
LINE_HALF_WIDTHS = 4.0
#: Log-spaced stiffness bins of the median-angle curves in (c), and their minimal count.
LTE_BINS, MIN_BIN_COUNT = 10, 10
#: Pooled quantile that splits "stiff" (top) from "non-stiff" (bottom) points in (c).
STIFF_QUANTILE = 0.25

FULL = dict(
    num_steps=16,  # EDM grid of the sampler (σ_max = 5): Heun, 31 evaluations
    map_steps=[6, 10, 12, 14],  # grid levels of panel (a): σ ≈ 0.557, 0.077, 0.022, 0.0049
    map_samples=2000,
    line_step=14,  # grid level of panel (b): σ ≈ 0.0049, h ≈ 0.0029 (the thin tips' peak)
    line_points=401,
    thin_depth=6,
    trajectories=512,
    reference_substeps=64,  # RK4 substeps of the LTE reference (fixed: batch-independent)
    stiffness="lambda",
)
QUICK = dict(FULL, map_samples=256, line_points=101, trajectories=64, reference_substeps=32)


# ----------------------------------------------------------------------------- helpers
def _seeds(seed: int, stream: int, n: int, salt: int = 0) -> list[int]:
    """Return ``n`` per-sample seeds of one stream (sample i independent of ``n``)."""
    base = sub_seed(np.random.SeedSequence([seed, stream, salt]))
    return [(base + 7919 * i) % 2**63 for i in range(n)]


def _chosen_branches(geometry: pd.DataFrame, thin_depth: int) -> dict[str, pd.Series]:
    """The trunk, and the depth-`thin_depth` branch with the clearest perpendicular line."""
    thin = geometry[geometry.depth == thin_depth]
    if thin.empty:
        raise ValueError(f"`thin_depth` must lie in [1, {TREE_DEPTH - 1}], got {thin_depth}.")
    return {"thick": geometry.iloc[0], "thin": thin.loc[thin.clearance.idxmax()]}


def _stiffness(df: pd.DataFrame, measure: str, lam: str = "lam") -> np.ndarray:
    if measure not in STIFFNESS:
        raise ValueError(f"`stiffness` must be one of {STIFFNESS}, got {measure!r}.")
    values = df[lam].abs().to_numpy()
    return values * df["h"].to_numpy() if measure == "h_lambda" else values


# ----------------------------------------------------------------------------- compute
def _map_rows(world, sigmas: torch.Tensor, config: dict[str, Any], depth: np.ndarray, bar) -> list:
    """Panel (a): exact samples of p_σ at each map level, |λ_max| exact and learned."""
    rows = []
    learned = lambda s, y: world.main.drift(y, s)  # noqa: E731 (torchdiffeq order)
    for i in config["map_steps"]:
        sigma, h = float(sigmas[i]), float(sigmas[i] - sigmas[i + 1])
        seeds = _seeds(config["seed"], MAP_STREAM, config["map_samples"], i)
        x = mixture_samples(world.exact, seeds, sigma, dtype=torch.float64)
        lam_exact = torch.linalg.eigvalsh(world.exact.drift_jacobian(x, sigma))  # ascending
        lam_exact = torch.where(lam_exact[:, 0].abs() > lam_exact[:, -1].abs(),
                                lam_exact[:, 0], lam_exact[:, -1])  # signed, max modulus
        lam_learned = eig_dense(learned, sigma, x, symmetric=True).values[:, 0]
        # The branch that explains each point best (largest responsibility) and its depth.
        comp = world.exact.responsibilities(x, sigma).argmax(dim=1).numpy()
        base = dict(panel="map", step=i, sigma=sigma, h=h, x=x[:, 0].numpy(), y=x[:, 1].numpy(),
                    depth=depth[comp // TREE_POINTS_PER_BRANCH])
        for model, lam in (("exact", lam_exact), ("learned", lam_learned)):
            rows.append(pd.DataFrame(dict(base, model=model, lam=lam.detach().numpy())))
        bar.update(1)
    return rows


def _line_rows(world, sigmas: torch.Tensor, config: dict[str, Any], bar) -> list:
    """Panel (b): ⟨f, n⟩ along the perpendicular line through the trunk and a thin tip."""
    rows = []
    i = config["line_step"]
    sigma, h = float(sigmas[i]), float(sigmas[i] - sigmas[i + 1])
    learned = lambda s, y: world.main.drift(y, s)  # noqa: E731
    for kind, br in _chosen_branches(tree_branches(), config["thin_depth"]).items():
        centre = torch.tensor([[br.cx, br.cy]], dtype=torch.float64)
        n = torch.tensor([br.nx, br.ny], dtype=torch.float64)
        half = LINE_HALF_WIDTHS * math.hypot(br.width, sigma)
        s = torch.linspace(-half, half, config["line_points"], dtype=torch.float64)
        x = centre + s[:, None] * n
        for model in ("exact", "learned"):
            if model == "exact":
                drift = world.exact.drift(x, sigma)
                jac = world.exact.drift_jacobian(centre, sigma)[0]
            else:
                drift = world.main.drift(x, sigma)
                jac = jacobian_dense(learned, sigma, centre)[0]
            rows.append(pd.DataFrame(dict(
                panel="line", branch_kind=kind, branch=int(br.branch), depth=int(br.depth),
                model=model, step=i, sigma=sigma, h=h, s=s.numpy(),
                drift_n=(drift.detach() @ n).numpy(), width=br.width,
                slope=float(n @ jac.detach() @ n),  # nᵀ J n at the centre: stiffness along n
                x=x[:, 0].numpy(), y=x[:, 1].numpy())))
        bar.update(1)
    return rows


def _lte_rows(world, sigmas: torch.Tensor, config: dict[str, Any], bar) -> list:
    """Panel (c): LTE and ERK Δx of learned Heun steps in the eigenbasis of ∂f/∂x."""
    x0 = world.initial_state(_seeds(config["seed"], TRAJ_STREAM, config["trajectories"]),
                             dtype=torch.float64)
    traj = sample(world.main, x0, sigmas, solver="heun")
    bar.update(1)
    # Steps i = 1 … N−2 have a pair; the last step (to σ = 0) is plain Euler and is skipped.
    steps = torch.arange(1, len(sigmas) - 2)
    batch = x0.shape[0]
    x = traj.states[steps].reshape(-1, 2)  # [steps * batch, 2], step-major
    s = sigmas[steps].repeat_interleave(batch)  # σ_i per row
    h = s - sigmas[steps + 1].repeat_interleave(batch)  # h_i > 0 per row
    # All steps in one batch: in τ ∈ [0, 1], σ(τ) = σ_i − τ h_i and dx/dτ = −h_i f(σ(τ), x),
    # so uniform RK4 substeps in τ are exactly uniform RK4 substeps of each step in σ (one
    # batched call per stage instead of one per step: the learned model's per-call overhead
    # dominates at these batch sizes).
    def rescaled(tau, y):
        return -h[:, None] * traj.f(s - tau * h, y)

    x_ref = reference_step(rescaled, 0.0, x, 1.0, method="rk4",
                           substeps=config["reference_substeps"])
    bar.update(1)
    spec = eig_dense(traj.f, s, x, symmetric=True)  # per-row σ; values sorted by |λ|, descending
    vecs = spec.vectors  # [rows, 2, 2]: vecs[:, k] is v_{k+1}
    bar.update(1)
    row = dict(panel="lte", step=steps.repeat_interleave(batch).numpy(), sigma=s.numpy(),
               h=h.numpy(), sample=np.tile(np.arange(batch), len(steps)),
               lam=spec.values[:, 0].numpy(), lam2=spec.values[:, 1].numpy(),
               x=x[:, 0].numpy(), y=x[:, 1].numpy())
    lte = x_ref - traj.states[steps + 1].reshape(-1, 2)
    dx = x - traj.pair_states[steps - 1].reshape(-1, 2)  # pair of step i−1: Euler point at σ_i
    for name, u in (("lte", lte), ("dx", dx)):
        coef = torch.einsum("bd,bkd->bk", u, vecs)  # ⟨u, v_k⟩: [rows, 2]
        norm = u.norm(dim=1)
        row[f"{name}_norm"] = norm.numpy()
        row[f"{name}_c1"] = (coef[:, 0] / norm).numpy()
        row[f"{name}_c2"] = (coef[:, 1] / norm).numpy()
    return [pd.DataFrame(row)]


def compute(config: dict[str, Any]) -> pd.DataFrame:
    """Compute the three panels; return one long frame with a ``panel`` column."""
    from tqdm.auto import tqdm

    if config["stiffness"] not in STIFFNESS:
        raise ValueError(f"`stiffness` must be one of {STIFFNESS}, got {config['stiffness']!r}.")
    world = toy_world(torch.float64)  # float64: LTEs of late steps are ~1e-5, cosines need digits
    sigmas = world.sigmas(config["num_steps"]).to(torch.float64)
    levels = [*config["map_steps"], config["line_step"]]
    if not all(0 <= i < config["num_steps"] - 1 for i in levels):
        raise ValueError("`map_steps` and `line_step` must be Heun steps of the grid, "
                         f"0 … {config['num_steps'] - 2}.")
    if config["line_step"] not in config["map_steps"]:  # the summary reads its map
        raise ValueError(f"`line_step` = {config['line_step']} must be one of `map_steps` = "
                         f"{config['map_steps']}.")
    depth = tree_branch_depths()
    total = len(config["map_steps"]) + 2 + 3
    with tqdm(total=total, desc=NAME, unit="stage") as bar:
        rows = _map_rows(world, sigmas, config, depth, bar)
        rows += _line_rows(world, sigmas, config, bar)
        rows += _lte_rows(world, sigmas, config, bar)
    df = pd.concat(rows, ignore_index=True)
    # float32 is plenty for plotting and halves the committed CSV (~5 MB instead of ~8 MB).
    floats = df.select_dtypes("float64").columns
    df[floats] = df[floats].astype(np.float32)
    return df


# ----------------------------------------------------------------------------- plot
def plot(df: pd.DataFrame, config: dict[str, Any]):
    """Draw (a) the stiffness maps, (b) the drift across branches, (c) the error directions."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    measure = config["stiffness"]
    label = STIFFNESS_LABEL[measure]
    fig = plt.figure(figsize=(17, 13), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, 1.05])

    # (a) maps: one shared log colour scale over both rows, so exact and learned compare.
    maps = df[df.panel == "map"].copy()
    maps["stiff"] = _stiffness(maps, measure)
    norm = LogNorm(*np.quantile(maps.stiff[maps.stiff > 0], [0.001, 1.0]))
    steps = sorted(maps.step.unique())
    axes = top.subplots(2, len(steps), squeeze=False)  # [2, n] even for one map level
    lines = df[df.panel == "line"]
    for j, step in enumerate(steps):
        for r, model in enumerate(("exact", "learned")):
            part = maps[(maps.step == step) & (maps.model == model)].sort_values("stiff")
            ax = axes[r, j]
            sc = ax.scatter(part.x, part.y, c=part.stiff, norm=norm, cmap="viridis", s=3,
                            linewidths=0, rasterized=True)
            # Square limits over the central 99.6 % of the level's samples.
            q = np.quantile(maps[maps.step == step][["x", "y"]], [0.002, 0.998], axis=0)
            mid, half = q.mean(axis=0), 0.55 * (q[1] - q[0]).max()
            ax.set_xlim(mid[0] - half, mid[0] + half)
            ax.set_ylim(mid[1] - half, mid[1] + half)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(f"{model}: σ = {part.sigma.iloc[0]:.3g}  (max {part.stiff.max():.3g}, "
                         f"median {part.stiff.median():.2g})", fontsize=9)
            if r == 1:
                ax.set_xlabel("x₁")
            if j == 0:
                ax.set_ylabel(f"{model} drift\nx₂")
            if step == config["line_step"]:  # where the lines of panel (b) run
                for kind, seg in lines[lines.model == model].groupby("branch_kind"):
                    ax.plot(seg.x, seg.y, color="red", lw=2.5)
                    ax.annotate(f"{kind} branch, (b)", (seg.x.iloc[-1], seg.y.iloc[-1]),
                                color="red", fontsize=8, xytext=(-3, 3), ha="right",
                                textcoords="offset points",
                                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none",
                                          alpha=0.7))
    top.colorbar(sc, ax=axes, label=label, shrink=0.9)
    top.suptitle("(a) Stiffness on the tree: exact samples of p_σ coloured by "
                 f"{label} (levels of the {config['num_steps']}-step EDM grid; log colour "
                 "scale)", fontsize=11)

    grid = bottom.add_gridspec(1, 4)
    ax_thick, ax_thin = bottom.add_subplot(grid[0]), bottom.add_subplot(grid[1])
    # (b) drift projected on the branch normal.
    for ax, kind in ((ax_thick, "thick"), (ax_thin, "thin")):
        part = lines[lines.branch_kind == kind]
        ex = part[part.model == "exact"]
        h, width, sigma = ex.h.iloc[0], ex.width.iloc[0], ex.sigma.iloc[0]
        for model, style in (("exact", "-"), ("learned", "--")):
            p = part[part.model == model]
            slope = p.slope.iloc[0]
            ax.plot(p.s, p.drift_n, style, lw=2,
                    label=f"{model}: slope at centre {slope:.3g} (h·slope {h * slope:.2f})")
        ymax = 1.3 * part.drift_n.abs().max()
        s = ex.s.to_numpy()
        ax.plot(s, s / h, ":", color="gray", label="s/h: an Euler step lands on the centre")
        ax.plot(s, 2 * s / h, "-.", color="gray", label="2s/h: Euler/Heun stability limit")
        ax.axvspan(-width, width, color="C2", alpha=0.15,
                   label=f"clean branch ±1 std ({width:.3g})")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-ymax, ymax)
        ax.set_xlim(s[0], s[-1])
        ax.set_xlabel("signed distance s across the branch")
        ax.set_ylabel("⟨f(x(s); σ), n⟩")
        ax.set_title(f"(b) {kind} branch (depth {int(ex.depth.iloc[0])}), σ = {sigma:.3g}, "
                     f"h = {h:.2g}", fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)

    # (c) the normalised eigen-coordinates (⟨u, v₁⟩, ⟨u, v₂⟩)/‖u‖ = (cos θ, sin θ) of each u;
    # eigenvector signs are arbitrary, so fold to θ ∈ [0°, 90°] (0° = along v₁). In 2-D these
    # points all lie on the unit circle, where thousands overplot: draw each at radius =
    # its stiffness instead (a polar scatter), which unrolls the circle by stiffness.
    lte = df[df.panel == "lte"].copy()
    lte["stiff"] = _stiffness(lte, measure)
    lte = lte.sort_values("stiff")
    cnorm = LogNorm(*np.quantile(lte.stiff[lte.stiff > 0], [0.001, 1.0]))
    hi, lo = np.quantile(lte.stiff, [1 - STIFF_QUANTILE, STIFF_QUANTILE])
    rlim = (0.8 * lte.stiff.min(), 1.25 * lte.stiff.max())
    for name in ("lte", "dx"):
        lte[f"{name}_angle"] = np.degrees(np.arctan2(lte[f"{name}_c2"].abs(),
                                                     lte[f"{name}_c1"].abs()))
    medians = binned(lte, "stiff", ["lte_angle", "dx_angle"], bins=LTE_BINS,
                     min_count=MIN_BIN_COUNT)
    polar_axes = []
    for k, (name, title) in enumerate((("lte", "LTE"), ("dx", "ERK solution difference Δx"))):
        ax = bottom.add_subplot(grid[2 + k], projection="polar")
        polar_axes.append(ax)
        sc2 = ax.scatter(np.radians(lte[f"{name}_angle"]), lte.stiff, c=lte.stiff, norm=cnorm,
                         cmap="viridis", s=3, alpha=0.5, linewidths=0, rasterized=True)
        med = medians[medians.quantity == f"{name}_angle"]
        ax.plot(np.radians(med["median"]), med.x_mid, "o-", color="red", ms=3, lw=1.5,
                label="median angle per stiffness bin")
        ax.set_thetamin(0)
        ax.set_thetamax(90)
        ax.set_rscale("log")
        ax.set_rlim(*rlim)
        ax.set_rlabel_position(90)
        ax.set_thetagrids([0, 15, 30, 45, 60, 75, 90],
                          ["v₁ 0°", "15°", "30°", "45°", "60°", "75°", "v₂ 90°"])
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.15, 1.08))
        c1 = lte[f"{name}_c1"].abs().to_numpy()
        ax.set_title(f"(c) u = {title}: angle from the v₁ axis (θ),\nradius = {label}", fontsize=9)
        ax.text(0.5, -0.12, f"median |⟨u, v₁⟩|/‖u‖: {np.median(c1[lte.stiff >= hi]):.3f} in the "
                f"stiffest quarter,\n{np.median(c1[lte.stiff <= lo]):.3f} in the least stiff "
                "quarter (random direction: 0.707)", transform=ax.transAxes, ha="center",
                va="top", fontsize=8)
    bottom.colorbar(sc2, ax=polar_axes, label=label + " at (σ_i, x_i)", shrink=0.9)
    n_traj = lte["sample"].nunique()
    bottom.suptitle(f"(b) drift across two branches, exact vs learned    ·    (c) error directions "
                    f"on learned-model Heun trajectories ({config['num_steps']} steps, {n_traj} "
                    f"trajectories; steps 1…{config['num_steps'] - 2}: not the first, which has no "
                    "pair, nor the final Euler step)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- summary
def summarize(df: pd.DataFrame, config: dict[str, Any]) -> str:
    """Return the findings of the three panels, with their numbers."""
    measure = config["stiffness"]
    out = []
    maps = df[df.panel == "map"].copy()
    maps["stiff"] = _stiffness(maps, measure)
    parts = []
    for _, g in maps.groupby("step"):
        ex, le = g[g.model == "exact"], g[g.model == "learned"]
        parts.append(f"σ={g.sigma.iloc[0]:.3g}: exact max {ex.stiff.max():.3g} / p99 "
                     f"{ex.stiff.quantile(0.99):.3g} / median {ex.stiff.median():.2g}, learned max "
                     f"{le.stiff.max():.3g} / p99 {le.stiff.quantile(0.99):.3g} / median "
                     f"{le.stiff.median():.2g}")
    out.append(f"(a) {STIFFNESS_LABEL[measure]} — " + "; ".join(parts))
    # The largest moduli may be repelling directions (λ < 0: saddles between branches).
    exact = maps[maps.model == "exact"]
    repelling = []
    for _, g in exact.groupby("step"):
        top = g.lam[g.stiff >= g.stiff.quantile(0.99)]
        repelling.append(f"σ={g.sigma.iloc[0]:.3g}: {100 * (top < 0).mean():.0f} %")
    out.append("(a) share of repelling (λ < 0) among the exact top-1 % — " + ", ".join(repelling))
    small = maps[(maps.step == config["line_step"])]
    by_depth = small.groupby(["model", "depth"]).stiff.median().unstack("depth")
    out.append(f"(a) at σ={small.sigma.iloc[0]:.3g}, median by branch depth 0…6: "
               + "; ".join(f"{m} " + " ".join(f"{v:.3g}" for v in row)
                           for m, row in by_depth.iterrows()))
    lines = df[df.panel == "line"]
    h = lines.h.iloc[0]
    slopes = lines.groupby(["branch_kind", "model"]).slope.first()
    out.append(f"(b) σ={lines.sigma.iloc[0]:.3g}, h={h:.2g}: centre slope nᵀJn thick "
               f"{slopes['thick', 'exact']:.3g} exact / {slopes['thick', 'learned']:.3g} learned, "
               f"thin {slopes['thin', 'exact']:.3g} exact / {slopes['thin', 'learned']:.3g} "
               f"learned (h·slope thin exact {h * slopes['thin', 'exact']:.2f}; Euler/Heun "
               "unstable above 2)")
    lte = df[df.panel == "lte"].copy()
    for m in STIFFNESS:
        st = _stiffness(lte, m)
        hi, lo = np.quantile(st, [1 - STIFF_QUANTILE, STIFF_QUANTILE])
        med = {(name, tag): np.median(np.abs(lte[f"{name}_c1"].to_numpy()[mask]))
               for name in ("lte", "dx") for tag, mask in (("hi", st >= hi), ("lo", st <= lo))}
        out.append(f"(c) by {STIFFNESS_LABEL[m]} (top quarter ≥ {hi:.3g} vs bottom ≤ {lo:.3g}): "
                   f"median |cos(LTE, v₁)| {med['lte', 'hi']:.3f} vs {med['lte', 'lo']:.3f}, "
                   f"|cos(Δx, v₁)| {med['dx', 'hi']:.3f} vs {med['dx', 'lo']:.3f} "
                   "(random direction in 2-D: 0.707)")
    return "\n".join(out)


def main(argv=None) -> dict[str, Any]:
    """Run Fig. 1 from the command line (see ``--help``)."""
    return run_experiment(NAME, compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
