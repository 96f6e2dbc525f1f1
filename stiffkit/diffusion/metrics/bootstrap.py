"""Bootstrap intervals and private random streams: the machinery every metric shares.

A resample is represented by its multiplicity vector (how often each sample is drawn), so
a mean-type statistic costs one matrix product for all resamples. Every random draw comes
from a private generator whose ``numpy.random.SeedSequence`` derives from the caller's
``seed``; the global RNGs of numpy and torch are never touched.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from stiffkit._utils import check_int
from stiffkit.diffusion.metrics._inputs import _check_choice, _check_fraction
from stiffkit.diffusion.mixtures import GaussianMixture
from stiffkit.diffusion.noise import torch_generator

__all__ = ["Estimate"]

#: Confidence level of every interval unless told otherwise.
DEFAULT_LEVEL = 0.95
#: Bootstrap resamples per interval (``0`` switches intervals off: NaN bounds).
DEFAULT_NUM_BOOTSTRAP = 200
CI_METHODS = ("percentile", "basic")

_NAN = float("nan")


class Estimate(NamedTuple):
    """A point estimate and its bootstrap interval (NaN bounds when not bootstrapped)."""

    value: float
    lo: float
    hi: float


class _Bootstrap(NamedTuple):
    """Validated interval settings: resamples (0: none), confidence level, interval kind."""

    num: int
    level: float
    ci: str


def _bootstrap(num_bootstrap: Any, level: Any, ci: Any) -> _Bootstrap:
    """Check the interval arguments and return them as one :class:`_Bootstrap`."""
    num = check_int(num_bootstrap, "num_bootstrap", 0)
    _check_fraction(level, "level")
    _check_choice(ci, "ci", CI_METHODS)
    return _Bootstrap(num, level, ci)


# ---------------------------------------------------------------------- random streams
def _seed_sequence(seed: Any) -> np.random.SeedSequence:
    """Return `seed` (an integer ≥ 0, or a SeedSequence) as a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(check_int(seed, "seed", 0))


def _draw(gmm: GaussianMixture, n: int, ss: np.random.SeedSequence) -> np.ndarray:
    """Draw ``n`` exact samples of ``p_0`` with a private torch generator seeded from ``ss``."""
    gen = torch_generator(ss, device=gmm.means.device)
    # Flattened: an IsotropicMixture samples in its event shape (images: [n, 1, R, R]).
    return gmm.sample(n, 0.0, generator=gen).reshape(n, -1).cpu().numpy()


# ---------------------------------------------------------------------- resampling
def _multiplicities(n: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``[num, n]`` resample multiplicities (row b: how often each sample is drawn)."""
    out = np.empty((num, n))
    for b in range(num):
        out[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def _boot_weights(n: int, boot: _Bootstrap, rng: np.random.Generator | None) -> np.ndarray | None:
    """Return the ``[B, n]`` multiplicities of ``boot.num`` resamples, or None for none."""
    return _multiplicities(n, boot.num, rng) if boot.num > 0 else None


def _interval(value: float, reps: np.ndarray | None, boot: _Bootstrap) -> Estimate:
    """Return the percentile (or basic) bootstrap interval of `value` from replicates."""
    if reps is None or len(reps) == 0 or not math.isfinite(value):
        return Estimate(float(value), _NAN, _NAN)
    q_lo, q_hi = np.quantile(reps, [(1.0 - boot.level) / 2, (1.0 + boot.level) / 2])
    if boot.ci == "basic":  # reflect the replicate spread around the estimate
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


def _mean_estimate(v: np.ndarray, w: np.ndarray | None, boot: _Bootstrap) -> Estimate:
    """Return the mean of `v` with the interval of its resample means (`w`: multiplicities)."""
    reps = None if w is None else w @ v / len(v)
    return _interval(float(v.mean()), reps, boot)
