"""Coverage of the truth: kNN precision / recall, and which mixture components are reached.

* :func:`precision_recall` — kNN precision/recall (Kynkäänniemi et al., 2019): are the
  samples plausible, and is the truth covered?
* :func:`component_occupancy` — the fraction of mixture components the samples reach, and
  the total variation between their soft histogram and the weights.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.metrics._inputs import (
    CHUNK_ELEMENTS,
    _as_samples,
    _check_choice,
    _check_dim,
    _samples_of,
)
from stiffkit.diffusion.metrics.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_NUM_BOOTSTRAP,
    Estimate,
    _boot_weights,
    _Bootstrap,
    _bootstrap,
    _interval,
    _mean_estimate,
    _seed_sequence,
)
from stiffkit.diffusion.mixtures import GaussianMixture

__all__ = ["Occupancy", "PrecisionRecall", "component_occupancy", "precision_recall"]

#: Neighbourhood size of kNN precision/recall (Kynkäänniemi et al. use k = 3).
DEFAULT_K = 3
#: A component is occupied when at least this many samples are assigned to it.
DEFAULT_MIN_COUNT = 1
#: Up to this dimension precision/recall uses KD-trees; above it, chunked brute force.
KDTREE_MAX_DIM = 8
#: Up to this dimension brute-force distances are formed from coordinate differences
#: (exact, independent of chunking); above it by the Gram expansion ``|a|² + |b|² − 2a·b``.
DIRECT_DIM_MAX = 16
PR_METHODS = ("auto", "kdtree", "brute")


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
    k = check_int(k, "k", 1)
    for arr, name in ((x, "samples"), (t, "truth")):
        if len(arr) <= k:
            raise ValueError(f"`{name}` needs more than k = {k} points, got {len(arr)}.")
    method = _resolve_pr_method(method, x.shape[1])
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
    boot = _bootstrap(num_bootstrap, level, ci)
    rng = np.random.default_rng(_seed_sequence(seed))
    in_truth = _covered(x, t, _knn_radii(t, k, method, chunk_size), method, chunk_size)
    in_samples = _covered(t, x, _knn_radii(x, k, method, chunk_size), method, chunk_size)
    return _pr_summary(in_truth, in_samples, boot, rng)


def _pr_summary(
    in_truth: np.ndarray, in_samples: np.ndarray, boot: _Bootstrap, rng: np.random.Generator
) -> PrecisionRecall:
    """Return precision and recall from the coverage flags ``[n]`` and ``[m]``."""
    w_x = _boot_weights(len(in_truth), boot, rng)
    w_t = _boot_weights(len(in_samples), boot, rng)
    return PrecisionRecall(
        precision=_mean_estimate(in_truth.astype(np.float64), w_x, boot),
        recall=_mean_estimate(in_samples.astype(np.float64), w_t, boot),
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
        See the package notes (:mod:`stiffkit.diffusion.metrics`) on the occupancy interval.

    Returns
    -------
    Occupancy
    """
    x = _samples_of(samples, gmm)
    min_count = check_int(min_count, "min_count", 1)
    boot = _bootstrap(num_bootstrap, level, ci)
    rng = np.random.default_rng(_seed_sequence(seed))
    return _occupancy(x, gmm, min_count, boot, rng)


def _occupancy(
    x: np.ndarray,
    gmm: GaussianMixture,
    min_count: int,
    boot: _Bootstrap,
    rng: np.random.Generator | None,
) -> Occupancy:
    """Return the occupancy of ``x`` ``[n, d]`` (``rng`` may be None when not resampling)."""
    n, k = len(x), gmm.num_components
    w = _boot_weights(n, boot, rng)  # [B, n]
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
        occupancy=_interval(float((counts >= min_count).mean()), occ_reps, boot),
        tv=_interval(float(0.5 * np.abs(soft / n - weights).sum()), tv_reps, boot),
        counts=torch.from_numpy(counts),
        soft=torch.from_numpy(soft / n),
    )
