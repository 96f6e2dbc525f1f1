"""Sample-quality metrics against an exact Gaussian mixture, with bootstrap intervals and floors.

DESIGN.md §6: mean NLL alone can be gamed (over-contraction scores *better* than the truth),
so a sampler is judged on several numbers at once, each with a confidence interval and the
value the truth itself gets at the same sample size (the *noise floor*):

* :func:`endpoint_error` — per-sample distance to a converged solve of the same ODE from the
  same noise (pure integration error; its floor is 0 by construction);
* :func:`sliced_wasserstein` — sliced Wasserstein distance to ground-truth samples;
* :func:`nll_stats` — NLL ``−log p_0(x)`` under the true mixture, with an outlier rate;
* :func:`precision_recall` — kNN precision/recall (Kynkäänniemi et al., 2019);
* :func:`component_occupancy` — which mixture components the samples reach;
* :func:`evaluate` — all of them as one DataFrame row; :func:`noise_floor` — truth vs truth.

Confidence intervals are percentile bootstraps over samples (``ci="basic"`` gives the basic,
a.k.a. reverse-percentile, interval instead), drawn from a private generator seeded by
``seed``; the global RNG is never touched. Resamples are represented by their multiplicity
vectors, so mean-type statistics cost one matrix product for all resamples. Two caveats hold
for any bootstrap of these statistics and are part of the contract:

* distance-type metrics (``sw``, ``component_tv``) are biased upwards by roughly their noise
  floor, and resampling with replacement adds that bias once more: when the metric sits near
  its floor the percentile interval lies *above* the estimate. Read such intervals only for
  metrics well above their floor, or compare with the ``*_floor`` columns;
* ``occupancy`` counts distinct components, and a resample drops a component seen once with
  probability ``e⁻¹``; its percentile interval sits *below* the estimate when many components
  are seen only a few times. Compare with ``occupancy_floor`` instead.

All arithmetic is float64 numpy; inputs may be torch tensors or numpy arrays ``[n, *dims]``,
flattened over the non-batch dims (DESIGN.md §2).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from stiffkit.diffusion.mixtures import GaussianMixture

__all__ = [
    "COLUMNS",
    "Estimate",
    "EndpointError",
    "NLLStats",
    "PrecisionRecall",
    "Occupancy",
    "endpoint_error",
    "sliced_wasserstein",
    "nll_stats",
    "precision_recall",
    "component_occupancy",
    "evaluate",
    "noise_floor",
]

#: Confidence level of every interval unless told otherwise.
DEFAULT_LEVEL = 0.95
#: Bootstrap resamples per interval (``0`` switches intervals off: NaN bounds).
DEFAULT_NUM_BOOTSTRAP = 200
#: Directions of the sliced Wasserstein point estimate.
DEFAULT_NUM_PROJECTIONS = 256
#: Directions (the first ones of the estimate's) reused by every SW bootstrap resample, in
#: 2-D and above. In 2-D the stratified directions make 8 of them reproduce the spread of
#: 256 to three digits (measured on the tree); in d = 64 the spread settles from ~32 on.
BOOTSTRAP_PROJECTIONS_2D = 16
BOOTSTRAP_PROJECTIONS_ND = 64
#: Order ``p`` of the 1-D Wasserstein distance in SW: 2, the usual "sliced Wasserstein".
DEFAULT_SW_P = 2
#: Neighbourhood size of kNN precision/recall (Kynkäänniemi et al. use k = 3).
DEFAULT_K = 3
#: Outlier threshold: this quantile of the truth's NLL.
DEFAULT_OUTLIER_QUANTILE = 0.999
#: A component is occupied when at least this many samples are assigned to it.
DEFAULT_MIN_COUNT = 1
#: Size (in float64 entries) of one chunk's distance/projection block: 32 MiB.
CHUNK_ELEMENTS = 2**22
#: Up to this dimension precision/recall uses KD-trees; above it, chunked brute force.
KDTREE_MAX_DIM = 8
#: Up to this dimension brute-force distances are formed from coordinate differences
#: (exact, independent of chunking); above it by the Gram expansion ``|a|² + |b|² − 2a·b``.
DIRECT_DIM_MAX = 16
CI_METHODS = ("percentile", "basic")
PR_METHODS = ("auto", "kdtree", "brute")

#: Columns of :func:`evaluate`'s row, in order. ``*_lo``/``*_hi`` bound the interval; NaN marks
#: "not computed" (no reference, too few finite samples, ``noise_floor=False``).
COLUMNS = (
    "n", "n_truth", "nonfinite_rate",
    "endpoint_error_mean", "endpoint_error_mean_lo", "endpoint_error_mean_hi",
    "endpoint_error_median", "endpoint_error_median_lo", "endpoint_error_median_hi",
    "endpoint_error_rms", "endpoint_error_rms_lo", "endpoint_error_rms_hi",
    "sw", "sw_lo", "sw_hi", "sw_floor",
    "nll_mean", "nll_mean_lo", "nll_mean_hi",
    "nll_median", "nll_median_lo", "nll_median_hi",
    "nll_truth_mean", "nll_truth_median", "nll_threshold",
    "outlier_rate", "outlier_rate_lo", "outlier_rate_hi", "outlier_rate_floor",
    "precision", "precision_lo", "precision_hi", "precision_floor",
    "recall", "recall_lo", "recall_hi", "recall_floor",
    "occupancy", "occupancy_lo", "occupancy_hi", "occupancy_floor",
    "component_tv", "component_tv_lo", "component_tv_hi", "component_tv_floor",
)  # fmt: skip

_NAN = float("nan")


class Estimate(NamedTuple):
    """A point estimate and its bootstrap interval (NaN bounds when not bootstrapped)."""

    value: float
    lo: float
    hi: float


class EndpointError(NamedTuple):
    """Summaries of the per-sample endpoint error ``‖x_i − x_i^ref‖``."""

    mean: Estimate
    median: Estimate  #: lower median, as ``torch.median``
    rms: Estimate
    per_sample: Tensor  #: [n] float64


class NLLStats(NamedTuple):
    """NLL ``−log p_0(x)`` under the true mixture, and the truth's own values."""

    mean: Estimate
    median: Estimate
    outlier_rate: Estimate  #: fraction with NLL above ``threshold``
    threshold: float
    truth_mean: float  #: mean NLL of the truth sample (≈ differential entropy of p_0)
    truth_median: float


