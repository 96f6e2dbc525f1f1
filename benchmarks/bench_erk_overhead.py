"""Benchmark 1: what ERK-Guid costs on top of plain Heun at the same NFE.

Three samplers on the same start and grid, timed in alternation in one process:

* ``plain`` — EDM's Heun loop written out here (EDM2 ``edm_sampler`` without churn), the
  baseline every ratio divides by;
* ``heun`` — ``stiffkit.diffusion.sample_final(..., w_stiff=0)``, stiffkit's sampler with the
  correction off (bitwise equal to ``plain``, checked);
* ``erk`` — ``sample_final`` with ERK-Guid at the paper's settings for the step count
  (8: w_stiff 0.5 / w_con 0.1, 16: 0.75 / 0.3, 32: 1.0 / 0.5).

Models: the learned class-A energy MLP (``toy_world().main``, the learned ODE) at batch 1k to
64k, and the exact 1016-component tree mixture (``toy_world().exact``). The exact mixture
costs ~0.1 ms per point and evaluation on this machine, so it runs at batch 1k only (the
ratio does not depend on batch once the evaluation dominates). Steps 8 / 16 / 32
(NFE 15 / 31 / 63). Every denoiser call is counted by a wrapper: ERK-Guid must add none.

Memory: at the smallest step count of each batch (``sample_final`` keeps nothing per step, so
its memory does not depend on the steps), each sampler runs once more in a forked child
(``benchmarks/_harness.py.peak_memory`` with the child on one thread, see
``_common.peak_memory_1t``; median of 3 children) for its extra peak RSS; the table gives
``erk − plain`` and ``erk − heun`` in units of ``batch · dim · itemsize`` (one state's worth)
— O(batch · dim) means a small constant.

A second table splits the time: one denoiser evaluation, one ERK-Guid correction as
``sample_final``'s loop does it (the relative guard's coefficient from squared sums and the
add, no diagnostics), the same with ρ̂, the gate and ‖delta‖ (``sample`` or a callback,
``correction_diagnosed``) and the ρ̂ diagnostic that the recording ``w_stiff = 0`` path
computes instead, each timed back to back in a loop of ~20 ms; the predicted overhead over
plain Heun
``(N − 2) · t_correction / ((2N − 1) · t_eval)`` follows (the first Heun step has no pair and
the last step is Euler).

Run ``python benchmarks/bench_erk_overhead.py`` (``--quick`` for a smoke run; ``--profile``
adds a cProfile of the hot loop at batch 1k).
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Run, parse_args, peak_memory_1t, write_results  # noqa: E402
from _harness import compare  # noqa: E402

from stiffkit._utils import broadcast_per_sample, flat_norm, secant_ratio  # noqa: E402
from stiffkit.diffusion.erk import _pair_coefficient, erk_guid_correction  # noqa: E402
from stiffkit.diffusion.samplers import sample_final  # noqa: E402
from stiffkit.io import atomic_write  # noqa: E402
from stiffkit.paper.toy import toy_world  # noqa: E402

#: The paper's ERK-Guid settings (ImageNet-512, EDM2-S, no guidance), by number of steps.
PAPER_SETTINGS = {8: (0.5, 0.1), 16: (0.75, 0.3), 32: (1.0, 0.5)}
#: Settings for step counts the paper did not use (quick runs).
DEFAULT_SETTING = (1.0, 0.5)
#: Target wall-time ratio ERK-Guid / plain Heun on the learned model (paper: +0.6 % on images)
#: and the cheap MLP: ≤ 1.01 from batch 4k, ≤ 1.02 at 1k (issue 16; 1.03 before).
TARGET_RATIO = {1_000: 1.02}
TARGET_RATIO_LARGE = 1.01


def target_for(batch: int) -> float:
    """The erk/plain target at `batch`."""
    return TARGET_RATIO.get(batch, TARGET_RATIO_LARGE) if batch < 4_000 else TARGET_RATIO_LARGE


class CheapMLP(torch.nn.Module):
    """A cheap plain denoiser: 4 linear layers of width 64 (SiLU), EDM preconditioning.

    ``D(x; σ) = c_skip x + c_out · net([c_in x, log(σ)/4])`` with seeded random weights — not
    trained (what matters here is its cost, ~2× cheaper per point than the learned energy
    model, whose score needs a backward pass), so ERK-Guid's fixed per-step work is a larger
    fraction of a step.
    """

    def __init__(self, dim: int = 2, width: int = 64, sigma_data: float = 0.5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        sizes = [dim + 1, width, width, width, dim]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
        self.sigma_data = sigma_data

    @torch.no_grad()
    def forward(self, x, sigma):
        var = sigma**2 + self.sigma_data**2
        h = torch.cat([x * torch.rsqrt(var), (torch.log(sigma) / 4).expand(x.shape[0], 1)], 1)
        for i, layer in enumerate(self.layers):
            h = layer(torch.nn.functional.silu(h) if i else h)
        return self.sigma_data**2 / var * x + sigma * self.sigma_data * torch.rsqrt(var) * h


class Counting:
    """Wrap a denoiser and count its calls and the points it evaluated."""

    def __init__(self, denoiser):
        self.denoiser, self.calls, self.points = denoiser, 0, 0

    def __call__(self, x, sigma):
        self.calls += 1
        self.points += x.shape[0]
        return self.denoiser(x, sigma)


def plain_heun(denoiser, x, sigmas):
    """EDM's Heun sampler written out (EDM2 ``edm_sampler``, no churn); last step Euler."""
    levels = list(sigmas.to(x.dtype))  # 0-d tensors of the state's dtype, as the sampler passes
    for t_cur, t_next in zip(levels[:-1], levels[1:]):
        d_cur = (x - denoiser(x, t_cur)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if float(t_next) > 0:
            d_prime = (x_next - denoiser(x_next, t_next)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


def candidates(denoiser, x0, sigmas, w_stiff, w_con):
    return {
        "plain": lambda: plain_heun(denoiser, x0, sigmas),
        "heun": lambda: sample_final(denoiser, x0, sigmas, w_stiff=0.0)[0],
        "erk": lambda: sample_final(denoiser, x0, sigmas, w_stiff=w_stiff, w_con=w_con)[0],
    }


def count_calls(denoiser, x0, sigmas, w_stiff, w_con):
    """Run each sampler once through a counting wrapper.

    Returns ``{name: (calls, points)}`` and the largest difference between ``plain`` and
    ``heun`` (0: bitwise equal).
    """
    counter = Counting(denoiser)
    out, results = {}, {}
    for name, fn in candidates(counter, x0, sigmas, w_stiff, w_con).items():
        counter.calls = counter.points = 0
        results[name] = fn()
        out[name] = (counter.calls, counter.points)
    diff = float((results["plain"] - results["heun"]).abs().max())
    return out, diff


def extra_peak(fn, forks: int) -> float:
    """Median over `forks` forked children of the extra peak RSS (bytes) of `fn`."""
    return statistics.median(peak_memory_1t(fn) for _ in range(forks))


def overhead_rows(model, denoiser, x0, steps_list, repeats, forks):
    rows = []
    batch, dim, itemsize = x0.shape[0], math.prod(x0.shape[1:]), x0.element_size()
    unit = batch * dim * itemsize
    for steps in steps_list:
        sigmas = toy_world().sigmas(steps)
        w_stiff, w_con = PAPER_SETTINGS.get(steps, DEFAULT_SETTING)
        calls, diff = count_calls(denoiser, x0, sigmas, w_stiff, w_con)  # also the warm-up round
        cands = candidates(denoiser, x0, sigmas, w_stiff, w_con)
        timing = compare(cands, repeats=repeats, warmup=0, baseline="plain")
        med = dict(zip(timing.name, timing.median_s))
        best = dict(zip(timing.name, timing.min_s))
        paired = dict(zip(timing.name, timing.paired_ratio))
        paired_iqr = dict(zip(timing.name, timing.paired_iqr))
        row = dict(model=model, batch=batch, steps=steps, nfe_plain=calls["plain"][0],
                   nfe_erk=calls["erk"][0], extra_nfe=calls["erk"][0] - calls["plain"][0],
                   extra_points=calls["erk"][1] - calls["plain"][1],
                   heun_vs_plain_max_abs_diff=diff,
                   plain_s=med["plain"], heun_s=med["heun"], erk_s=med["erk"],
                   erk_vs_plain=paired["erk"], erk_vs_plain_iqr=paired_iqr["erk"],
                   erk_vs_heun=paired["erk"] / paired["heun"],
                   erk_vs_plain_medians=med["erk"] / med["plain"],
                   erk_vs_plain_min=best["erk"] / best["plain"],
                   heun_vs_plain=paired["heun"])
        row["target"] = target_for(batch) if model != "exact" else float("nan")
        row["meets_target"] = (bool(row["erk_vs_plain"] <= row["target"]) if model != "exact"
                               else "n/a")
        if forks and steps == min(steps_list):  # sample_final's memory does not grow with steps
            peaks = {name: extra_peak(fn, forks) for name, fn in cands.items()}
            row.update(plain_peak_MB=peaks["plain"] / 2**20, erk_peak_MB=peaks["erk"] / 2**20,
                       erk_minus_plain_units=(peaks["erk"] - peaks["plain"]) / unit,
                       erk_minus_heun_units=(peaks["erk"] - peaks["heun"]) / unit)
        rows.append(row)
        print(f"{model} batch {batch} steps {steps}: erk/plain {row['erk_vs_plain']:.3f}",
              flush=True)
    return rows


def split_rows(denoiser, batches, repeats, model):
    """Time one evaluation, one correction, one ρ̂ diagnostic (interleaved) per batch."""
    rows = []
    world = toy_world()
    for batch in batches:
        x = world.initial_state(torch.arange(batch))
        g = torch.Generator().manual_seed(0)
        f, dx, df = (torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(3))
        s, h = torch.tensor(1.0, dtype=x.dtype), torch.tensor(0.1, dtype=x.dtype)

        def correction():  # what sample_final's loop does: the coefficient and the add
            coef = _pair_coefficient(f, h, dx, df, w_stiff=1.0, w_con=0.5, sign=-1.0,
                                     state=x).coef
            return x + broadcast_per_sample(coef, df) * df

        def diagnosed():  # with ρ̂, the gate and ‖delta‖ (sample(), or a callback)
            corr = erk_guid_correction(f, h, w_stiff=1.0, w_con=0.5, dx=dx, df=df, sign=-1.0,
                                       eps=None, state=x)
            return x + corr.delta, corr.delta_norm

        parts = {
            "eval": lambda: denoiser(x, s),
            "correction": correction,
            "correction_diagnosed": diagnosed,
            "rho_diagnostic": lambda: secant_ratio(df, dx, None, scale=flat_norm(x)),
        }
        # Each timed call loops its part `reps[name]` times (~20 ms in all): back to back, as in
        # the sampler's loop. A lone sub-millisecond call right after compare()'s gc.collect()
        # runs on cold caches and measured ~2.5x slower than in the loop.
        reps = {name: _loop_count(fn) for name, fn in parts.items()}
        timing = compare({name: (lambda fn=fn, k=reps[name]: [fn() for _ in range(k)])
                          for name, fn in parts.items()},
                         repeats=repeats, warmup=2, baseline="eval")
        timing["median_s"] = timing.median_s / timing.name.map(reps)
        med = dict(zip(timing.name, timing.median_s))
        row = dict(model=model, batch=batch, eval_us=1e6 * med["eval"],
                   correction_us=1e6 * med["correction"],
                   correction_diagnosed_us=1e6 * med["correction_diagnosed"],
                   rho_diagnostic_us=1e6 * med["rho_diagnostic"])
        for steps in (8, 16, 32):
            row[f"predicted_overhead_{steps}"] = ((steps - 2) * med["correction"]
                                                  / ((2 * steps - 1) * med["eval"]))
        rows.append(row)
    return rows


def _loop_count(fn, target_s: float = 0.02) -> int:
    """How many back-to-back calls of `fn` take about `target_s` (at least 1)."""
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1, round(target_s / max(time.perf_counter() - t0, 1e-7)))


def profile_hot_loop(denoiser, batch=1_000, steps=16) -> str:
    """cProfile of ``sample_final`` with ERK-Guid (the sampler's ``_integrate``), top by own
    time."""
    world = toy_world()
    x0, sigmas = world.initial_state(torch.arange(batch)), world.sigmas(steps)
    w_stiff, w_con = PAPER_SETTINGS[steps]
    out = io.StringIO()
    for label, ws in (("erk", w_stiff), ("heun (w_stiff=0)", 0.0)):
        sample_final(denoiser, x0, sigmas, w_stiff=ws, w_con=w_con)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20):
            sample_final(denoiser, x0, sigmas, w_stiff=ws, w_con=w_con)
        prof.disable()
        stats = pstats.Stats(prof, stream=out)
        cum = {func: ct for (_, _, func), (_, _, _, ct, _) in stats.stats.items()}
        share = {name: cum.get(name, 0.0) / cum["_integrate"] for name in
                 ("evaluate", "_pair_coefficient", "heun_step")}
        out.write(f"\n## {label}: batch {batch}, {steps} steps, 20 runs\n"
                  + "share of _integrate's cumulative time: "
                  + ", ".join(f"{k} {100 * v:.2f} %" for k, v in share.items()) + "\n")
        stats.sort_stats("tottime").print_stats(18)
    return out.getvalue()


