"""Tests for ``stiffkit.diffusion.metrics.bootstrap``: intervals, resample medians, seeding."""

import math

import numpy as np
import pytest
import torch
from _metric_data import F64, _gen, _np_rng

from stiffkit.diffusion.metrics import endpoint_error
from stiffkit.diffusion.metrics.bootstrap import (
    _Bootstrap,
    _draw,
    _interval,
    _multiplicities,
    _seed_sequence,
    _weighted_lower_medians,
)
from stiffkit.diffusion.mixtures import ring_gmm


def test_bootstrap_interval_brackets_estimate_shrinks_with_n_and_is_seeded():
    def run(n, seed=0):
        x = torch.randn(n, 2, generator=_gen(n), dtype=F64)
        return endpoint_error(x, torch.zeros_like(x), seed=seed)

    small, large = run(250), run(4000)
    for res in (small, large):
        for est in (res.mean, res.median, res.rms):
            assert est.lo < est.value < est.hi
    width = lambda e: e.hi - e.lo  # noqa: E731
    assert width(large.mean) < 0.5 * width(small.mean)  # 1/√16 = 0.25 expected
    again = run(250)
    assert (again.mean, again.median, again.rms) == (small.mean, small.median, small.rms)
    assert run(250, seed=1).mean != small.mean


def test_weighted_median_replicates_equal_explicit_resamples():
    v = _np_rng(30).standard_normal(17)
    w = _multiplicities(17, 25, _np_rng(31))
    got = _weighted_lower_medians(v, w)
    for row, med in zip(w, got, strict=True):
        resample = np.repeat(v, row.astype(int))
        assert med == float(torch.median(torch.from_numpy(resample)))


def test_basic_interval_reflects_the_percentile_interval():
    reps = _np_rng(32).standard_normal(500) + 1.0
    pct = _interval(0.7, reps, _Bootstrap(500, 0.9, "percentile"))
    basic = _interval(0.7, reps, _Bootstrap(500, 0.9, "basic"))
    assert pct.lo == pytest.approx(np.quantile(reps, 0.05), rel=1e-15)
    assert (basic.lo, basic.hi) == pytest.approx((1.4 - pct.hi, 1.4 - pct.lo), rel=1e-15)
    for value, r in ((0.7, None), (0.7, reps[:0]), (math.nan, reps)):
        est = _interval(value, r, _Bootstrap(500, 0.9, "percentile"))
        assert math.isnan(est.lo) and math.isnan(est.hi)


def test_seed_sequence_and_truth_draws():
    ss = np.random.SeedSequence(5)
    assert _seed_sequence(ss) is ss
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="`seed`"):
            _seed_sequence(bad)
    ring = ring_gmm()
    # A truth draw seeds torch with the first 64-bit word of the stream, shifted to 63 bits.
    drawn = _draw(ring, 50, np.random.SeedSequence(5).spawn(1)[0])
    seed = int(np.random.SeedSequence(5).spawn(1)[0].generate_state(1, np.uint64)[0] >> 1)
    expected = ring.sample(50, 0.0, generator=torch.Generator().manual_seed(seed)).numpy()
    assert np.array_equal(drawn, expected)