class PrecisionRecall(NamedTuple):
    """kNN precision (samples inside the truth's manifold) and recall (the reverse)."""

    precision: Estimate
    recall: Estimate


class Occupancy(NamedTuple):
    """Component occupancy by maximum responsibility at σ = 0, and a histogram distance."""

    occupancy: Estimate  #: fraction of components with ≥ ``min_count`` samples
    tv: Estimate  #: total variation between mean responsibilities and the weights
    counts: Tensor  #: [K] int64 samples per component (hard assignment)
    soft: Tensor  #: [K] float64 mean responsibilities


# ---------------------------------------------------------------------- argument checks
def _as_samples(x: Any, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Return `x` as a float64 ``[n, D]`` array (all non-batch dims flattened)."""
    if isinstance(x, Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"`{name}` must have a real numeric dtype, got {x.dtype}.")
        shape = tuple(x.shape)
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"`{name}` must have a real numeric dtype, got {x.dtype}.")
        shape = x.shape
        arr = x.astype(np.float64, copy=False)
    else:
        raise TypeError(
            f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}."
        )
    if arr.ndim < 2 or math.prod(shape[1:]) == 0:
        raise ValueError(f"`{name}` must have shape [n, *dims] with dims non-empty, got {shape}.")
    if shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    arr = arr.reshape(shape[0], -1)
    if not allow_nonfinite and not np.isfinite(arr).all():
        raise ValueError(
            f"`{name}` contains NaN or Inf (evaluate() drops such rows and reports "
            "`nonfinite_rate`)."
        )
    return arr


def _check_gmm(gmm: Any) -> None:
    if not isinstance(gmm, GaussianMixture):
        raise TypeError(f"`gmm` must be a GaussianMixture, got {type(gmm).__name__}.")


def _check_dim(x: np.ndarray, dim: int, name: str, other: str) -> None:
    if x.shape[1] != dim:
        raise ValueError(f"`{name}` has {x.shape[1]} features per sample but {other} has {dim}.")


def _check_int(v: Any, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {v!r}.")
    return int(v)


def _check_fraction(v: Any, name: str) -> float:
    if not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
        raise ValueError(f"`{name}` must lie strictly between 0 and 1, got {v!r}.")
    return float(v)


def _check_choice(v: Any, name: str, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {v!r}.")
    return v


def _check_bootstrap(num_bootstrap: Any, level: Any, ci: Any) -> None:
    _check_int(num_bootstrap, "num_bootstrap", 0)
    _check_fraction(level, "level")
    _check_choice(ci, "ci", CI_METHODS)


def _seed_sequence(seed: Any) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(_check_int(seed, "seed", 0))


# ---------------------------------------------------------------------- bootstrap
def _multiplicities(n: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``[num, n]`` resample multiplicities (row b: how often each sample is drawn)."""
    out = np.empty((num, n))
    for b in range(num):
        out[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def _interval(value: float, reps: np.ndarray | None, level: float, ci: str) -> Estimate:
    """Return the percentile (or basic) bootstrap interval of `value` from replicates."""
    if reps is None or len(reps) == 0 or not math.isfinite(value):
        return Estimate(float(value), _NAN, _NAN)
    q_lo, q_hi = np.quantile(reps, [(1.0 - level) / 2, (1.0 + level) / 2])
    if ci == "basic":  # reflect the replicate spread around the estimate
        q_lo, q_hi = 2.0 * value - q_hi, 2.0 * value - q_lo
    return Estimate(float(value), float(q_lo), float(q_hi))


def _lower_median(v: np.ndarray) -> float:
    return float(np.partition(v, (len(v) - 1) // 2)[(len(v) - 1) // 2])


def _weighted_lower_medians(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Lower median of each resample: ``v`` [n] values, ``w`` [B, n] multiplicities → [B]."""
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[:, order], axis=1)  # [B, n]
    # First sorted position whose cumulative count reaches ceil(n/2) (counts are integers).
    idx = (cum < math.ceil(len(v) / 2) - 0.5).sum(axis=1)
    return v[order][idx]


def _mean_estimate(v: np.ndarray, w: np.ndarray | None, level: float, ci: str) -> Estimate:
    reps = None if w is None else w @ v / len(v)
    return _interval(float(v.mean()), reps, level, ci)


def _boot_weights(n: int, num_bootstrap: int, rng: np.random.Generator) -> np.ndarray | None:
    return _multiplicities(n, num_bootstrap, rng) if num_bootstrap > 0 else None


# ---------------------------------------------------------------------- endpoint error
def endpoint_error(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> EndpointError:
    """Summarise the per-sample Euclidean distance between paired samples and a reference.

    Parameters
    ----------
    samples, reference : Tensor or ndarray, shape [n, *dims]
        Paired endpoints: row i of both started from the same noise; ``reference`` is a
        converged solve of the same ODE (computed elsewhere).
    num_bootstrap, level, ci, seed
        Bootstrap resamples, interval level, ``"percentile"`` or ``"basic"``, and the seed
        of the private resampling generator.

    Returns
    -------
    EndpointError
        Mean, lower median and RMS of ``‖x_i − x_i^ref‖`` (over all non-batch dims), each
        with an interval, and the per-sample errors ``[n]``.
    """
    x = _as_samples(samples, "samples")
    r = _as_samples(reference, "reference")
    if tuple(np.shape(samples)) != tuple(np.shape(reference)):
        raise ValueError(
            f"`samples` and `reference` must have the same shape, got "
            f"{tuple(np.shape(samples))} and {tuple(np.shape(reference))}."
        )
    _check_bootstrap(num_bootstrap, level, ci)
    rng = np.random.default_rng(_seed_sequence(seed))
    return _endpoint_summary(np.linalg.norm(x - r, axis=1), num_bootstrap, level, ci, rng)


def _endpoint_summary(
    err: np.ndarray, num_bootstrap: int, level: float, ci: str, rng: np.random.Generator
) -> EndpointError:
    w = _boot_weights(len(err), num_bootstrap, rng)
    sq = err * err
    rms_reps = None if w is None else np.sqrt(w @ sq / len(err))
    med_reps = None if w is None else _weighted_lower_medians(err, w)
    return EndpointError(
        mean=_mean_estimate(err, w, level, ci),
        median=_interval(_lower_median(err), med_reps, level, ci),
        rms=_interval(math.sqrt(sq.mean()), rms_reps, level, ci),
        per_sample=torch.from_numpy(err),
    )


# ---------------------------------------------------------------------- sliced Wasserstein
def _directions(dim: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``[num, dim]`` unit directions, uniform on the sphere.

    In 2-D they are evenly spaced on the half circle with one uniform random offset: each is
    still uniform, but their average integrates the (π-periodic) 1-D distances far better
    than independent draws. Elsewhere they are independent normalised Gaussians.
    """
    if dim == 2:
        angle = (np.arange(num) + rng.uniform()) * (math.pi / num)
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)
    g = rng.standard_normal((num, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _quantile_plan(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Return how to integrate ``|Q_x(u) − Q_y(u)|^p`` over u ∈ (0, 1) for n vs m points.

    Both empirical quantile functions are step functions with breakpoints at ``i/n`` and
    ``j/m``; on each interval of their union they are constant, so the integral is an exact
    finite sum. Breakpoints are integers in units of ``1/(n m)``. Returns ``(ix, iy, length)``
    (indices into the sorted samples and interval lengths), or None when ``n == m``.
    """
    if n == m:
        return None
    grid = np.union1d(np.arange(n + 1, dtype=np.int64) * m, np.arange(m + 1, dtype=np.int64) * n)
    left = grid[:-1]
    return left // m, left // n, np.diff(grid) / (n * m)


def _wpp(a: np.ndarray, b: np.ndarray, plan, p: float) -> np.ndarray:
    """Return ``W_p^p`` per direction between sorted projections ``a`` [L, n], ``b`` [L, m]."""
    d = np.abs(a - b) if plan is None else np.abs(a[:, plan[0]] - b[:, plan[1]])
    d = d * d if p == 2 else d if p == 1 else d**p
    return d.mean(axis=1) if plan is None else d @ plan[2]


def _project(dirs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Return the projections ``dirs @ x.T`` ([L, D] x [n, D] -> [L, n]), row by row exactly.

    BLAS blocks a matrix product by the matrices' sizes, so ``dirs @ x.T`` can round one point's
    projection differently in clouds of different sizes; equal measures must give SW = 0
    exactly, so each projection is accumulated feature by feature, independently of ``n``.
    """
    out = dirs[:, :1] * x[:, 0]
    for k in range(1, x.shape[1]):
        out += dirs[:, k : k + 1] * x[:, k]
    return out


def _sw_point(x: np.ndarray, y: np.ndarray, dirs: np.ndarray, p: float, chunk: int) -> float:
    plan = _quantile_plan(len(x), len(y))
    total = 0.0
    for start in range(0, len(dirs), chunk):
        th = dirs[start : start + chunk]  # [c, D]
        a = _project(th, x)  # projections: [c, n]
        b = _project(th, y)  # [c, m]
        a.sort(axis=1)
        b.sort(axis=1)
        total += _wpp(a, b, plan, p).sum()
    return (total / len(dirs)) ** (1.0 / p)


def _sw_replicates(
    x: np.ndarray, y: np.ndarray, dirs: np.ndarray, p: float, num: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """Return SW on ``dirs`` and ``num`` two-sample bootstrap replicates on the same ``dirs``.

    A resample of x in direction θ, sorted, is the sorted projections with each value repeated
    by its sample's multiplicity: one argsort up front, then O(L n) per resample, no sorting.
    """
    n, m = len(x), len(y)
    plan = _quantile_plan(n, m)
    px, py = _project(dirs, x), _project(dirs, y)  # [L, n], [L, m]
    perm_x, perm_y = np.argsort(px, axis=1), np.argsort(py, axis=1)
    sx = np.take_along_axis(px, perm_x, axis=1)
    sy = np.take_along_axis(py, perm_y, axis=1)
    value = _wpp(sx, sy, plan, p).mean() ** (1.0 / p)
    shape_x, shape_y = sx.shape, sy.shape
    sx, sy = sx.ravel(), sy.ravel()
    reps = np.empty(num)
    for b in range(num):
        cx = np.bincount(rng.integers(0, n, n), minlength=n)
        cy = np.bincount(rng.integers(0, m, m), minlength=m)
        # Each direction's multiplicities sum to n (m), so rows stay rows after repeating.
        ax = np.repeat(sx, cx[perm_x].ravel()).reshape(shape_x)
        ay = np.repeat(sy, cy[perm_y].ravel()).reshape(shape_y)
        reps[b] = _wpp(ax, ay, plan, p).mean() ** (1.0 / p)
    return float(value), reps


def sliced_wasserstein(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    p: float = DEFAULT_SW_P,
    num_projections: int = DEFAULT_NUM_PROJECTIONS,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    bootstrap_projections: int | None = None,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
    chunk_size: int | None = None,
) -> Estimate:
    """Return the sliced Wasserstein distance ``SW_p`` between two point clouds.

    ``SW_p(μ, ν) = (E_θ W_p^p(θ#μ, θ#ν))^{1/p}`` over unit directions θ (Rabin et al. 2011;
    Bonneel et al. 2015), estimated with ``num_projections`` seeded directions. Each 1-D
    ``W_p`` is exact between the empirical measures: sort the projections and integrate
    ``|Q_x − Q_y|^p`` over the union of both quantile grids (unequal sizes need no
    resampling). ``p = 2`` is the default (the common "SW"); ``p = 1`` averages ``W_1``.

    Parameters
    ----------
    x : Tensor or ndarray, shape [n, *dims]
    y : Tensor or ndarray, shape [m, *dims]
        Point clouds with the same number of features; ``n != m`` is allowed.
    p : float
        Order, ``p ≥ 1``.
    num_projections : int
        Directions of the point estimate (processed in chunks of ``chunk_size``).
    num_bootstrap, level, ci
        The interval is a two-sample bootstrap (x and y resampled independently) with the
        directions held fixed. To keep it cheap each resample uses only the first
        ``bootstrap_projections`` directions (default ``BOOTSTRAP_PROJECTIONS_2D`` in 2-D,
        ``BOOTSTRAP_PROJECTIONS_ND`` otherwise), and the replicates are recentred on the
        full estimate (``rep − SW_subset + SW_full``); with ``bootstrap_projections ≥
        num_projections`` this is the plain percentile bootstrap. Fewer directions can
        only widen the spread (conservative). Near the noise floor see the module notes.
    seed : int
        Seeds both the directions and the resampling (independent streams): the same seed
        gives the same directions for every pair of clouds (common random numbers).
    chunk_size : int, optional
        Directions per chunk; by default ``CHUNK_ELEMENTS / (n + m)``.

    Returns
    -------
    Estimate
    """
    a = _as_samples(x, "x")
    b = _as_samples(y, "y")
    _check_dim(a, b.shape[1], "x", "`y`")
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 1):
        raise ValueError(f"`p` must be a finite number ≥ 1, got {p!r}.")
    num_projections = _check_int(num_projections, "num_projections", 1)
    bootstrap_projections = _boot_projections(bootstrap_projections, a.shape[1])
    _check_bootstrap(num_bootstrap, level, ci)
    if chunk_size is not None:
        chunk_size = _check_int(chunk_size, "chunk_size", 1)
    ss_dirs, ss_boot = _seed_sequence(seed).spawn(2)
    dirs = _directions(a.shape[1], num_projections, np.random.default_rng(ss_dirs))
    return _sw_estimate(
        a, b, dirs, float(p), num_bootstrap, bootstrap_projections, level, ci,
        np.random.default_rng(ss_boot), chunk_size,
    )  # fmt: skip


def _boot_projections(v: int | None, dim: int) -> int:
    if v is None:
        return BOOTSTRAP_PROJECTIONS_2D if dim == 2 else BOOTSTRAP_PROJECTIONS_ND
    return _check_int(v, "bootstrap_projections", 1)


def _sw_estimate(a, b, dirs, p, num_bootstrap, boot_dirs, level, ci, rng, chunk) -> Estimate:
    chunk = chunk or max(1, CHUNK_ELEMENTS // (len(a) + len(b)))
    value = _sw_point(a, b, dirs, p, chunk)
    if num_bootstrap == 0:
        return Estimate(value, _NAN, _NAN)
    sub_value, reps = _sw_replicates(a, b, dirs[:boot_dirs], p, num_bootstrap, rng)
    return _interval(value, reps - sub_value + value, level, ci)


# ---------------------------------------------------------------------- NLL
def _nll(x: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    xt = torch.from_numpy(x).to(gmm.means.device)
    return (-gmm.log_prob(xt, 0.0)).detach().cpu().numpy()


def _draw(gmm: GaussianMixture, n: int, ss: np.random.SeedSequence) -> np.ndarray:
    """Draw ``n`` exact samples of ``p_0`` with a private torch generator seeded from ``ss``."""
    gen = torch.Generator(device=gmm.means.device)
    gen.manual_seed(int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1)))
    return gmm.sample(n, 0.0, generator=gen).cpu().numpy()


def nll_stats(
    samples: Tensor | np.ndarray,
    gmm: GaussianMixture,
    *,
    truth: Tensor | np.ndarray | None = None,
    num_truth: int | None = None,
    threshold: float | None = None,
    outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> NLLStats:
    """Return the NLL ``−log p_0(x)`` of samples under the exact mixture, with outliers.

    An outlier is a sample whose NLL exceeds ``threshold``; by default the threshold is the
    ``outlier_quantile`` (99.9 %) quantile of the truth's NLL, so an exact sampler has an
    outlier rate ≈ 0.1 %. The truth's mean NLL is reported too: a sampler whose mean NLL is
    *below* it is over-contracting, not better (DESIGN.md §6).

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
        Flattened, the feature count must equal ``gmm.dim``.
    gmm : GaussianMixture
    truth : Tensor or ndarray, shape [m, *dims], optional
        Ground-truth samples; drawn exactly from ``gmm`` (``num_truth``, default n, seeded
        by ``seed``) when omitted.
    threshold : float, optional
        Fixed outlier threshold on the NLL (overrides ``outlier_quantile``).
    outlier_quantile : float
    num_bootstrap, level, ci, seed
        Intervals resample the samples; the threshold is held fixed.

    Returns
    -------
    NLLStats
    """
    _check_gmm(gmm)
    x = _as_samples(samples, "samples")
    _check_dim(x, gmm.dim, "samples", "`gmm`")
    _check_fraction(outlier_quantile, "outlier_quantile")
    _check_bootstrap(num_bootstrap, level, ci)
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and math.isfinite(threshold)
    ):
        raise ValueError(f"`threshold` must be a finite number, got {threshold!r}.")
    ss_truth, ss_boot = _seed_sequence(seed).spawn(2)
    if truth is None:
        n_truth = len(x) if num_truth is None else _check_int(num_truth, "num_truth", 1)
        t = _draw(gmm, n_truth, ss_truth)
    else:
        t = _as_samples(truth, "truth")
        _check_dim(t, gmm.dim, "truth", "`gmm`")
    nll_t = _nll(t, gmm)
    if threshold is None:
        threshold = float(np.quantile(nll_t, outlier_quantile))
    rng = np.random.default_rng(ss_boot)
    return _nll_summary(_nll(x, gmm), nll_t, float(threshold), num_bootstrap, level, ci, rng)


def _nll_summary(nll, nll_truth, threshold, num_bootstrap, level, ci, rng) -> NLLStats:
    w = _boot_weights(len(nll), num_bootstrap, rng)
    med_reps = None if w is None else _weighted_lower_medians(nll, w)
    return NLLStats(
        mean=_mean_estimate(nll, w, level, ci),
        median=_interval(_lower_median(nll), med_reps, level, ci),
        outlier_rate=_mean_estimate((nll > threshold).astype(np.float64), w, level, ci),
        threshold=threshold,
        truth_mean=float(nll_truth.mean()),
        truth_median=_lower_median(nll_truth),
    )


# ---------------------------------------------------------------------- precision / recall
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return squared distances ``[na, nb]``; exact coordinate differences in low dimension."""
    if a.shape[1] <= DIRECT_DIM_MAX:
        out = np.square(a[:, None, 0] - b[None, :, 0])
        for j in range(1, a.shape[1]):
            out += np.square(a[:, None, j] - b[None, :, j])
        return out
    out = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(out, 0.0, out=out)


def _rows_per_chunk(chunk_size: int | None, width: int) -> int:
    return chunk_size or max(1, CHUNK_ELEMENTS // width)


def _knn_radii(x: np.ndarray, k: int, method: str, chunk_size: int | None) -> np.ndarray:
    """Return each point's distance to its k-th nearest *other* point.

    Units: distances for ``"kdtree"``, squared distances for ``"brute"`` (each path compares
    in its own units, so no rounding is introduced at the ball boundary).
    """
    if method == "kdtree":
        dist, _ = cKDTree(x).query(x, k=k + 1)  # column 0 is the point itself
        return dist[:, k]
    rows = _rows_per_chunk(chunk_size, len(x))
    out = np.empty(len(x))
    for s in range(0, len(x), rows):
        block = _sq_dists(x[s : s + rows], x)  # [rows, n], self included at 0
        out[s : s + rows] = np.partition(block, k, axis=1)[:, k]
    return out


def _covered(
    query: np.ndarray, ref: np.ndarray, radii: np.ndarray, method: str, chunk_size: int | None
) -> np.ndarray:
    """Return ``[nq]`` booleans: is the query inside some ball ``B(ref[j], radii[j])``?"""
    if method == "brute":
        rows = _rows_per_chunk(chunk_size, len(ref))
        out = np.empty(len(query), dtype=bool)
        for s in range(0, len(query), rows):
            out[s : s + rows] = (_sq_dists(query[s : s + rows], ref) - radii).min(axis=1) <= 0
        return out
    out = np.zeros(len(query), dtype=bool)
    zero = radii == 0
    if zero.any():  # duplicates: only exact copies are covered (avoids an n² pair list)
        dist, _ = cKDTree(ref[zero]).query(query, k=1)
        out |= dist == 0
    positive = np.flatnonzero(~zero)
    if positive.size == 0:
        return out
    # Tiers of radii within a factor 2: a tier's points have ≤ k neighbours within their
    # radius, so a ball of the tier's largest radius holds O(k) of them — the pair list
    # stays O(k · nq) per tier however the radii are spread.
    qtree = cKDTree(query)
    tier = np.floor(np.log2(radii[positive])).astype(np.int64)
    for t in np.unique(tier):
        members = positive[tier == t]
        r = radii[members]
        pairs = cKDTree(ref[members]).sparse_distance_matrix(qtree, r.max(), output_type="ndarray")
        hit = pairs["v"] <= r[pairs["i"]]
        out[pairs["j"][hit]] = True
    return out


def _resolve_pr_method(method: str, dim: int) -> str:
    _check_choice(method, "method", PR_METHODS)
    if method == "auto":
        return "kdtree" if dim <= KDTREE_MAX_DIM else "brute"
    return method


def precision_recall(
    samples: Tensor | np.ndarray,
    truth: Tensor | np.ndarray,
    *,
    k: int = DEFAULT_K,
    method: str = "auto",
    chunk_size: int | None = None,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> PrecisionRecall:
    """Return kNN precision and recall of samples against truth (Kynkäänniemi et al., 2019).

    Each set's manifold is the union of balls around its points with radius the distance to
    the point's k-th nearest neighbour in the same set. Precision is the fraction of samples
    inside the truth's manifold (are samples plausible?), recall the fraction of truth points
    inside the samples' manifold (is the truth covered?). Mode collapse lowers recall;
    samples spread beyond the data lower precision.

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
    truth : Tensor or ndarray, shape [m, *dims]
        Both need more than ``k`` points.
    k : int
    method : {"auto", "kdtree", "brute"}
        ``"kdtree"`` (scipy; ``auto`` up to ``KDTREE_MAX_DIM`` dims) never forms a distance
        matrix. ``"brute"`` computes distances in row chunks of ``chunk_size`` (default
        ``CHUNK_ELEMENTS / width``), so ``n × m`` distances never exist at once; up to
        ``DIRECT_DIM_MAX`` dims its result does not depend on the chunking, bit for bit.
    num_bootstrap, level, ci, seed
        Intervals resample the evaluated points with the radii held fixed (the manifold
        estimates are treated as given; re-estimating them per resample would cost a kNN
        search each and duplicate points would shrink radii to 0).

    Returns
    -------
    PrecisionRecall
    """
    x = _as_samples(samples, "samples")
    t = _as_samples(truth, "truth")
    _check_dim(x, t.shape[1], "samples", "`truth`")
    k = _check_int(k, "k", 1)
    for arr, name in ((x, "samples"), (t, "truth")):
        if len(arr) <= k:
            raise ValueError(f"`{name}` needs more than k = {k} points, got {len(arr)}.")
    method = _resolve_pr_method(method, x.shape[1])
    if chunk_size is not None:
        chunk_size = _check_int(chunk_size, "chunk_size", 1)
    _check_bootstrap(num_bootstrap, level, ci)
    rng = np.random.default_rng(_seed_sequence(seed))
    in_truth = _covered(x, t, _knn_radii(t, k, method, chunk_size), method, chunk_size)
    in_samples = _covered(t, x, _knn_radii(x, k, method, chunk_size), method, chunk_size)
    return _pr_summary(in_truth, in_samples, num_bootstrap, level, ci, rng)


def _pr_summary(in_truth, in_samples, num_bootstrap, level, ci, rng) -> PrecisionRecall:
    w_x = _boot_weights(len(in_truth), num_bootstrap, rng)
    w_t = _boot_weights(len(in_samples), num_bootstrap, rng)
    return PrecisionRecall(
        precision=_mean_estimate(in_truth.astype(np.float64), w_x, level, ci),
        recall=_mean_estimate(in_samples.astype(np.float64), w_t, level, ci),
    )


# ---------------------------------------------------------------------- occupancy
def component_occupancy(
    samples: Tensor | np.ndarray,
    gmm: GaussianMixture,
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> Occupancy:
    """Return which mixture components the samples reach, and how far their mass is off.

    Each sample is assigned to its most responsible component at σ = 0. ``occupancy`` is the
    fraction of the K components with at least ``min_count`` samples; compare it with the
    truth's occupancy at the same n (:func:`evaluate`'s ``occupancy_floor``), since light
    components go unseen by exact samples too. ``tv`` is the total variation
    ``½ Σ_k |h_k − w_k|`` between the *soft* histogram ``h_k = mean_i r_k(x_i)`` and the
    weights: under exact samples ``E h_k = w_k`` exactly (hard argmax counts are biased where
    components overlap), so its floor is pure sampling noise.

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
    gmm : GaussianMixture
    min_count : int
    num_bootstrap, level, ci, seed
        See the module notes on the occupancy interval.

    Returns
    -------
    Occupancy
    """
    _check_gmm(gmm)
    x = _as_samples(samples, "samples")
    _check_dim(x, gmm.dim, "samples", "`gmm`")
    min_count = _check_int(min_count, "min_count", 1)
    _check_bootstrap(num_bootstrap, level, ci)
    rng = np.random.default_rng(_seed_sequence(seed))
    return _occupancy(x, gmm, min_count, num_bootstrap, level, ci, rng)


def _occupancy(x, gmm, min_count, num_bootstrap, level, ci, rng) -> Occupancy:
    n, k = len(x), gmm.num_components
    w = _boot_weights(n, num_bootstrap, rng)  # [B, n]
    weights = gmm.weights.detach().cpu().numpy()
    assign = np.empty(n, dtype=np.int64)
    soft = np.zeros(k)
    soft_reps = None if w is None else np.zeros((len(w), k))
    rows = max(1, CHUNK_ELEMENTS // k)  # keeps [rows, K] responsibilities bounded
    device = gmm.means.device
    for s in range(0, n, rows):
        r = gmm.responsibilities(torch.from_numpy(x[s : s + rows]).to(device), 0.0)
        r = r.detach().cpu().numpy()  # [rows, K]
        assign[s : s + rows] = r.argmax(axis=1)
        soft += r.sum(axis=0)
        if soft_reps is not None:
            soft_reps += w[:, s : s + rows] @ r
    counts = np.bincount(assign, minlength=k)
    occ_reps = tv_reps = None
    if w is not None:
        occ_reps = np.array(
            [(np.bincount(assign, weights=wb, minlength=k) >= min_count).mean() for wb in w]
        )
        tv_reps = 0.5 * np.abs(soft_reps / n - weights).sum(axis=1)
    return Occupancy(
        occupancy=_interval(float((counts >= min_count).mean()), occ_reps, level, ci),
        tv=_interval(float(0.5 * np.abs(soft / n - weights).sum()), tv_reps, level, ci),
        counts=torch.from_numpy(counts),
        soft=torch.from_numpy(soft / n),
    )


# ---------------------------------------------------------------------- one row
def evaluate(
    samples: Tensor | np.ndarray,
    gmm: GaussianMixture,
    *,
    reference: Tensor | np.ndarray | None = None,
    truth: Tensor | np.ndarray | None = None,
    num_truth: int | None = None,
    seed: int = 0,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    sw_p: float = DEFAULT_SW_P,
    num_projections: int = DEFAULT_NUM_PROJECTIONS,
    bootstrap_projections: int | None = None,
    k: int = DEFAULT_K,
    outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE,
    nll_threshold: float | None = None,
    min_count: int = DEFAULT_MIN_COUNT,
    noise_floor: bool = True,
) -> pd.DataFrame:
    """Return every metric of `samples` against the exact mixture as a one-row DataFrame.

    Rows of `samples` with any NaN/Inf entry (a diverged sampler) are dropped and counted in
    ``nonfinite_rate``; every metric is computed on the finite rows (all NaN if none is).
    The ``*_floor`` columns are the same metric for an independent exact draw of the same
    size against the same truth (``noise_floor=False`` skips them: NaN). ``nll_truth_*`` is
    the truth's own NLL: a sampler with a lower ``nll_mean`` is over-contracting.

    Cost is dominated by the mixture's log-density and responsibility passes (five with the
    floor, three without, each ``n × K``); in a sweep over samplers at one ``n``, pass
    ``noise_floor=False`` and compute :func:`noise_floor` once.

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
        Feature count (flattened) ``gmm.dim``.
    gmm : GaussianMixture
    reference : Tensor or ndarray, shape [n, *dims], optional
        Converged solve from the same noise, row for row; must be finite. Without it the
        endpoint columns are NaN.
    truth : Tensor or ndarray, shape [m, *dims], optional
        Ground-truth samples; drawn exactly from ``gmm`` when omitted (``num_truth``,
        default: the number of finite samples).
    seed : int
        Root of independent streams for the truth draw, the floor draw, the SW directions
        and each metric's resampling.
    num_bootstrap, level, ci
        Intervals (see the module notes).
    sw_p, num_projections, bootstrap_projections
        See :func:`sliced_wasserstein`.
    k
        See :func:`precision_recall`; the columns are NaN when ``n ≤ k``.
    outlier_quantile, nll_threshold
        See :func:`nll_stats`.
    min_count
        See :func:`component_occupancy`.

    Returns
    -------
    pandas.DataFrame
        One row with the columns :data:`COLUMNS`; the settings are in ``df.attrs``.
    """
    _check_gmm(gmm)
    x_all = _as_samples(samples, "samples", allow_nonfinite=True)
    _check_dim(x_all, gmm.dim, "samples", "`gmm`")
    finite = np.isfinite(x_all).all(axis=1)
    x = x_all[finite]
    ref = None
    if reference is not None:
        ref = _as_samples(reference, "reference")
        if tuple(np.shape(reference)) != tuple(np.shape(samples)):
            raise ValueError(
                f"`samples` and `reference` must have the same shape, got "
                f"{tuple(np.shape(samples))} and {tuple(np.shape(reference))}."
            )
        ref = ref[finite]
    if truth is not None:
        truth = _as_samples(truth, "truth")
        _check_dim(truth, gmm.dim, "truth", "`gmm`")
    if num_truth is not None:
        num_truth = _check_int(num_truth, "num_truth", 1)
    _check_bootstrap(num_bootstrap, level, ci)
    if not (isinstance(sw_p, (int, float)) and math.isfinite(sw_p) and sw_p >= 1):
        raise ValueError(f"`sw_p` must be a finite number ≥ 1, got {sw_p!r}.")
    num_projections = _check_int(num_projections, "num_projections", 1)
    bootstrap_projections = _boot_projections(bootstrap_projections, gmm.dim)
    k = _check_int(k, "k", 1)
    _check_fraction(outlier_quantile, "outlier_quantile")
    min_count = _check_int(min_count, "min_count", 1)
    if nll_threshold is not None and not (
        isinstance(nll_threshold, (int, float)) and math.isfinite(nll_threshold)
    ):
        raise ValueError(f"`nll_threshold` must be a finite number, got {nll_threshold!r}.")

    n = len(x)
    row: dict[str, float] = dict.fromkeys(COLUMNS, _NAN)
    row["n"] = n
    row["nonfinite_rate"] = 1.0 - n / len(x_all)
    attrs = dict(
        seed=seed, num_bootstrap=num_bootstrap, level=level, ci=ci, sw_p=sw_p,
        num_projections=num_projections, bootstrap_projections=bootstrap_projections, k=k,
        outlier_quantile=outlier_quantile, min_count=min_count, noise_floor=noise_floor,
    )  # fmt: skip
    if n == 0:
        row["n_truth"] = 0 if truth is None else len(truth)
        return _frame(row, attrs)

    streams = _seed_sequence(seed).spawn(7)
    ss_truth, ss_floor, ss_sw, ss_end, ss_nll, ss_pr, ss_occ = streams
    t = truth if truth is not None else _draw(gmm, num_truth or n, ss_truth)
    row["n_truth"] = len(t)
    t_floor = _draw(gmm, n, ss_floor) if noise_floor else None

    def put(name: str, est: Estimate) -> None:
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = est

    def rng(ss: np.random.SeedSequence) -> np.random.Generator:
        return np.random.default_rng(ss)

    if ref is not None:
        err = np.linalg.norm(x - ref, axis=1)
        end = _endpoint_summary(err, num_bootstrap, level, ci, rng(ss_end))
        put("endpoint_error_mean", end.mean)
        put("endpoint_error_median", end.median)
        put("endpoint_error_rms", end.rms)

    ss_dirs, ss_sw_boot = ss_sw.spawn(2)
    dirs = _directions(gmm.dim, num_projections, rng(ss_dirs))
    put("sw", _sw_estimate(
        x, t, dirs, float(sw_p), num_bootstrap, bootstrap_projections, level, ci,
        rng(ss_sw_boot), None,
    ))  # fmt: skip

    nll_t = _nll(t, gmm)
    if nll_threshold is None:
        nll_threshold = np.quantile(nll_t, outlier_quantile)
    threshold = float(nll_threshold)
    nll = _nll_summary(_nll(x, gmm), nll_t, threshold, num_bootstrap, level, ci, rng(ss_nll))
    put("nll_mean", nll.mean)
    put("nll_median", nll.median)
    put("outlier_rate", nll.outlier_rate)
    row["nll_threshold"], row["nll_truth_mean"], row["nll_truth_median"] = (
        threshold, nll.truth_mean, nll.truth_median,
    )  # fmt: skip

    method = _resolve_pr_method("auto", gmm.dim)
    radii_t = None
    if n > k and len(t) > k:
        radii_t = _knn_radii(t, k, method, None)
        in_t = _covered(x, t, radii_t, method, None)
        in_x = _covered(t, x, _knn_radii(x, k, method, None), method, None)
        pr = _pr_summary(in_t, in_x, num_bootstrap, level, ci, rng(ss_pr))
        put("precision", pr.precision)
        put("recall", pr.recall)

    occ = _occupancy(x, gmm, min_count, num_bootstrap, level, ci, rng(ss_occ))
    put("occupancy", occ.occupancy)
    put("component_tv", occ.tv)

    if t_floor is not None:
        chunk = max(1, CHUNK_ELEMENTS // (n + len(t)))
        row["sw_floor"] = _sw_point(t_floor, t, dirs, float(sw_p), chunk)
        row["outlier_rate_floor"] = float((_nll(t_floor, gmm) > threshold).mean())
        if radii_t is not None:
            row["precision_floor"] = float(_covered(t_floor, t, radii_t, method, None).mean())
            radii_f = _knn_radii(t_floor, k, method, None)
            row["recall_floor"] = float(_covered(t, t_floor, radii_f, method, None).mean())
        occ_f = _occupancy(t_floor, gmm, min_count, 0, level, ci, None)
        row["occupancy_floor"], row["component_tv_floor"] = occ_f.occupancy.value, occ_f.tv.value
    return _frame(row, attrs)


def _frame(row: dict[str, float], attrs: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame([row], columns=list(COLUMNS))
    df["n"] = df["n"].astype(np.int64)
    df["n_truth"] = df["n_truth"].astype(np.int64)
    df.attrs.update(attrs)
    return df


def noise_floor(
    gmm: GaussianMixture,
    n: int,
    *,
    num_truth: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> pd.DataFrame:
    """Return :func:`evaluate` of ``n`` exact samples against an independent exact truth.

    This is what a perfect sampler scores at sample size ``n`` (with ``num_truth`` truth
    samples, default ``n``): the value below which no difference is measurable. Columns as
    :func:`evaluate` (the endpoint and ``*_floor`` columns are NaN).

    Parameters
    ----------
    gmm : GaussianMixture
    n : int
    num_truth : int, optional
    seed : int
    **kwargs
        Passed to :func:`evaluate` (``num_bootstrap``, ``level``, ``sw_p``, ``k``, …).
    """
    _check_gmm(gmm)
    n = _check_int(n, "n", 1)
    num_truth = n if num_truth is None else _check_int(num_truth, "num_truth", 1)
    ss_x, ss_t, ss_eval = _seed_sequence(seed).spawn(3)
    x, t = _draw(gmm, n, ss_x), _draw(gmm, num_truth, ss_t)
    seed_eval = int(ss_eval.generate_state(1, np.uint32)[0])
    return evaluate(x, gmm, truth=t, seed=seed_eval, noise_floor=False, **kwargs)