def main(argv=None):
    args = parse_args(__doc__, argv, extra=lambda p: p.add_argument(
        "--profile", action="store_true", help="also write a cProfile of the hot loop"))
    run = Run("bench_erk_overhead.py", args.quick)
    world = toy_world()
    if args.quick:  # (batch, steps, timed rounds, forked children for memory)
        learned, exact, mlp = [(256, [4], 1, 1)], [(32, [4], 1, 1)], [(256, [4], 1, 1)]
        split_batches, split_repeats = [256], 4
    else:
        steps = [8, 16, 32]
        learned = [(1_000, steps, 41, 3), (4_000, steps, 21, 3), (16_000, steps, 9, 3),
                   (64_000, steps, 3, 1)]
        exact = [(1_000, steps, 3, 1)]
        mlp = [(8_000, [32], 21, 1)]
        split_batches, split_repeats = [1_000, 4_000, 16_000, 64_000], 25
    if args.profile:
        prof = profile_hot_loop(world.main)
        atomic_write(args.out / "erk_overhead_profile.txt", lambda tmp: Path(tmp).write_text(prof))
    split = pd.DataFrame(split_rows(world.main, split_batches, split_repeats, "learned"))
    rows = []
    plans = (("learned", world.main, learned), ("mlp", CheapMLP(), mlp),
             ("exact", world.exact, exact))
    for model, denoiser, plan in plans:
        for batch, steps_list, reps, forks in plan:
            x0 = world.initial_state(torch.arange(batch))
            rows += overhead_rows(model, denoiser, x0, steps_list, reps, forks)
            md = _write(run, args.out, pd.DataFrame(rows), split)  # after every batch: nothing lost
    print(md)


