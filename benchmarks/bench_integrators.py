"""Benchmark 3: stiffkit's integrators against torchdiffeq on the same drift.

The drift is a small neural ODE (a tanh MLP, 2-D state, width 64, with a contracting linear
part), float64, batch 1k to 64k.

* **Fixed grid.** ``stiffkit.solve_fixed(f, x0, t, "heun_euler")`` — which also records the
  drifts, the embedded (Euler) solutions and the stage pair of every step — and its
  end-point-only form ``solve_fixed(..., record=False)`` against
  ``torchdiffeq.odeint(f, x0, t, method="heun2")`` on the same grid: the same result to
  roundoff (max abs difference printed; ``record=False`` bitwise equal to the recorded
  end point), evaluations counted, time ratios (target ≤ 1.0 for ``record=False``).
* **Adaptive.** ``stiffkit.solve_adaptive(..., "dopri5_shampine")`` against torchdiffeq's
  ``dopri5`` (the same tableau) at equal rtol = atol: evaluations counted by one wrapper,
  accepted steps, max error against a DOP853 solve at 1e-13, time ratio, and time per
  evaluation (the integrator's own overhead, independent of how many steps it chose).

All times are medians of interleaved runs in one process (``benchmarks/_harness.py.compare``).
Run ``python benchmarks/bench_integrators.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
import torchdiffeq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Run, parse_args, write_results  # noqa: E402
from _harness import compare  # noqa: E402

import stiffkit  # noqa: E402

T_END = 5.0  # adaptive interval [0, T_END]


def make_drift(dim: int = 2, width: int = 64, seed: int = 0):
    """A small tanh MLP drift (a neural ODE) with a contracting linear part."""
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(width, dim, generator=g, dtype=torch.float64) / dim**0.5
    W2 = torch.randn(dim, width, generator=g, dtype=torch.float64) / width**0.5

    def f(t, x):
        return torch.tanh(x @ W1.T + t) @ W2.T - 0.5 * x

    return f


class Counting:
    """Wrap a drift and count its calls."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, t, x):
        self.calls += 1
        return self.f(t, x)


def _counted(run_fn, f):
    counter = Counting(f)
    out = run_fn(counter)
    return out, counter.calls


def fixed_grid(batches, steps_list, repeats):
    f = make_drift()
    rows = []
    for batch in batches:
        x0 = torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for steps in steps_list:
            t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
            ours, nfe_ours = _counted(
                lambda g: stiffkit.solve_fixed(g, x0, t, "heun_euler").states, f)
            (final, nfe_final), nfe_counted = _counted(
                lambda g: stiffkit.solve_fixed(g, x0, t, "heun_euler", record=False), f)
            theirs, nfe_theirs = _counted(lambda g: torchdiffeq.odeint(g, x0, t, method="heun2"), f)
            timing = compare({
                "stiffkit": lambda: stiffkit.solve_fixed(f, x0, t, "heun_euler"),
                "stiffkit_final": lambda: stiffkit.solve_fixed(f, x0, t, "heun_euler",
                                                               record=False),
                "torchdiffeq": lambda: torchdiffeq.odeint(f, x0, t, method="heun2"),
            }, repeats=repeats, warmup=1 if repeats > 1 else 0, baseline="torchdiffeq")
            med = dict(zip(timing.name, timing.median_s))
            paired = dict(zip(timing.name, timing.paired_ratio))
            ratio, final_ratio = paired["stiffkit"], paired["stiffkit_final"]
            rows.append(dict(batch=batch, steps=steps,
                             max_abs_diff=float((ours - theirs).abs().max()),
                             final_vs_record_max_abs_diff=float((final - ours[-1]).abs().max()),
                             final_bitwise_equal=bool(torch.equal(final, ours[-1])),
                             stiffkit_nfe=nfe_ours, final_nfe=nfe_counted,
                             torchdiffeq_nfe=nfe_theirs,
                             stiffkit_s=med["stiffkit"], final_s=med["stiffkit_final"],
                             torchdiffeq_s=med["torchdiffeq"], ratio=ratio,
                             final_ratio=final_ratio,
                             verdict=("stiffkit faster or equal" if ratio <= 1.0
                                      else "stiffkit slower"),
                             final_verdict=("faster or equal" if final_ratio <= 1.0
                                            else "slower")))
            assert nfe_final == nfe_counted
            print(f"fixed batch {batch} steps {steps}: ratio {ratio:.3f}, record=False "
                  f"{final_ratio:.3f}", flush=True)
    return pd.DataFrame(rows)


