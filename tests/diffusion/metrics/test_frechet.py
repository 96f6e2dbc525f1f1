"""Tests for ``stiffkit.diffusion.metrics.frechet``: the Fréchet distance between fitted Gaussians.

Truth comes from closed forms (commuting covariances), from scipy's general matrix square
root, and from the definition on the sample moments.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from _metric_data import F64, _gen, _np_rng

from stiffkit.diffusion.metrics import frechet_distance, gaussian_frechet_distance
from stiffkit.diffusion.metrics.frechet import _trace_sqrt_product


def _spd(d, rng, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T + (0.0 if rank else 0.1 * np.eye(d))


def _scipy_fd(mu1, c1, mu2, c2):
    covmean = scipy.linalg.sqrtm(c1 @ c2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2)
                 - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("d", [1, 3, 10, 64])
def test_trace_sqrt_matches_scipy_sqrtm(d):
    rng = _np_rng(d)
    c1, c2 = _spd(d, rng), _spd(d, rng)
    expected = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    assert _trace_sqrt_product(c1, c2) == pytest.approx(expected, rel=1e-10)


def test_trace_sqrt_of_singular_covariances():
    # Rank-deficient covariances (dead features): scipy's sqrtm still agrees to ~√eps.
    rng = _np_rng(1)
    c1, c2 = _spd(8, rng, rank=3), _spd(8, rng, rank=5)
    expected = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    assert _trace_sqrt_product(c1, c2) == pytest.approx(expected, rel=1e-6)
    # C^{1/2} C C^{1/2} = C², whose root has trace tr C, exactly up to round-off.
    assert _trace_sqrt_product(c1, c1) == pytest.approx(np.trace(c1), rel=1e-12)


def test_gaussian_fd_closed_form_for_commuting_covariances():
    # Diagonal covariances commute: FD = |μ1 − μ2|² + Σ (√a_i − √b_i)².
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    expected = 1.0 + 4.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    fd = gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert fd == pytest.approx(expected, rel=1e-13)
    # A common rotation keeps it.
    q, _ = np.linalg.qr(_np_rng(0).standard_normal((3, 3)))
    rotated = gaussian_frechet_distance(q @ mu1, q @ np.diag(a) @ q.T,
                                        q @ mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-12)


def test_gaussian_fd_matches_scipy_formula():
    rng = _np_rng(3)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _spd(d, rng), _spd(d, rng)
    assert gaussian_frechet_distance(mu1, c1, mu2, c2) == pytest.approx(
        _scipy_fd(mu1, c1, mu2, c2), rel=1e-10)
    assert gaussian_frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-10)


def test_fd_of_samples_is_fd_of_their_moments():
    rng = _np_rng(4)
    x = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5))
    y = rng.standard_normal((300, 5)) + 0.5
    expected = gaussian_frechet_distance(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T))
    assert frechet_distance(x, y, num_bootstrap=0).value == pytest.approx(expected, rel=1e-12)


def test_fd_of_two_gaussian_samples_approaches_the_closed_form():
    # N(0, diag(1, 4)) vs N((1, 0), diag(4, 1)): FD = 1 + (1 − 2)² + (2 − 1)² = 3. The bias
    # of the estimate is O(d/n): with n = 20000 per set it is well inside 2 %.
    g1, g2 = _gen(0), _gen(1)
    n = 20000
    x = torch.randn(n, 2, generator=g1, dtype=F64) * torch.tensor([1.0, 2.0], dtype=F64)
    y = torch.randn(n, 2, generator=g2, dtype=F64) * torch.tensor([2.0, 1.0], dtype=F64)
    y[:, 0] += 1.0
    est = frechet_distance(x, y, num_bootstrap=100)
    assert est.value == pytest.approx(3.0, rel=0.02)
    assert est.lo <= 3.0 <= est.hi


def test_fd_of_identical_sets_is_zero():
    x = _np_rng(5).standard_normal((400, 20))
    assert frechet_distance(x, x, num_bootstrap=0).value == pytest.approx(0.0, abs=1e-9)
    # Dead features (all-zero columns) change nothing.
    z = np.concatenate([x, np.zeros((400, 7))], axis=1)
    assert frechet_distance(z, z, num_bootstrap=0).value == pytest.approx(0.0, abs=1e-9)


def test_fd_invariances():
    rng = _np_rng(6)
    x = rng.standard_normal((400, 8))
    y = 1.2 * rng.standard_normal((350, 8)) + 0.3
    base = frechet_distance(x, y, num_bootstrap=0).value
    perm = frechet_distance(x[rng.permutation(400)], y[rng.permutation(350)], num_bootstrap=0)
    assert perm.value == pytest.approx(base, rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    shift = rng.standard_normal(8)
    moved = frechet_distance(x @ q + shift, y @ q + shift, num_bootstrap=0)
    assert moved.value == pytest.approx(base, rel=1e-9)
    assert frechet_distance(y, x, num_bootstrap=0).value == pytest.approx(base, rel=1e-10)
    # [n, *dims] inputs are flattened.
    shaped = frechet_distance(x.reshape(400, 2, 4), y.reshape(350, 2, 4), num_bootstrap=0)
    assert shaped.value == pytest.approx(base, rel=1e-12)


def test_fd_interval_covers_estimate_and_is_seeded():
    rng = _np_rng(7)
    x, y = rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 0.4
    est = frechet_distance(x, y, num_bootstrap=100, seed=3)
    assert 0.0 <= est.lo < est.value < est.hi
    assert frechet_distance(x, y, num_bootstrap=100, seed=3) == est
    assert frechet_distance(x, y, num_bootstrap=100, seed=4) != est
    basic = frechet_distance(x, y, num_bootstrap=100, seed=3, ci="basic")
    assert basic.lo <= basic.value <= basic.hi
    off = frechet_distance(x, y, num_bootstrap=0)
    assert off.value == est.value and math.isnan(off.lo) and math.isnan(off.hi)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "`x` needs at least 2"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "features"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "`x` contains NaN"),
        (np.zeros((5, 3)), np.full((5, 3), np.inf), "`y` contains NaN"),
        (np.zeros((0, 3)), np.zeros((5, 3)), "`x` is empty"),
        (np.zeros(5), np.zeros((5, 3)), r"`x` must have shape \[n, \*dims\]"),
    ],
)
def test_fd_rejects_bad_samples(x, y, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(x, y)


def test_fd_rejects_bad_settings():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="num_bootstrap"):
        frechet_distance(x, x, num_bootstrap=-1)
    with pytest.raises(ValueError, match="level"):
        frechet_distance(x, x, level=1.5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), r"`cov1` must have shape \[2, 2\]"),
        ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "`mu1` and `mu2`"),
        ((np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)),
         "`cov1` must be symmetric"),
        ((np.zeros(2), np.eye(2), np.array([np.nan, 0.0]), np.eye(2)), "`mu2` and `cov2`"),
        ((np.zeros((2, 1)), np.eye(2), np.zeros(2), np.eye(2)), r"`mu1` must have shape \[d\]"),
    ],
)
def test_gaussian_fd_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        gaussian_frechet_distance(*args)