def _write(run, out, overhead, split) -> str:
    learned = overhead[overhead.model != "exact"]
    misses = learned[learned.erk_vs_plain > learned.target]
    notes = [
        "Target (issue 16): erk/plain ≤ 1.02 at batch 1k and ≤ 1.01 from 4k on the learned model "
        "and the cheap MLP (`mlp`: 4 linear layers of width 64, batch 8k, 32 steps), zero extra "
        "denoiser evaluations, extra peak memory O(batch·dim).",
        f"Learned/MLP rows meeting the time target: {len(learned) - len(misses)} "
        f"of {len(learned)}; "
        f"extra NFE over all rows: {int(overhead.extra_nfe.abs().max())}.",
        "`erk_vs_plain` (the headline) is the median over timed rounds of erk time / plain time "
        "*within the round* (`erk_vs_plain_iqr`: its interquartile range), which cancels load that "
        "drifts slower than one round; `erk_vs_plain_medians` is the ratio of the medians and "
        "`erk_vs_plain_min` of the fastest runs (load only ever adds time). `erk_vs_heun` divides "
        "out the sampler's own bookkeeping (w_stiff = 0 path). Timed rounds per row: 41 (1k), "
        "21 (4k and the MLP at 8k), 9 (16k), 3 (64k and the exact mixture), after one counted "
        "warm-up round.",
        "The exact 1016-component mixture runs at batch 1k only (~0.1 ms per point-evaluation: "
        "63 evaluations × 1k points already take ~6 s per run, ×3 samplers × repeats).",
        "Memory columns (smallest step count of each batch only): extra peak RSS of one run in a "
        "forked one-thread child (median of 3 children up to 16k, 1 at 64k and for the exact "
        "mixture); `*_units` = difference / (batch·dim·itemsize). RSS has page/arena granularity "
        "(~±0.1–1 MB), so at batch 1k (8 kB per unit) the units are noise-dominated; read the "
        "16k and 64k rows.",
    ]
    return write_results(run, out, "erk_overhead", "ERK-Guid overhead vs plain Heun (same NFE)", [
        ("", overhead, "Wall time (medians of interleaved runs), NFE counted, extra peak memory"),
        ("split", split,
         "Where the time goes: one evaluation vs one correction (learned model, µs)"),
    ], notes="\n".join(f"* {n}" for n in notes))


if __name__ == "__main__":
    main()