def adaptive(batches, tols, repeats):
    f = make_drift()
    rows = []
    for batch in batches:
        x0 = torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([0.0, T_END], dtype=torch.float64)
        exact = stiffkit.solve_adaptive(f, x0, (0.0, T_END), "dop853", rtol=1e-13, atol=1e-13).x[-1]
        for tol in tols:
            ours, nfe_ours = _counted(lambda g: stiffkit.solve_adaptive(
                g, x0, (0.0, T_END), "dopri5_shampine", rtol=tol, atol=tol), f)
            theirs, nfe_theirs = _counted(lambda g: torchdiffeq.odeint(
                g, x0, t, rtol=tol, atol=tol, method="dopri5")[-1], f)
            rms, nfe_rms = _counted(lambda g: stiffkit.solve_adaptive(
                g, x0, (0.0, T_END), "dopri5_shampine", rtol=tol, atol=tol, norm="batch_rms",
                controller="torchdiffeq"), f)
            timing = compare({
                "stiffkit": lambda: stiffkit.solve_adaptive(f, x0, (0.0, T_END), "dopri5_shampine",
                                                            rtol=tol, atol=tol),
                "torchdiffeq": lambda: torchdiffeq.odeint(f, x0, t, rtol=tol, atol=tol,
                                                          method="dopri5"),
            }, repeats=repeats, warmup=1 if repeats > 1 else 0, baseline="torchdiffeq")
            med = dict(zip(timing.name, timing.median_s))
            ratio = float(timing.paired_ratio[timing.name == "stiffkit"].iloc[0])
            per_nfe = ratio * nfe_theirs / nfe_ours
            rows.append(dict(
                batch=batch, tol=tol, stiffkit_nfe=nfe_ours, torchdiffeq_nfe=nfe_theirs,
                stiffkit_steps=ours.num_accepted, stiffkit_rejected=ours.num_rejected,
                stiffkit_error=float((ours.x[-1] - exact).abs().max()),
                torchdiffeq_error=float((theirs - exact).abs().max()),
                stiffkit_s=med["stiffkit"], torchdiffeq_s=med["torchdiffeq"], ratio=ratio,
                per_nfe_ratio=per_nfe,
                verdict="stiffkit faster or equal" if ratio <= 1.0 else "stiffkit slower",
                batch_rms_nfe=nfe_rms, batch_rms_nfe_ratio=nfe_rms / nfe_theirs,
                batch_rms_error=float((rms.x[-1] - exact).abs().max()),
            ))
            print(f"adaptive batch {batch} tol {tol:g}: ratio {ratio:.3f}", flush=True)
    return pd.DataFrame(rows)


def main(argv=None):
    args = parse_args(__doc__, argv)
    run = Run("bench_integrators.py", args.quick)
    if args.quick:
        fixed = fixed_grid([256], [8], repeats=1)
        adapt = adaptive([256], [1e-6], repeats=1)
    else:
        fixed = fixed_grid([1_000, 16_000, 64_000], [8, 32], repeats=9)
        adapt = adaptive([1_000, 16_000], [1e-4, 1e-6, 1e-8], repeats=7)
    notes = """
* `ratio` = stiffkit / torchdiffeq (< 1: stiffkit faster): the median over interleaved rounds of
  the within-round time ratio; `*_s` are the medians, for context. `verdict` says which way each
  row went.
* Fixed grid: both take 2 evaluations per step and agree to roundoff (`max_abs_diff`).
  stiffkit additionally keeps the drift, the Euler (embedded) point and the stage pair of every
  step in its `Trajectory` — what the stiffness analyses need; `final_ratio` is
  `solve_fixed(..., record=False)` (the end point only, `final_bitwise_equal` to the recorded
  one) against torchdiffeq in the same rounds.
* Adaptive: the controllers differ by design, so equal tolerance is not equal work.
  stiffkit's error norm is the *largest per-sample* RMS (each sample meets the tolerance),
  torchdiffeq's is one RMS over the whole batch; stiffkit therefore takes more steps at a
  given tolerance and reaches a smaller error (`*_error`, max abs vs DOP853 at 1e-13). The
  integrators' own overhead is `per_nfe_ratio` (time per evaluation, stiffkit / torchdiffeq).
  `batch_rms_*`: the same solve with torchdiffeq's norm and controller
  (`norm="batch_rms", controller="torchdiffeq"`); `batch_rms_nfe_ratio` is its NFE over
  torchdiffeq's (target: within 2 %).
"""
    md = write_results(run, args.out, "integrators",
                       "stiffkit integrators vs torchdiffeq (float64 neural ODE)", [
        ("fixed", fixed, "Fixed-grid Heun: solve_fixed(heun_euler) vs odeint(heun2), same grid"),
        ("adaptive", adapt, "Adaptive DOPRI5: solve_adaptive(dopri5_shampine) vs odeint(dopri5), "
                            "equal rtol = atol"),
    ], notes=notes)
    print(md)


if __name__ == "__main__":
    main()
