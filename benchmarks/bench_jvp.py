"""Benchmark 5: the three Jacobian–vector product paths on the learned drift.

``stiffkit.jvp_operator(f, σ, x, method=...)`` on the learned class-A model's probability-flow
drift ``f(σ, x) = world.main.drift(x, σ)`` (energy MLP, score by autograd, so a JVP is
forward-over-reverse):

* ``forward`` — ``torch.func.jvp`` (exact);
* ``vjp`` — the double-backward trick. Building the operator records one graph of ``f`` and
  checks it with a random adjoint test; every later product is one backward pass through
  that graph. ``vjp_first`` times a fresh operator and one product (graph + test + product),
  ``vjp_next`` one more product on a built operator — what power iteration pays per step;
* ``fd`` — central finite differences (two drift evaluations, step ``cbrt(eps)``).

and ``power_auto`` / ``power_probe`` / ``power_forward``: a fresh operator and 20
power-iteration products with the default ``method="auto"`` against forced forward mode.
``power_auto`` runs on the drift as the samplers and :func:`stiffkit.diffusion.pf_ode_drift`
hand it to the tools, carrying the energy model's ``jvp_hint = "vjp"`` (double backward from
the first product); ``power_probe`` on the same function without the hint, where "auto"
times one product of each exact path and then keeps the faster (what any other drift gets).

Timed in alternation at each batch size (ratio to ``forward``); agreement is the largest
per-sample relative difference ``‖Jv − Jv_forward‖ / ‖Jv_forward‖``, in float32 (the model's
dtype) and float64 (same weights). Points are exact samples of ``p_σ`` at σ = 0.1.

Run ``python benchmarks/bench_jvp.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Run, parse_args, write_results  # noqa: E402
from _harness import compare  # noqa: E402

from stiffkit._utils import flat_norm  # noqa: E402
from stiffkit.estimators.jvp import jvp_operator  # noqa: E402
from stiffkit.paper.toy import toy_world  # noqa: E402

SIGMA = 0.1
#: Products of the power-iteration rows (the estimators' typical budget).
POWER_PRODUCTS = 20


def power_products(f, s, x, v, method, k=POWER_PRODUCTS):
    """A fresh operator and `k` power-iteration products (normalised per sample); returns
    the operator and the last iterate."""
    op = jvp_operator(f, s, x, method=method)
    u = v
    for _ in range(k):
        u = op(u)
        u = u / flat_norm(u)[:, None]
    return op, u


def jvp_rows(dtype, batches, repeats):
    world = toy_world(dtype)
    model = world.main

    def bare(sigma, y):
        return model.drift(y, sigma)

    def f(sigma, y):  # the same drift, with the model's hint (as pf_ode_drift passes it)
        return model.drift(y, sigma)

    f.jvp_hint = model.jvp_hint

    rows = []
    for batch in batches:
        gen = torch.Generator().manual_seed(batch)
        x = world.exact.sample(batch, SIGMA, generator=gen, dtype=dtype)
        v = torch.randn(x.shape, generator=gen, dtype=dtype)
        s = torch.tensor(SIGMA, dtype=dtype)
        ops = {m: jvp_operator(f, s, x, method=m) for m in ("forward", "vjp", "fd")}
        out = {m: op(v) for m, op in ops.items()}
        ref_norm = flat_norm(out["forward"])
        rel = {m: flat_norm(out[m] - out["forward"]) / ref_norm for m in ("vjp", "fd")}
        agree = {m: float(r.max()) for m, r in rel.items()}
        auto_op, auto_u = power_products(f, s, x, v, "auto")
        _, fwd_u = power_products(f, s, x, v, "forward")
        power_rel = flat_norm(auto_u - fwd_u) / flat_norm(fwd_u)
        probe_op, _ = power_products(bare, s, x, v, "auto")
        power = compare({
            "power_forward": lambda: power_products(f, s, x, v, "forward"),
            "power_auto": lambda: power_products(f, s, x, v, "auto"),
            "power_probe": lambda: power_products(bare, s, x, v, "auto"),
        }, repeats=repeats, warmup=1 if repeats > 1 else 0, baseline="power_forward")
        power_ratio = dict(zip(power.name, power.paired_ratio))
        power_med = dict(zip(power.name, power.median_s))
        timing = compare({
            "forward": lambda: ops["forward"](v),
            "vjp_first": lambda: jvp_operator(f, s, x, method="vjp")(v),
            "vjp_next": lambda: ops["vjp"](v),
            "fd": lambda: ops["fd"](v),
            "drift": lambda: f(s, x),
        }, repeats=repeats, warmup=1 if repeats > 1 else 0, baseline="forward")
        med = dict(zip(timing.name, timing.median_s))
        paired = dict(zip(timing.name, timing.paired_ratio))  # within-round ratios to forward
        rows.append(dict(
            dtype=str(dtype).replace("torch.", ""), batch=batch,
            forward_ms=1e3 * med["forward"], vjp_first_ms=1e3 * med["vjp_first"],
            vjp_next_ms=1e3 * med["vjp_next"], fd_ms=1e3 * med["fd"], drift_ms=1e3 * med["drift"],
            vjp_first_vs_forward=paired["vjp_first"], vjp_next_vs_forward=paired["vjp_next"],
            fd_vs_forward=paired["fd"],
            forward_vs_drift=med["forward"] / med["drift"],
            vjp_max_rel_diff=agree["vjp"], fd_max_rel_diff=agree["fd"],
            fd_median_rel_diff=float(rel["fd"].median()),
            power_forward_ms=1e3 * power_med["power_forward"],
            power_auto_ms=1e3 * power_med["power_auto"],
            power_probe_ms=1e3 * power_med["power_probe"],
            power_auto_vs_forward=float(power_ratio["power_auto"]),
            power_probe_vs_forward=float(power_ratio["power_probe"]),
            auto_choice=auto_op.auto_choice, probe_choice=probe_op.auto_choice,
            power_auto_max_rel_diff=float(power_rel.max()),
        ))
        print(f"{dtype} batch {batch}: done", flush=True)
    return rows


def main(argv=None):
    args = parse_args(__doc__, argv)
    run = Run("bench_jvp.py", args.quick)
    if args.quick:
        plan, repeats = [(torch.float32, [64]), (torch.float64, [64])], 1
    else:
        plan = [(torch.float32, [1_000, 4_000, 16_000, 64_000]), (torch.float64, [1_000, 16_000])]
        repeats = 7
    rows = []
    for dtype, batches in plan:
        rows += jvp_rows(dtype, batches, repeats)
    df = pd.DataFrame(rows)
    notes = """
