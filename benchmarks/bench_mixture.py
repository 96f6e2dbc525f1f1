"""Benchmark 4: exact-mixture throughput for the 2032-component tree (classes A∪B).

``GaussianMixture.score`` / ``denoise`` / ``drift_jacobian`` (closed form through each
covariance's eigendecomposition, float64 inside, chunked to a ~128 MB working set) at
σ = 0.1: points per second and extra peak memory as the batch grows to 10⁶, for float32 and
float64 inputs, side by side with a straightforward dense implementation:

* ``dense`` — on every call, invert every ``C_k = Σ_k + σ²I`` and take its log-determinant
  (``torch.linalg.inv`` / ``logdet`` on ``[K, d, d]``), then form ``x − μ_k`` for all
  components at once (``[chunk, K, d]``), ``s_k = C_k⁻¹(μ_k − x)``, a softmax over the
  log-weights, and the weighted sums (Hessian: ``Σ r_k s_k s_kᵀ`` as ``[chunk, K, d, d]``),
  all in the input's dtype. It is chunked too (``DENSE_CHUNK`` points): unchunked, its
  ``[10⁶, 2032, 2]`` float64 intermediates alone would need 32 GB per tensor.

``stiffkit_f32`` is the same mixture in its float32 compute mode
(``with_compute_dtype(torch.float32)``), for float32 inputs.

Timing protocol (the machine is shared and the big rows are slow):

* batch 1k and 10k — per map, dense, stiffkit and (float32 input) stiffkit_f32 timed in
  alternation in one process (median of the within-round ratio ``stiffkit / dense``); extra
  peak RSS of one run in a forked single-thread child;
* batch 100k (stiffkit's three maps) and 10⁶ (the denoiser, which is what samplers call) —
  one run each in a fresh Python process that reports its own wall time and extra peak RSS
  (the peak is reset after setup via ``/proc/self/clear_refs``).

At ~0.1 ms per point a 10⁶-point map takes minutes here, so the 10⁶ row is the denoiser
alone, in both dtypes; score costs the same as the denoiser (same pass) and the Jacobian
~2–4× more (see the 100k rows).

Run ``python benchmarks/bench_mixture.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Run, parse_args, peak_memory_1t, write_results  # noqa: E402
from _harness import compare  # noqa: E402

from stiffkit.diffusion.mixtures import tree_gmm  # noqa: E402

SIGMA = 0.1
#: Points per chunk of the dense baseline: its [chunk, K, d, d] Hessian term is ~130 MB in float64.
DENSE_CHUNK = 2048
OPS = ("score", "denoise", "drift_jacobian")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_LOG_2PI = math.log(2 * math.pi)


class DenseMixture:
    """The textbook evaluation of a Gaussian mixture's score, denoiser and drift Jacobian."""

    def __init__(self, gmm):
        self.weights, self.means, self.covs = gmm.weights, gmm.means, gmm.covs

    def _terms(self, x, sigma):
        """Yield ``(chunk slice, responsibilities [b, K], s_k [b, K, d], C_k⁻¹ [K, d, d])``."""
        d = x.shape[1]
        mu = self.means.to(x.dtype)
        C = self.covs.to(x.dtype) + sigma**2 * torch.eye(d, dtype=x.dtype)  # [K, d, d]
        Cinv = torch.linalg.inv(C)  # per σ, every call
        const = torch.log(self.weights.to(x.dtype)) - 0.5 * (torch.logdet(C) + d * _LOG_2PI)  # [K]
        for start in range(0, x.shape[0], DENSE_CHUNK):
            xc = x[start : start + DENSE_CHUNK]
            diff = mu[None] - xc[:, None, :]  # μ_k − x: [b, K, d]
            s = torch.einsum("kij,bkj->bki", Cinv, diff)  # s_k = C_k⁻¹(μ_k − x): [b, K, d]
            r = torch.softmax(const - 0.5 * (diff * s).sum(-1), dim=1)  # [b, K]
            yield slice(start, start + DENSE_CHUNK), r, s, Cinv

    def score(self, x, sigma):
        out = torch.empty_like(x)
        for sl, r, s, _ in self._terms(x, sigma):
            out[sl] = torch.einsum("bk,bkd->bd", r, s)
        return out

    def denoise(self, x, sigma):
        return x + sigma**2 * self.score(x, sigma)  # Tweedie

    def drift_jacobian(self, x, sigma):
        d = x.shape[1]
        out = torch.empty(x.shape[0], d, d, dtype=x.dtype)
        for sl, r, s, Cinv in self._terms(x, sigma):
            g = torch.einsum("bk,bkd->bd", r, s)  # the score: [b, d]
            hess = (-torch.einsum("bk,kij->bij", r, Cinv)
                    + torch.einsum("bk,bki,bkj->bij", r, s, s)  # [b, K, d, d] inside
                    - g[:, :, None] * g[:, None, :])
            out[sl] = -sigma * hess  # J_f = −σ H
        return out


def _sample(gmm, batch, dtype):
    return gmm.sample(batch, SIGMA, generator=torch.Generator().manual_seed(0)).to(dtype)


#: stiffkit's implementations: the default (float64 compute) and the opt-in float32 mode
#: (``GaussianMixture.with_compute_dtype(torch.float32)``), which only float32 inputs use.
IMPLS = {"stiffkit": torch.float64, "stiffkit_f32": torch.float32}


