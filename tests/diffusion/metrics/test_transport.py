"""Tests for ``stiffkit.diffusion.metrics.transport``: sliced Wasserstein and endpoint error.

Truth comes from closed forms (sliced Wasserstein of a shifted cloud, hand-computed norms),
then from independent computations (explicit resample-and-sort).
"""

import math

import numpy as np
import pytest
import torch
from _metric_data import EXACT_RTOL, F64, _gen, _np_rng

from stiffkit.diffusion.metrics import endpoint_error, sliced_wasserstein
from stiffkit.diffusion.metrics.transport import _directions, _sw_point, _sw_replicates
from stiffkit.diffusion.mixtures import tree_gmm


@pytest.mark.parametrize("p", [1, 2])
def test_sw_zero_for_identical_sets(p):
    x = torch.randn(300, 2, generator=_gen(0), dtype=F64)
    assert sliced_wasserstein(x, x, p=p, num_bootstrap=0).value == 0.0
    # Same empirical measure at unequal sizes: every point twice.
    assert sliced_wasserstein(x, torch.cat([x, x]), p=p, num_bootstrap=0).value == 0.0


@pytest.mark.parametrize(
    ("dim", "p", "expected_over_norm", "rtol"),
    [
        # 2-D, stratified directions: E cos² = 1/2 exactly, E|cos| = 2/π up to O(1/L²).
        (2, 2, math.sqrt(0.5), 1e-10),
        (2, 1, 2 / math.pi, 1e-4),
        # 3-D, independent directions: E cos² = 1/3, E|cos| = 1/2; L = 4096 gives a Monte
        # Carlo relative std of 1.4 % (p = 2) and 1.1 % (p = 1); 5 % is ~4 std.
        (3, 2, math.sqrt(1 / 3), 0.05),
        (3, 1, 0.5, 0.05),
    ],
)
def test_sw_of_shifted_cloud_matches_closed_form(dim, p, expected_over_norm, rtol):
    # y = x + a: every projection shifts by ⟨a, θ⟩, so W_p(θ) = |⟨a, θ⟩| exactly and
    # SW_2 = ‖a‖ (E cos²)^{1/2}, SW_1 = ‖a‖ E|cos|.
    x = torch.randn(200, dim, generator=_gen(1), dtype=F64)
    a = torch.linspace(0.3, -0.7, dim, dtype=F64)
    sw = sliced_wasserstein(x, x + a, p=p, num_projections=4096, num_bootstrap=0, seed=3)
    assert sw.value == pytest.approx(float(a.norm()) * expected_over_norm, rel=rtol)


def test_sw_unequal_sizes_equal_the_expanded_equal_size_distance():
    # The empirical measure of n points equals that of each point repeated m times, so
    # n vs m points must give the same SW as the nm vs nm expansion.
    x = torch.randn(6, 2, generator=_gen(2), dtype=F64)
    y = torch.randn(4, 2, generator=_gen(3), dtype=F64) + 0.5
    for p in (1, 2, 3):
        direct = sliced_wasserstein(x, y, p=p, num_bootstrap=0).value
        expanded = sliced_wasserstein(
            x.repeat_interleave(4, 0), y.repeat_interleave(6, 0), p=p, num_bootstrap=0
        ).value
        assert direct == pytest.approx(expanded, rel=EXACT_RTOL)


def test_sw_is_symmetric_scales_linearly_and_ignores_chunking():
    x = torch.randn(500, 2, generator=_gen(4), dtype=F64)
    y = 1.3 * torch.randn(350, 2, generator=_gen(5), dtype=F64) + 0.2
    kw = dict(num_bootstrap=0, seed=7)
    base = sliced_wasserstein(x, y, **kw).value
    assert base > 0.1
    assert sliced_wasserstein(y, x, **kw).value == pytest.approx(base, rel=EXACT_RTOL)
    assert sliced_wasserstein(3 * x, 3 * y, **kw).value == pytest.approx(3 * base, rel=EXACT_RTOL)
    chunked = sliced_wasserstein(x, y, chunk_size=1, **kw).value
    assert chunked == pytest.approx(base, rel=EXACT_RTOL)


def test_sw_floor_is_small_and_decreases_with_n(tree):
    # Two independent exact draws of tree A. The 1-D W_2 between empirical measures decays
    # like n^{-1/2}; measured SW_2 ≈ 0.018 at 2048 and 0.0065 at 16384.
    def floor(n, seed):
        a, b = tree.sample(n, 0.0, _gen(seed)), tree.sample(n, 0.0, _gen(seed + 100))
        return sliced_wasserstein(a, b, num_bootstrap=0).value

    small = np.mean([floor(512, s) for s in range(3)])
    large = np.mean([floor(4096, s) for s in range(3)])
    assert large < 0.02
    assert small > 1.8 * large  # √8 ≈ 2.8 expected
    # A genuinely different distribution (class B) is far above the floor.
    other = tree_gmm("B").sample(4096, 0.0, _gen(9))
    mine = tree.sample(4096, 0.0, _gen(8))
    assert sliced_wasserstein(mine, other, num_bootstrap=0).value > 20 * large


def test_sw_bootstrap_replicates_equal_explicit_resample_and_sort():
    # The multiplicity trick must reproduce "resample with replacement, project, sort".
    x = _np_rng(0).standard_normal((40, 3))
    y = _np_rng(1).standard_normal((25, 3)) + 0.3
    dirs = _directions(3, 5, _np_rng(2))
    for p in (1.0, 2.0):
        value, reps = _sw_replicates(x, y, dirs, p, 30, _np_rng(3))
        assert value == pytest.approx(_sw_point(x, y, dirs, p, 5), rel=EXACT_RTOL)
        rng = _np_rng(3)  # same draw order: x's indices, then y's, per replicate
        for rep in reps:
            ix, iy = rng.integers(0, 40, 40), rng.integers(0, 25, 25)
            assert rep == pytest.approx(_sw_point(x[ix], y[iy], dirs, p, 5), rel=EXACT_RTOL)


def test_sw_interval_brackets_estimate_and_is_seeded():
    x = torch.randn(1000, 2, generator=_gen(6), dtype=F64)
    y = torch.randn(1000, 2, generator=_gen(7), dtype=F64) + torch.tensor([0.5, 0.0], dtype=F64)
    est = sliced_wasserstein(x, y, seed=1)
    assert est.lo < est.value < est.hi
    assert sliced_wasserstein(x, y, seed=1) == est
    assert sliced_wasserstein(x, y, seed=2) != est


def test_endpoint_error_equals_hand_computed_norms():
    x = torch.randn(10, 2, 3, generator=_gen(26), dtype=F64)
    ref = torch.randn(10, 2, 3, generator=_gen(27), dtype=F64)
    err = torch.sqrt(((x - ref) ** 2).sum(dim=(1, 2)))  # over all non-batch dims
    res = endpoint_error(x, ref, num_bootstrap=0)
    assert torch.allclose(res.per_sample, err, rtol=EXACT_RTOL)
    assert res.mean.value == pytest.approx(float(err.mean()), rel=EXACT_RTOL)
    # the lower median of an even count, as torch.median
    assert res.median.value == pytest.approx(float(err.median()), rel=EXACT_RTOL)
    assert res.median.value != pytest.approx(float(err.sort().values[5]), rel=1e-6)
    assert res.rms.value == pytest.approx(float(err.square().mean().sqrt()), rel=EXACT_RTOL)
    # numpy input gives the same answer
    assert endpoint_error(x.numpy(), ref.numpy(), num_bootstrap=0).mean == res.mean
