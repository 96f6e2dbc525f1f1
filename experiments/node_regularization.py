"""Neural-ODE training with the solver's own regularisers: vanilla vs ERNODE vs SRNODE.

Pal, Ma, Shah & Rackauckas (ICML 2021) add ``λ·R_E`` (error integral, ERNODE) or ``λ·R_S``
(stiffness integral, SRNODE) to the loss, both computed by the adaptive solve at no extra
evaluation (:func:`stiffkit.regularized_solve`). On MNIST they report test NFE 303.6 → 177
(ERNODE, accuracy 97.6 % → 97.3 %), 259 (SRNODE), and 80 for TayNODE at 2.2× the training time.
Here, two small counterparts, each trained with adaptive DOPRI5 at ``train_tol``:

* **digits** — ``sklearn.datasets.load_digits`` (8×8 images, 10 classes): a linear-tanh encoder
  to ``dim`` features, an ODE block ``dz/dt = MLP([z, t])`` on ``[0, 1]``, a linear head;
  cross-entropy;
* **spirals** — regression of a continuous-time flow: trajectories of the cubic spiral
  ``dx/dt = (x∘x∘x) A`` (torchdiffeq's demo system) from random starts on an annulus, observed
  at ``spiral_points`` times on ``[0, spiral_t]``; a tanh MLP drift, mean squared error.

For every task, method (vanilla, ERNODE and SRNODE at two weights each) and seed: test accuracy
(digits) or test MSE (spirals), test NFE of one adaptive DOPRI5 solve of the test set at
``test_tol`` (per-sample error norm), the median training time per step, and the regulariser's
own cost — the median time of a training step with the regulariser over one without it, on the
same model and batch, interleaved (same solver, same steps). Intervals are 95 % Student-t over
seeds. Along training: test NFE and test ``Σρ̂h``. After training, :func:`stiffkit.analyze`
(dense Jacobians) on the seed-0 models' test trajectories says where in time each is stiff.

    python experiments/node_regularization.py [--quick] [--seed S] [--out DIR] [--set key=value]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from _lib import run_experiment
from scipy import stats

import stiffkit
from stiffkit._utils import progress

NAME = "node_regularization"
FULL = dict(
    seeds=3, er_weights=[1.0, 10.0], sr_weights=[0.1, 1.0], train_tol=1e-3, test_tol=1e-4,
    lr=0.01, batch=128, digits_epochs=40, digits_train=1347, dim=16, width=256,
    spiral_epochs=60, spiral_train=256, spiral_test=128, spiral_points=10, spiral_t=1.0,
    spiral_batch=32, eval_every=5, timing_repeats=21, analyze_samples=8, time_bins=5,
)
QUICK = dict(FULL, seeds=1, er_weights=[1.0], sr_weights=[0.1], digits_epochs=2,
             digits_train=256, width=64, spiral_epochs=2, spiral_train=64, spiral_test=32,
             eval_every=1, timing_repeats=1, analyze_samples=2, time_bins=2)
#: The cubic spiral's matrix (torchdiffeq's ``ode_demo.py`` system).
SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))


class Drift(torch.nn.Module):
    """``f(t, z) = W₂ tanh(W₁ [z, t] + b₁) + b₂``, batched."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, t.expand(z.shape[0], 1)], dim=1))


