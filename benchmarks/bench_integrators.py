"""Benchmark 3: stiffkit's integrators against torchdiffeq on the same drift.

* Fixed grid: ``stiffkit.solve_fixed(..., "heun_euler")`` (which also records drifts,
  embedded solutions and the stage pair) vs ``torchdiffeq.odeint(..., method="heun2")``
  on the same grid — same result to roundoff in float64, and the time ratio.
* Adaptive: ``stiffkit.solve_adaptive(..., "dopri5_shampine")`` vs torchdiffeq's
  ``dopri5`` (the same tableau) at equal rtol/atol: NFE, accepted steps, error, time.

Run ``python benchmarks/bench_integrators.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import torchdiffeq

import stiffkit
from stiffkit.benchmarking import compare, to_markdown
from stiffkit.io import atomic_write, save_frame

HERE = Path(__file__).resolve().parent


def make_drift(dim: int = 2, width: int = 64, seed: int = 0):
    """A small tanh MLP drift (a neural ODE) with a contracting linear part."""
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(width, dim, generator=g, dtype=torch.float64) / dim**0.5
    W2 = torch.randn(dim, width, generator=g, dtype=torch.float64) / width**0.5

    def f(t, x):
        return torch.tanh(x @ W1.T + t) @ W2.T - 0.5 * x

    return f


def fixed_grid(batches, steps_list, repeats):
    f = make_drift()
    rows = []
    for batch in batches:
        x0 = torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for steps in steps_list:
            t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
            ours = stiffkit.solve_fixed(f, x0, t, "heun_euler").states
            theirs = torchdiffeq.odeint(f, x0, t, method="heun2")
            diff = float((ours - theirs).abs().max())
            timing = compare(
                {
                    "stiffkit": lambda: stiffkit.solve_fixed(f, x0, t, "heun_euler"),
                    "torchdiffeq": lambda: torchdiffeq.odeint(f, x0, t, method="heun2"),
                },
                repeats=repeats,
            )
            med = dict(zip(timing.name, timing.median_s))
            rows.append(dict(batch=batch, steps=steps, max_abs_diff=diff,
                             stiffkit_s=med["stiffkit"], torchdiffeq_s=med["torchdiffeq"],
                             ratio=med["stiffkit"] / med["torchdiffeq"]))
    return pd.DataFrame(rows)


def adaptive(batches, tols, repeats):
    f = make_drift()
    rows = []
    for batch in batches:
        x0 = torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([0.0, 5.0], dtype=torch.float64)
        exact = stiffkit.solve_adaptive(f, x0, (0.0, 5.0), "dop853", rtol=1e-13, atol=1e-13).x[-1]
        for tol in tols:
            ours = stiffkit.solve_adaptive(f, x0, (0.0, 5.0), "dopri5_shampine", rtol=tol, atol=tol)
            counter = {"n": 0}

            def counted(tt, y):
                counter["n"] += 1
                return f(tt, y)

            theirs = torchdiffeq.odeint(counted, x0, t, rtol=tol, atol=tol, method="dopri5")[-1]
            timing = compare(
                {
                    "stiffkit": lambda: stiffkit.solve_adaptive(f, x0, (0.0, 5.0), "dopri5_shampine", rtol=tol, atol=tol),
                    "torchdiffeq": lambda: torchdiffeq.odeint(f, x0, t, rtol=tol, atol=tol, method="dopri5"),
                },
                repeats=repeats,
            )
            med = dict(zip(timing.name, timing.median_s))
            rows.append(dict(
                batch=batch, tol=tol,
                stiffkit_nfe=ours.nfe, torchdiffeq_nfe=counter["n"],
                stiffkit_steps=ours.num_accepted,
                stiffkit_error=float((ours.x[-1] - exact).abs().max()),
                torchdiffeq_error=float((theirs - exact).abs().max()),
                stiffkit_s=med["stiffkit"], torchdiffeq_s=med["torchdiffeq"],
                ratio=med["stiffkit"] / med["torchdiffeq"],
            ))
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.quick:
        fixed = fixed_grid([256], [8], repeats=2)
        adapt = adaptive([256], [1e-6], repeats=2)
    else:
        fixed = fixed_grid([1_000, 16_000, 64_000], [8, 32], repeats=7)
        adapt = adaptive([1_000, 16_000], [1e-4, 1e-6, 1e-8], repeats=5)
    save_frame(fixed, args.out / "integrators_fixed.csv")
    save_frame(adapt, args.out / "integrators_adaptive.csv")
    md = ("### Fixed-grid Heun: stiffkit vs torchdiffeq heun2 (float64)\n\n" + to_markdown(fixed)
          + "\n\n### Adaptive DOPRI5: stiffkit vs torchdiffeq dopri5 (same tableau, equal tol)\n\n"
          + to_markdown(adapt) + "\n")
    atomic_write(args.out / "integrators.md", lambda tmp: Path(tmp).write_text(md))
    print(md)


if __name__ == "__main__":
    main()