def small_rows(gmm, dense, batches, repeats):
    """Per map: dense, stiffkit (and its float32 mode for float32 input), interleaved;
    memory in forked children."""
    rows = []
    models = {name: gmm.with_compute_dtype(cdt) for name, cdt in IMPLS.items()}
    for dname, dtype in DTYPES.items():
        for batch in batches:
            x = _sample(gmm, batch, dtype)
            reps = repeats[batch] if isinstance(repeats, dict) else repeats
            for op in OPS:
                ref = getattr(gmm, op)(x.double(), SIGMA)  # float64 reference
                calls = {"dense": lambda op=op: getattr(dense, op)(x, SIGMA)}
                for name, model in models.items():
                    if name == "stiffkit" or dtype == torch.float32:
                        calls[name] = lambda op=op, model=model: getattr(model, op)(x, SIGMA)
                timing = compare(calls, repeats=reps, warmup=1 if reps > 1 else 0,
                                 baseline="dense")
                med = dict(zip(timing.name, timing.median_s))
                paired = dict(zip(timing.name, timing.paired_ratio))
                for impl, fn in calls.items():
                    out = fn().double()
                    rows.append(dict(
                        dtype=dname, batch=batch, op=op, impl=impl,
                        compute=("float64" if impl == "stiffkit" else dname),
                        seconds=med[impl], points_per_s=batch / med[impl],
                        peak_extra_MB=peak_memory_1t(fn) / 2**20,
                        stiffkit_vs_dense=paired[impl] if impl != "dense" else math.nan,
                        max_rel_diff_vs_f64=float((out - ref).abs().max() / ref.abs().max()),
                        timing=f"interleaved, median of {reps}"))
            print(f"{dname} batch {batch}: done", flush=True)
    return rows


def one_run(op, dname, batch, threads):
    """Child mode: time one map on `batch` points and report its extra peak RSS (JSON)."""
    torch.set_num_threads(threads)
    gmm = tree_gmm("AB")
    if dname.endswith("c"):  # float32 input, float32 compute mode
        dname, gmm = dname[:-1], gmm.with_compute_dtype(torch.float32)
    x = _sample(gmm, batch, DTYPES[dname])
    getattr(gmm, op)(x[:64], SIGMA)  # warm up
    try:  # reset the peak-RSS high-water mark, so setup does not count (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    with open("/proc/self/statm") as fh:
        start = int(fh.read().split()[1]) * resource.getpagesize()
    t0 = time.perf_counter()
    getattr(gmm, op)(x, SIGMA)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(seconds=seconds, peak_extra=max(peak - start, 0))))


def big_rows(plan, threads):
    rows = []
    for dname, batch, ops in plan:
        for op in ops:
            proc = subprocess.run([sys.executable, __file__, "--one", op, dname, str(batch),
                                   str(threads)],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ,
                                       "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            f32 = dname.endswith("c")
            rows.append(dict(dtype=dname.rstrip("c"), batch=batch, op=op,
                             impl="stiffkit_f32" if f32 else "stiffkit",
                             compute="float32" if f32 else "float64",
                             seconds=res["seconds"], points_per_s=batch / res["seconds"],
                             peak_extra_MB=res["peak_extra"] / 2**20,
                             stiffkit_vs_dense=math.nan, max_rel_diff_vs_f64=math.nan,
                             timing="one run, fresh process"))
            print(f"{dname} batch {batch} {op}: {res['seconds']:.1f} s", flush=True)
    return rows


def main(argv=None):
    if argv is None and len(sys.argv) == 6 and sys.argv[1] == "--one":
        return one_run(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    args = parse_args(__doc__, argv)
    run = Run("bench_mixture.py", args.quick)
    gmm = tree_gmm("AB")
    dense = DenseMixture(gmm)
    if args.quick:
        small, repeats = [64], 1
        big = [("float32", 256, ("denoise",)), ("float32c", 256, ("denoise",))]
    else:
        small, repeats = [1_000, 10_000], {1_000: 9, 10_000: 3}
        big = ([(d, 100_000, OPS) for d in (*DTYPES, "float32c")]
               + [(d, 1_000_000, ("denoise",)) for d in (*DTYPES, "float32c")])
    df = pd.DataFrame(small_rows(gmm, dense, small, repeats) + big_rows(big, args.threads))
    df = df.sort_values(["dtype", "op", "batch", "impl"], kind="stable").reset_index(drop=True)
    notes = f"""
* `stiffkit_vs_dense` = stiffkit time / dense time for the same map, dtype and batch (< 1:
  stiffkit faster): the median over interleaved rounds of the within-round ratio (one
  `compare` per map: dense, stiffkit and, for float32 input, `stiffkit_f32`);
  `max_rel_diff_vs_f64` = max |result − stiffkit float64| / max |stiffkit float64|.
  `compute` is the arithmetic: stiffkit's default is float64 whatever the input dtype;
  `stiffkit_f32` is the opt-in float32 mode (`GaussianMixture.with_compute_dtype(torch.float32)`,
  or `compute_dtype=` on construction); the dense baseline computes in the input dtype.
* `peak_extra_MB`: extra peak RSS of one run (1k/10k: forked child, one thread; 100k and 10⁶:
  fresh process, `--threads` threads). Chunking bounds the working set, so memory stops
  growing with the batch beyond the output itself (batch·d·itemsize; batch·d² for the
  Jacobian): compare the 10⁵ and 10⁶ rows. stiffkit sizes its chunks for a ~128 MB estimate
  (`stiffkit.diffusion.mixtures.CHUNK_BYTES`); the measured peak is several times that
  (the allocator's high-water mark over a chunk's temporaries), but flat in the batch. The
  dense baseline's chunks are `DENSE_CHUNK` = {DENSE_CHUNK} points.
* σ = {SIGMA}; points are exact samples of p_σ of the A∪B tree.
"""
    md = write_results(run, args.out, "mixture",
                       "Exact tree mixture (2032 components): throughput and memory", [
        ("", df, "Throughput, extra peak RSS, and ratio to a dense implementation"),
    ], notes=notes)
    print(md)


if __name__ == "__main__":
    main()