class Task:
    """One learning problem: data, model parts, loss and metric."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name, gen = name, torch.Generator().manual_seed(int(config["seed"]))
        if name == "digits":
            from sklearn.datasets import load_digits

            x, y = load_digits(return_X_y=True)
            perm = torch.randperm(len(y), generator=gen)
            x = torch.as_tensor(x, dtype=torch.float32)[perm] / 16.0
            y = torch.as_tensor(y)[perm]
            n_train = min(int(config["digits_train"]), 1347)
            self.train, self.test = (x[:n_train], y[:n_train]), (x[1347:], y[1347:])
            self.times = torch.tensor([0.0, 1.0])
            self.dim, self.epochs, self.batch = int(config["dim"]), config["digits_epochs"], \
                int(config["batch"])
        else:
            n_tr, n_te = int(config["spiral_train"]), int(config["spiral_test"])
            r = 1.2 + 0.6 * torch.rand(n_tr + n_te, generator=gen, dtype=torch.float64)
            phi = 2 * np.pi * torch.rand(n_tr + n_te, generator=gen, dtype=torch.float64)
            x0 = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
            self.times = torch.linspace(0.0, float(config["spiral_t"]),
                                        int(config["spiral_points"]))
            a = torch.tensor(SPIRAL_A, dtype=torch.float64)
            path = stiffkit.solve_adaptive(lambda t, x: (x**3) @ a, x0, (0.0, self.times[-1]),
                                           "dopri5", rtol=1e-10, atol=1e-10,
                                           t_eval=self.times.double()).x.float()
            x0 = x0.float()
            self.train = (x0[:n_tr], path[:, :n_tr])
            self.test = (x0[n_tr:], path[:, n_tr:])
            self.dim, self.epochs, self.batch = 2, config["spiral_epochs"], \
                int(config["spiral_batch"])

    def build(self, config: dict[str, Any], seed: int) -> torch.nn.ModuleDict:
        torch.manual_seed(seed)
        parts = {"drift": Drift(self.dim, int(config["width"]))}
        if self.name == "digits":
            parts["enc"] = torch.nn.Sequential(torch.nn.Linear(64, self.dim), torch.nn.Tanh())
            parts["head"] = torch.nn.Linear(self.dim, 10)
        return torch.nn.ModuleDict(parts)

    def start(self, model, x: torch.Tensor) -> torch.Tensor:
        return model["enc"](x) if self.name == "digits" else x

    def loss(self, model, path: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.name == "digits":
            return torch.nn.functional.cross_entropy(model["head"](path[-1]), y)
        return (path - y).pow(2).mean()

    def metric(self, model, path: torch.Tensor, y: torch.Tensor) -> float:
        if self.name == "digits":
            return float((model["head"](path[-1]).argmax(1) == y).float().mean())
        return float((path - y).pow(2).mean())

    def batch_of(self, data, idx):
        x, y = data
        return x[idx], (y[idx] if self.name == "digits" else y[:, idx])


def step_loss(task: Task, model, xb, yb, method: str, weight: float, tol: float):
    """Return the training loss and the solve's NFE (vanilla: the plain adaptive solve)."""
    z0 = task.start(model, xb)
    if method == "vanilla":
        sol = stiffkit.solve_adaptive(model["drift"], z0, (0.0, float(task.times[-1])), "dopri5",
                                      rtol=tol, atol=tol, t_eval=task.times, on_stiff="ignore")
        return task.loss(model, sol.x, yb), sol.nfe
    sol = stiffkit.regularized_solve(model["drift"], z0, task.times, "dopri5", rtol=tol,
                                     atol=tol, stiffness=method == "srnode")
    reg = sol.error_integral if method == "ernode" else sol.stiffness_integral
    return task.loss(model, sol.x, yb) + weight * reg.mean(), sol.nfe


@torch.no_grad()
def evaluate(task: Task, model, tol: float) -> dict[str, float]:
    """Test metric (on the observation times), and NFE, mean Σρ̂h and mean Σ E h of one
    adaptive DOPRI5 solve of the test set from 0 to the last time at `tol` (the model's own
    cost, not the observation grid's)."""
    x, y = task.test
    z0 = task.start(model, x)
    ends = torch.tensor([0.0, float(task.times[-1])])
    sol = stiffkit.regularized_solve(model["drift"], z0, ends, "dopri5", rtol=tol, atol=tol)
    path = sol.x if len(task.times) == 2 else stiffkit.solve_adaptive(
        model["drift"], z0, (0.0, float(task.times[-1])), "dopri5", rtol=tol, atol=tol,
        t_eval=task.times, on_stiff="ignore").x
    return dict(metric=task.metric(model, path, y), test_nfe=sol.nfe,
                test_rs=float(sol.stiffness_integral.mean()),
                test_re=float(sol.error_integral.mean()))


def regulariser_cost(task, model, method, weight, config) -> float:
    """Median over interleaved rounds of (step with the regulariser) / (step without it),
    on the same model and batch (the same solver and steps)."""
    if method == "vanilla":
        return float("nan")
    xb, yb = task.batch_of(task.train, torch.arange(min(task.batch, len(task.train[0]))))
    ratios = []
    for _ in range(int(config["timing_repeats"])):
        seconds = []
        for m in ("vanilla", method):
            start = time.perf_counter()
            loss, _ = step_loss(task, model, xb, yb, m, weight, config["train_tol"])
            loss.backward()
            seconds.append(time.perf_counter() - start)
            model.zero_grad()
        ratios.append(seconds[1] / seconds[0])
    return float(np.median(ratios))


