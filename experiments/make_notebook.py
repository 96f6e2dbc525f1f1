"""Write ``paper_repro.ipynb``: the reproduction as a narrative (run:
``python experiments/make_notebook.py``).

The notebook is generated, not edited by hand, so its code stays in step with the figure
scripts: every figure cell calls the script's own ``compute`` / ``plot`` / ``summarize`` with
its ``QUICK`` configuration (minutes on a laptop CPU), and the findings cells read the numbers
of the committed full runs from ``figures/*.csv``. Outputs are not stored (CI executes it).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from stiffkit.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "paper_repro.ipynb"


def _figure_cell(module: str, var: str) -> str:
    """The code cell that runs one experiment script's compute → plot → summary at quick size."""
    return (f"import {module}\n\n"
            f"cfg = dict({module}.QUICK, seed=0, quick=True)\n"
            f"{var} = cached_compute(\"{module}\", {module}.compute, cfg)\n"
            f"{module}.plot({var}, cfg)\n"
            "plt.show()\n"
            f"print({module}.summarize({var}, cfg))")

CELLS: list[tuple[str, str]] = [
    ("md", """\
# Reproducing *Error as Signal* (ERK-Guid) on the 2-D tree — with stiffkit

Kong, Lee, Hong, Kim, *Error as Signal: Stiffness-Aware Diffusion Sampling via Embedded
Runge-Kutta Guidance* (ICLR 2026) argue that where the probability-flow ODE is **stiff**, the
local truncation error (LTE) of an explicit solver lines up with the dominant eigenvector
`v₁` of the drift Jacobian; that Heun's embedded Euler pair estimates both the stiffness
(Proposition 1, `ρ̂ = ‖Δf‖/‖Δx‖`) and that direction (`Δf`) for free; and that a correction
along it — **ERK-Guid** — improves samples at zero extra network evaluations.

This notebook walks through that argument on the paper's own toy (the autoguidance "tree"
Gaussian mixture) with the **learned** energy-MLP denoisers shipped in `stiffkit` and, where
it adds truth, the exact mixture. Each figure cell calls the figure script's `compute` /
`plot` at its *quick* settings (so the notebook runs in a few minutes); the committed
full-run figures in `figures/` come from `python experiments/figN.py`, and the closing
cells quote their numbers from `figures/*.csv`. **Where a claim does not hold here, this
notebook says so.**"""),
    ("code", """\
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import stiffkit
from stiffkit.diffusion import W_STIFF_THEORY, sample
from stiffkit.paper import toy_world

torch.set_num_threads(1)  # small 2-D batches: one thread is fastest on a shared CPU
ROOT = Path.cwd() if (Path.cwd() / "experiments").is_dir() else Path.cwd().parent
sys.path.insert(0, str(ROOT / "experiments"))  # the figure scripts' compute/plot functions
from _lib import cached_compute  # same cache as `python experiments/figN.py --quick`

pd.set_option("display.width", 160, "display.max_columns", 30)"""),
    ("md", """\
## 1. The toy world and one sampled trajectory

`toy_world()` holds the exact class-A tree (1016 Gaussian components), the unconditional
A∪B tree, and three learned denoisers: the main class-A model, the autoguidance guide
(smaller, less trained) and the CFG guide (unconditional). We sample with EDM's Heun on
the 16-step EDM grid (σ_max = 5), with ERK-Guid at the theory value `w_stiff = 1/√6`."""),
    ("code", """\
world = toy_world(torch.float64)
sigmas = world.sigmas(16)
x_init = world.initial_state(256, dtype=torch.float64)   # exact samples of p_σmax, per-sample seeds
traj = sample(world.main, x_init, sigmas, w_stiff=W_STIFF_THEORY, w_con=0.3)
plain = sample(world.main, x_init, sigmas)
print(f"NFE with ERK-Guid {traj.nfe}, plain Heun {plain.nfe}  (2N − 1 = {2 * 16 - 1})")
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharex=True, sharey=True)
for ax, (name, t) in zip(axes, [("plain Heun", plain), ("ERK-Guid (w = 1/√6)", traj)]):
    ax.scatter(*t.states[-1].T, s=3)
    ax.set_title(name)
plt.show()"""),
    ("md", """\
## 2. `stiffkit.analyze(trajectory)`

One row per step and sample: the cheap pair estimate `rho_hat` (no evaluations), the
reference `|λ_max|` of `∂f/∂x` (dense Jacobian from JVPs here: the state is 2-D), `h·|λ|`,
the stiffness indicator `h·ρ̂ / 2` (Heun's real stability boundary is 2), the LTE of each
step against a converged reference, and the cosines with `v₁`; the sampler's own ERK-Guid
diagnostics ride along."""),
    ("code", """\
report = stiffkit.analyze(traj, reference="dense", symmetric=True, lte_method="rk4",
                          samples=slice(0, 64))
display(report.head())
pd.Series(stiffkit.analysis.columns.COLUMNS, name="meaning").to_frame()"""),
    ("code", """\
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
stiffkit.plotting.plot_stiffness(report, ax=axes[0])
axes[0].invert_xaxis()
stiffkit.plotting.plot_estimate_vs_reference(report, ax=axes[1])
plt.tight_layout()
plt.show()
print(report.groupby("step")[["h", "lambda_max", "rho_hat", "h_lambda", "stiffness_indicator"]]
      .median().round(3))"""),
    ("md", """\
## 3. Fig. 1 — where the tree is stiff

Samples of `p_σ` coloured by `|λ_max|` for the exact and the learned drift; the drift
across a thick and a thin branch; and the LTE / ERK solution difference in eigenvector axes."""),
    ("code", _figure_cell("fig1", "df1")),
    ("md", """\
## 4. Fig. 2 — alignment with the dominant eigenvector across stiffness

Along plain-Heun trajectories: `|cos|` with `v₁` of the LTE, of the ERK solution difference
`Δx`, and of ERK-Guid's direction `Δf` against the CFG and autoguidance directions."""),
    ("code", _figure_cell("fig2", "df2")),
    ("md", """\
## 5. Fig. 3 — how good is the free estimate?

`ρ̂` against the JVP-based `|λ₁|` at the same point, and the alignment of `Δf` vs `Δx`."""),
    ("code", _figure_cell("fig3", "df3")),
    ("md", """\
## 6. Fig. 4 — the hyperparameter grid, and the synthetic results table

Quality (sliced Wasserstein to exact samples, endpoint error against a converged solve of the
same ODE, NLL) as `w_con` varies, one curve per `w_stiff`; then Heun / ERK-Guid / CFG / AG
(± ERK-Guid, and the oracle eigenpair) at 8, 16, 32 steps."""),
    ("code", _figure_cell("fig4", "df4")),
    ("code", _figure_cell("table1", "dft")),
    ("md", """\
## 7. What the full runs say — and how it compares with the paper

The numbers below are read from the committed full-run outputs (`figures/*.csv`, produced by
`python experiments/figN.py` and `python experiments/table1.py`)."""),
    ("code", """\
full = pd.read_csv(ROOT / "figures" / "table1.csv")
cols = ["num_steps", "method", "w_stiff", "w_con", "nfe", "endpoint_error_mean", "sw", "nll_mean",
        "precision", "recall"]
full[cols].round(4)"""),
    ("md", """\
**Matches the paper (measured on the full runs, seed 0):**

* *The LTE and the ERK solution difference line up with `v₁` where the drift is stiff*
  (Fig. 2a/b): mean `|cos(LTE, v₁)|` rises from ≈ 0.58–0.60 at `|λ₁| ≈ 0.3` to 0.93–0.94 at
  `|λ₁| ≈ 100`; `|cos(Δx, v₁)|` from ≈ 0.58 to 0.88–0.93 (learned and exact models alike).
* *ERK-Guid's direction aligns with `v₁` better than the guidance directions* (Fig. 2c): for
  `|λ₁| ≥ 10`, `Δf` 0.94 vs CFG 0.74 and autoguidance 0.72 on the learned model.
* *Proposition 1's estimate is cheap and accurate* (Fig. 3a): `ρ̂` against the JVP-based
  `|λ₁|` has log–log correlation 0.964 (learned; 0.971 exact), slope 0.92, and stays below
  `|λ₁|` on 97.5 % of points (99.1 % exact) — an underestimate, as Proposition 1 says.
* *The drift difference is the better direction* (Fig. 3b): `|cos(Δf, v₁)|` ≥ `|cos(Δx, v₁)|` on
  99 % of rows; for `|λ₁| ≥ 10`, 0.94 vs 0.74.
* *ERK-Guid is free*: its NFE equals Heun's (2N − 1) in every configuration (counted), and at
  **8 steps** the paper's setting (`w_stiff` 0.5, `w_con` 0.1) improves both the endpoint error
  (49.1 → 36.1 ×10⁻³) and the sliced Wasserstein distance (37.5 → 19.2 ×10⁻³).

**Does not hold here (said plainly):**

* *At 16 and 32 steps the paper's `w_stiff` makes things worse on this toy*: endpoint error
  10.1 → 20.8 ×10⁻³ (16 steps, 0.75/0.3) and 2.29 → 9.07 ×10⁻³ (32 steps, 1.0/0.5); the sliced
  Wasserstein distance does not improve beyond its confidence interval at any setting (Fig. 4).
  The mean NLL does fall — below the truth's own −1.35 for large `w_stiff` — which is
  over-contraction, not fidelity (recall and occupancy drop).
* *The theory value `w_stiff = 1/√6` is the one that helps*: endpoint error halves at every N
  (49.1 → 31.0, 10.1 → 5.0, 2.29 → 1.07 ×10⁻³) with SW unchanged within its interval — as the
  linear theory of docs/theory/erk_guid.md, eq. (8) predicts (it cancels Heun's leading LTE
  along `v̂`).
* *With CFG or autoguidance*, adding ERK-Guid at the paper's settings increases the endpoint
  error at 16/32 steps and lowers recall; the oracle eigenpair is no better than the cheap
  pair estimate (its larger `ρ` over-corrects more).
* *Alignment is not monotone in stiffness*: below `|λ₁| ≈ 10` the curves are flat near the
  random level (2/π) — the Jacobian is nearly isotropic there (`|λ₂/λ₁|` > 0.4), so `v₁` is
  ill-defined; ranked by `h·|λ|` instead the trend even reverses (Fig. 1c).
* *The learned ODE is much less stiff than the exact one on the thin branches* (Fig. 1a:
  median `|λ|` 11 vs 109 at depth 6, σ ≈ 0.005): the network smooths the tips. And on the
  EDM grid no step is stability-limited (`h·|λ|` ≤ ≈ 1.4 against Heun's boundary 2), so the
  "drift flips within one step" picture of the paper's Fig. 1 is milder here.

The sampler-time overhead of ERK-Guid is measured in `benchmarks/` (see the README)."""),
]


def build() -> nbformat.NotebookNode:
    """Return the notebook (no outputs)."""
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> Path:
    """Write the notebook atomically and return its path."""
    nb = build()
    nbformat.validate(nb)
    return atomic_write(OUT, lambda tmp: nbformat.write(nb, tmp))


if __name__ == "__main__":
    print(main())
