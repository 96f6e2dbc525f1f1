"""Tests for ``stiffkit.diffusion.metrics.likelihood``: NLL under the exact mixture, outliers.

Truth comes from scipy's Gaussian log-pdf and the entropy of a Gaussian; over-contraction
must beat the truth's NLL (why the truth's value is reported).
"""

import math

import numpy as np
import pytest
import torch
from _metric_data import F64, _gen
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from stiffkit.diffusion.metrics import nll_stats
from stiffkit.diffusion.mixtures import GaussianMixture


def _scipy_nll(gmm: GaussianMixture, x: np.ndarray) -> np.ndarray:
    logs = [
        math.log(w) + multivariate_normal(mean=m, cov=c).logpdf(x)
        for w, m, c in zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.covs.numpy(), strict=True)
    ]
    return -logsumexp(np.stack(logs, axis=1), axis=1)


def test_nll_matches_scipy_mixture_logpdf(small_gmm):
    x = 1.5 * torch.randn(51, 2, generator=_gen(10), dtype=F64)
    expected = _scipy_nll(small_gmm, x.numpy())
    stats = nll_stats(x, small_gmm, num_bootstrap=0)
    assert stats.mean.value == pytest.approx(expected.mean(), rel=1e-10)
    assert stats.median.value == pytest.approx(np.median(expected), rel=1e-10)  # n odd


def test_nll_of_truth_is_the_gaussian_entropy():
    # For one Gaussian, E[−log p] = ½ log det(2πe Σ); NLL = const + χ²_2/2 has std 1, so the
    # mean of 20000 samples is within 0.007 (1 std) of it.
    cov = torch.tensor([[[0.3, 0.1], [0.1, 0.2]]], dtype=F64)
    gmm = GaussianMixture(torch.ones(1), torch.zeros(1, 2, dtype=F64), cov)
    entropy = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov[0].numpy()))
    stats = nll_stats(gmm.sample(20000, 0.0, _gen(11)), gmm, num_truth=20000, num_bootstrap=50)
    assert stats.truth_mean == pytest.approx(entropy, abs=0.03)
    assert stats.mean.value == pytest.approx(entropy, abs=0.03)
    assert stats.mean.lo < stats.mean.value < stats.mean.hi


def test_outlier_rate_is_zero_at_modes_and_one_far_away(small_gmm):
    at_modes = small_gmm.means.repeat(10, 1)
    assert nll_stats(at_modes, small_gmm, num_bootstrap=0).outlier_rate.value == 0.0
    far = torch.full((20, 2), 50.0, dtype=F64)
    stats = nll_stats(far, small_gmm, num_bootstrap=20)
    assert stats.outlier_rate == (1.0, 1.0, 1.0)
    # A fixed threshold overrides the quantile.
    fixed = nll_stats(at_modes, small_gmm, threshold=-100.0, num_bootstrap=0)
    assert fixed.outlier_rate.value == 1.0


def test_overcontracted_samples_beat_the_truths_nll(ring):
    # docs/theory/quality.md#why-several-numbers: shrinking samples toward the modes lowers
    # mean NLL below the truth's —
    # exactly why the truth's value is reported beside it.
    truth = ring.sample(2000, 0.0, _gen(12))
    modes = ring.means[ring.responsibilities(truth, 0.0).argmax(1)]
    shrunk = modes + 0.3 * (truth - modes)
    stats = nll_stats(shrunk, ring, truth=truth, num_bootstrap=50)
    # Per sample the Mahalanobis term χ²_2/2 (mean 1) shrinks by 0.3² : ≈ 0.91 nats better.
    assert stats.mean.hi < stats.truth_mean - 0.5