def train(task: Task, method: str, weight: float, seed: int, config: dict[str, Any]):
    """Train one model; return its final row, its curve rows and the model."""
    model = task.build(config, seed)
    opt = torch.optim.Adam(model.parameters(), lr=float(config["lr"]))
    gen = torch.Generator().manual_seed(seed)
    n, step_s, nfes, curve = len(task.train[0]), [], [], []
    for epoch in range(int(task.epochs)):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, task.batch):
            xb, yb = task.batch_of(task.train, perm[i:i + task.batch])
            start = time.perf_counter()
            loss, nfe = step_loss(task, model, xb, yb, method, weight, config["train_tol"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step_s.append(time.perf_counter() - start)
            nfes.append(nfe)
        if (epoch + 1) % int(config["eval_every"]) == 0 or epoch + 1 == task.epochs:
            curve.append(dict(kind="curve", epoch=epoch + 1, **evaluate(task, model,
                                                                        config["test_tol"])))
    final = dict(kind="run", epoch=int(task.epochs), **evaluate(task, model, config["test_tol"]),
                 train_nfe=float(np.mean(nfes)), step_seconds=float(np.median(step_s)),
                 cost_ratio_seconds=regulariser_cost(task, model, method, weight, config))
    return final, curve, model


def where_stiff(task: Task, model, config: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`stiffkit.analyze` on test trajectories, binned over time."""
    x = task.test[0][: int(config["analyze_samples"])]
    model.requires_grad_(False)  # analyze differentiates in x only; states without a graph
    with torch.no_grad():
        sol = stiffkit.solve_adaptive(model["drift"], task.start(model, x),
                                      (0.0, float(task.times[-1])), "dopri5",
                                      rtol=config["test_tol"], atol=config["test_tol"],
                                      on_stiff="ignore")
    df = stiffkit.analyze(sol.trajectory, reference="dense", lte=False)
    edges = np.linspace(0.0, float(task.times[-1]), int(config["time_bins"]) + 1)
    df["bin"] = np.clip(np.searchsorted(edges, df["t"], side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b, part in df.groupby("bin"):
        rows.append(dict(kind="analyze", t_lo=edges[b], t_hi=edges[b + 1], count=len(part),
                         lambda_max=float(part["lambda_max"].mean()),
                         lambda_real=float(part["lambda_real"].mean()),
                         rho_hat=float(part["rho_hat"].mean()),
                         h_mean=float(part["h"].mean()),
                         h_lambda=float(part["h_lambda"].mean()),
                         stiff_share=float(part["stiff"].astype(float).mean())))
    return rows


def methods(config: dict[str, Any]) -> list[tuple[str, float]]:
    return ([("vanilla", 0.0)] + [("ernode", float(w)) for w in config["er_weights"]]
            + [("srnode", float(w)) for w in config["sr_weights"]])


def compute(config: dict[str, Any]) -> pd.DataFrame:
    """Train every task × method × seed; rows of kinds run, curve and analyze."""
    plan = [(t, m, w, s) for t in ("digits", "spirals") for m, w in methods(config)
            for s in range(int(config["seeds"]))]
    tasks = {t: Task(t, config) for t in ("digits", "spirals")}
    rows = []
    for task_name, method, weight, s in progress(plan, enabled=True, desc=NAME, unit="model"):
        task = tasks[task_name]
        seed = 1000 * int(config["seed"]) + s
        final, curve, model = train(task, method, weight, seed, config)
        key = dict(task=task_name, method=method, weight=weight, seed=s)
        rows += [dict(key, **final)] + [dict(key, **c) for c in curve]
        if s == 0:
            rows += [dict(key, **a) for a in where_stiff(task, model, config)]
    return pd.DataFrame(rows)


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval (NaN interval for one value)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Per task, method and weight: the metrics with intervals, and ratios to vanilla."""
    runs = df[df["kind"] == "run"]
    base = runs[runs["method"] == "vanilla"].set_index(["task", "seed"])
    out = []
    for (task, method, weight), part in runs.groupby(["task", "method", "weight"], sort=False):
        b = base.loc[[(task, s) for s in part["seed"]]]
        row = dict(task=task, method=method, weight=weight, seeds=len(part))
        for col, vals in (("metric", part["metric"]), ("test_nfe", part["test_nfe"]),
                          ("nfe_ratio", part["test_nfe"].to_numpy() / b["test_nfe"].to_numpy()),
                          ("metric_change", part["metric"].to_numpy() - b["metric"].to_numpy()),
                          ("step_seconds", part["step_seconds"]),
                          ("step_ratio", part["step_seconds"].to_numpy()
                           / b["step_seconds"].to_numpy()),
                          ("cost_ratio", part["cost_ratio_seconds"])):
            row[col], row[col + "_lo"], row[col + "_hi"] = mean_ci(vals)
        out.append(row)
    return pd.DataFrame(out)


def _fmt(r, col, scale=1.0, digits=3) -> str:
    m, lo, hi = (r[col] * scale, r[col + "_lo"] * scale, r[col + "_hi"] * scale)
    if not np.isfinite(m):
        return "–"
    ci = f" [{lo:.{digits}g}, {hi:.{digits}g}]" if np.isfinite(lo) else ""
    return f"{m:.{digits}g}{ci}"


def targets(tab: pd.DataFrame) -> list[str]:
    """The issue's targets on digits, met or missed by how much."""
    dig = tab[(tab["task"] == "digits") & (tab["method"] != "vanilla")]
    lines = []
    ok = dig[dig["metric_change"] >= -0.005]
    if len(ok):
        best = ok.loc[ok["nfe_ratio"].idxmin()]
        red = 1 - best["nfe_ratio"]
        lines.append(f"* NFE target (≥ 30 % fewer test NFE at ≤ 0.5 points lower accuracy): best "
                     f"{best['method']} λ = {best['weight']:g}, {100 * red:.1f} % fewer NFE, "
                     f"accuracy {100 * best['metric_change']:+.2f} points — "
                     + ("met" if red >= 0.3 else f"missed by {100 * (0.3 - red):.1f} points"))
    else:
        best = dig["metric_change"].max()
        lines.append(f"* NFE target: no regularised model within 0.5 accuracy points (best "
                     f"{100 * best:+.2f}) — missed")
    cost = dig["cost_ratio"].max()
    lines.append(f"* cost target (regulariser ≤ 10 % time per step, same solver and steps): "
                 f"worst {100 * (cost - 1):+.1f} % — " + ("met" if cost <= 1.1 else
                                                         f"missed by {100 * (cost - 1.1):.1f} %"))
    return lines


def markdown(df: pd.DataFrame, config: dict[str, Any]) -> str:
    tab = table(df)
    head = ("| task | method | λ | accuracy % / test MSE | test NFE | NFE ratio | Δ metric | "
            "time/step ratio | regulariser cost |\n|---|---|---|---|---|---|---|---|---|\n")
    body = ""
    for r in tab.itertuples():
        r = r._asdict()
        scale = 100.0 if r["task"] == "digits" else 1.0
        body += (f"| {r['task']} | {r['method']} | {r['weight']:g} | {_fmt(r, 'metric', scale)} "
                 f"| {_fmt(r, 'test_nfe')} | {_fmt(r, 'nfe_ratio')} | "
                 f"{_fmt(r, 'metric_change', scale, 2)} | {_fmt(r, 'step_ratio')} | "
                 f"{_fmt(r, 'cost_ratio')} |\n")
    return (f"**Neural ODEs: vanilla vs ERNODE vs SRNODE** ({config['seeds']} seeds, mean "
            f"[95 % t-interval]; train tol {config['train_tol']:g}, test NFE at "
            f"{config['test_tol']:g}, adaptive DOPRI5)\n\n" + head + body + "\n"
            + "\n".join(targets(tab)) + "\n\nPal et al. (ICML 2021), MNIST: NFE 303.6 → 177 "
            "(ERNODE, 97.6 % → 97.3 %), SRNODE 259, TayNODE 80 at 2.2× training time.\n")


def summarize(df: pd.DataFrame, config: dict[str, Any]) -> str:
    return "\n".join(targets(table(df)))


def _style(method: str, weight: float, config: dict[str, Any]) -> str:
    """Solid for vanilla and each regulariser's largest weight, dashed for the smaller."""
    weights = config["er_weights"] if method == "ernode" else config["sr_weights"]
    return "-" if method == "vanilla" or weight == max(weights) else "--"


def plot(df: pd.DataFrame, config: dict[str, Any]):
    """Test NFE and Σρ̂h over training (per task), and where the trained models are stiff."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False)
    colours = {"vanilla": "black", "ernode": "tab:blue", "srnode": "tab:orange"}
    curves, an = df[df["kind"] == "curve"], df[df["kind"] == "analyze"]
    for row, task in enumerate(("digits", "spirals")):
        for col, (y, title) in enumerate((("test_nfe", "test NFE"),
                                          ("test_rs", "test Σρ̂h (stiffness integral)"))):
            ax = axes[row, col]
            for (method, weight), part in curves[curves["task"] == task].groupby(
                    ["method", "weight"]):
                mean = part.groupby("epoch")[y].mean()
                ax.plot(mean.index, mean.to_numpy(), _style(method, weight, config),
                        color=colours[method], marker=".", label=f"{method} λ={weight:g}")
            ax.set(title=f"{task}: {title}", xlabel="epoch")
            ax.legend(fontsize=7)
        ax = axes[row, 2]
        for (method, weight), part in an[an["task"] == task].groupby(["method", "weight"]):
            ax.plot((part["t_lo"] + part["t_hi"]) / 2, part["lambda_max"],
                    _style(method, weight, config), marker="o", color=colours[method],
                    label=f"{method} λ={weight:g}")
        ax.set(title=f"{task}: |λ|max of ∂f/∂z along test trajectories (analyze)", xlabel="t",
               yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None) -> dict[str, Any]:
    return run_experiment(NAME, compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, markdown=markdown, description=__doc__,
                          argv=argv)


if __name__ == "__main__":
    main(sys.argv[1:])
