"""Likelihood under the exact mixture: NLL ``−log p_0(x)`` and the outlier rate.

Mean NLL alone can be gamed — over-contraction towards the modes scores *better* than the
truth — so :func:`nll_stats` reports the truth's own NLL beside the samples'.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.metrics._inputs import (
    _as_samples,
    _check_dim,
    _check_fraction,
    _check_threshold,
    _samples_of,
)
from stiffkit.diffusion.metrics.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_NUM_BOOTSTRAP,
    Estimate,
    _boot_weights,
    _Bootstrap,
    _bootstrap,
    _draw,
    _interval,
    _lower_median,
    _mean_estimate,
    _seed_sequence,
    _weighted_lower_medians,
)
from stiffkit.diffusion.mixtures import GaussianMixture

__all__ = ["NLLStats", "nll_stats"]

#: Outlier threshold: this quantile of the truth's NLL.
DEFAULT_OUTLIER_QUANTILE = 0.999


class NLLStats(NamedTuple):
    """NLL ``−log p_0(x)`` under the true mixture, and the truth's own values."""

    mean: Estimate
    median: Estimate
    outlier_rate: Estimate  #: fraction with NLL above ``threshold``
    threshold: float
    truth_mean: float  #: mean NLL of the truth sample (≈ differential entropy of p_0)
    truth_median: float


def _nll(x: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    """Return ``−log p_0(x)`` per row of ``x`` ``[n, d]`` as float64 ``[n]``."""
    xt = torch.from_numpy(x).to(gmm.means.device)
    return (-gmm.log_prob(xt, 0.0)).detach().cpu().numpy()


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
    *below* it is over-contracting, not better (docs/theory/quality.md#why-several-numbers).

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
    x = _samples_of(samples, gmm)
    _check_fraction(outlier_quantile, "outlier_quantile")
    boot = _bootstrap(num_bootstrap, level, ci)
    _check_threshold(threshold, "threshold")
    ss_truth, ss_boot = _seed_sequence(seed).spawn(2)
    if truth is None:
        n_truth = len(x) if num_truth is None else check_int(num_truth, "num_truth", 1)
        t = _draw(gmm, n_truth, ss_truth)
    else:
        t = _as_samples(truth, "truth")
        _check_dim(t, gmm.dim, "truth", "`gmm`")
    nll_t = _nll(t, gmm)
    if threshold is None:
        threshold = float(np.quantile(nll_t, outlier_quantile))
    rng = np.random.default_rng(ss_boot)
    return _nll_summary(_nll(x, gmm), nll_t, float(threshold), boot, rng)


def _nll_summary(
    nll: np.ndarray,
    nll_truth: np.ndarray,
    threshold: float,
    boot: _Bootstrap,
    rng: np.random.Generator,
) -> NLLStats:
    """Summarise sample NLLs ``[n]`` against the truth's ``[m]`` at a fixed outlier threshold."""
    w = _boot_weights(len(nll), boot, rng)
    med_reps = None if w is None else _weighted_lower_medians(nll, w)
    return NLLStats(
        mean=_mean_estimate(nll, w, boot),
        median=_interval(_lower_median(nll), med_reps, boot),
        outlier_rate=_mean_estimate((nll > threshold).astype(np.float64), w, boot),
        threshold=threshold,
        truth_mean=float(nll_truth.mean()),
        truth_median=_lower_median(nll_truth),
    )