* `*_vs_forward` > 1: slower than forward mode (median of within-round ratios; `*_ms` are medians). `forward_vs_drift`: one JVP in units of one
  drift evaluation (the drift itself is a reverse pass, so forward-over-reverse costs a few).
* `power_auto_vs_forward` (the target, ≤ 0.4): a fresh operator and {k} power-iteration
  products with the default `method="auto"` against forced forward mode, median of
  within-round ratios, on the drift as the samplers pass it (with the energy model's
  `jvp_hint = "vjp"`: double backward from the first product); `power_probe_vs_forward`: the
  same function without the hint, where "auto" times one product of each exact path first
  (`probe_choice`: what it kept). `power_auto_max_rel_diff`: the largest per-sample
  difference of the {k}-th normalised iterate from forward mode's.
* `*_max_rel_diff`: largest per-sample ‖Jv − Jv_forward‖/‖Jv_forward‖ (`fd_median_rel_diff`:
  the median). The vjp path is exact to roundoff. fd's default step, cbrt(eps)·(1 + ‖x‖)/‖v‖,
  assumes the drift varies on an O(1) length scale; at σ = 0.1 the learned drift bends on a
  scale ~σ near the thin branches, so in float32 (step ≈ 5e-3) its truncation error is large
  for a few samples. Pass a smaller `fd_eps`, work in float64, or use forward/vjp.
""".replace("{k}", str(POWER_PRODUCTS))  # noqa: E501 - markdown written verbatim
    title = "JVP paths on the learned drift: forward vs double-backward vs finite differences"
    caption = f"Time per batched product (ms, medians) and agreement with forward mode, σ = {SIGMA}"
    md = write_results(run, args.out, "jvp", title, [("", df, caption)], notes=notes)
    print(md)


if __name__ == "__main__":
    main()
