"""Benchmarks 2 and 6: eigen-estimator accuracy vs cost, and how the cost scales with d.

On the tree (d = 2) and random d-dimensional mixtures (d ∈ {16, 256, 4096}) at a noise
level where the drift is stiff, every estimator of the dominant |λ| of ∂f/∂x is compared
with the dense truth (the mixture's closed-form Jacobian + ``eigvalsh``):

* ``pair`` — Proposition 1's ρ̂ from one Heun step's Euler/Heun pair (0 extra evaluations;
  the time is the estimator alone, the step is what the sampler pays anyway);
* ``power-k`` — k Jacobian–vector products of power iteration (forward-mode JVPs);
* ``arpack`` — Lanczos (``eigsh``) on a JVP ``LinearOperator``;
* ``dense`` — the full Jacobian by reverse-mode autodiff (d VJPs) + ``eigh``.

Outputs ``estimators.csv/.md`` and ``figures/scaling.png`` (wall time per sample vs d,
log–log, with fitted slopes). Run ``python benchmarks/bench_estimators.py`` (``--quick``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import stiffkit
from stiffkit.benchmarking import to_markdown
from stiffkit.diffusion.mixtures import random_gmm, tree_gmm
from stiffkit.io import atomic_write, save_figure, save_frame

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_case(name, gmm, sigma, batch, power_ks, dense_max_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = gmm.sample(batch, sigma, generator=g)
    d = x.shape[1]
    f = lambda t, y: gmm.drift(y, t)  # noqa: E731  (t is σ)
    s = torch.tensor(sigma, dtype=torch.float64)
    J = gmm.drift_jacobian(x, sigma)
    truth = torch.linalg.eigvalsh(J).abs().max(dim=1).values  # [batch]
    rows = []

    def add(method, est, seconds, products):
        rel = ((est - truth).abs() / truth).numpy()
        rows.append(dict(case=name, d=d, method=method, median_rel_error=float(np.median(rel)),
                         max_rel_error=float(rel.max()), seconds_per_sample=seconds / batch,
                         products_per_sample=products))

    # Pair estimate from one Heun step σ → σ(1 − 0.05): the sampler's own evaluations.
    h = 0.05 * sigma
    f0 = f(s, x)
    x_E = x - h * f0
    f_E = f(s - h, x_E)
    x_H = x - 0.5 * h * (f0 + f_E)
    f_H = f(s - h, x_H)
    rho, sec = _timed(lambda: stiffkit.pair_stiffness(x_H, f_H, x_E, f_E))
    # The pair lives at σ − h: compare with the truth there.
    truth_pair = torch.linalg.eigvalsh(gmm.drift_jacobian(x_H, sigma - h)).abs().max(dim=1).values
    rel = ((rho - truth_pair).abs() / truth_pair).numpy()
    rows.append(dict(case=name, d=d, method="pair", median_rel_error=float(np.median(rel)),
                     max_rel_error=float(rel.max()), seconds_per_sample=sec / batch, products_per_sample=0))

    v0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=x.dtype)
    for k in power_ks:
        op = stiffkit.jvp_operator(f, s, x)
        res, sec = _timed(lambda: stiffkit.power_iteration(op, v0, max_iter=k, tol=0.0))
        add(f"power-{k}", res.value.abs(), sec, k)
    res, sec = _timed(lambda: stiffkit.dominant_eig(f, s, x, method="arpack", symmetric=True))
    add("arpack", res.value.abs(), sec, res.num_products / batch)
    if d <= dense_max_dim:
        res, sec = _timed(lambda: stiffkit.dominant_eig(f, s, x, method="dense", symmetric=True))
        add("dense", res.value.abs(), sec, d)
    return rows


def plot_scaling(df, path):
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[df.method.isin(["pair", "power-10", "power-50", "arpack", "dense"])]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sns.lineplot(data=sub, x="d", y="seconds_per_sample", hue="method", marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    labels = []
    for method, grp in sub.groupby("method"):
        grp = grp[grp.d >= 16]
        if len(grp) >= 2:
            slope = np.polyfit(np.log(grp.d), np.log(grp.seconds_per_sample), 1)[0]
            labels.append(f"{method}: slope {slope:.2f}")
    ax.set_title("Estimator wall time per sample vs dimension\n" + ", ".join(labels), fontsize=8)
    ax.set_xlabel("state dimension d")
    ax.set_ylabel("seconds per sample")
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--figure", type=Path, default=ROOT / "figures" / "scaling.png")
    args = parser.parse_args(argv)
    rows = []
    if args.quick:
        cases = [("tree-A", tree_gmm("A"), 0.05, 16), ("random", random_gmm(16, 4, min_std=0.05), 0.05, 8)]
        ks, dense_max = (1, 5, 20), 64
    else:
        cases = [("tree-A", tree_gmm("A"), 0.05, 256)] + [
            (f"random-d{d}", random_gmm(d, 8, min_std=0.05, seed=d), 0.05, b)
            for d, b in ((16, 128), (256, 32), (4096, 4))
        ]
        ks, dense_max = (1, 2, 5, 10, 20, 50), 256
    for name, gmm, sigma, batch in cases:
        rows += run_case(name, gmm, sigma, batch, ks, dense_max)
        print(f"{name}: done", flush=True)
    df = pd.DataFrame(rows)
    save_frame(df, args.out / "estimators.csv")
    md = "### Eigen-estimators: relative error of |λ_max| vs dense truth, and cost\n\n" + to_markdown(df) + "\n"
    atomic_write(args.out / "estimators.md", lambda tmp: Path(tmp).write_text(md))
    if not args.quick:
        plot_scaling(df, args.figure)
    print(md)


if __name__ == "__main__":
    main()
