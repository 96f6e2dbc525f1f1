"""Tests for ``stiffkit.diffusion.metrics.coverage``: kNN precision/recall and occupancy.

Truth comes from unchunked distances and KD-trees agreeing bit for bit, and from behaviour
that any correct implementation must show (mode collapse lowers recall, spreading lowers
precision, a collapsed sampler occupies one component).
"""

import numpy as np
import pytest
import torch
from _metric_data import F64, PR_SAME_BOUND, _gen, _np_rng

from stiffkit.diffusion.metrics import component_occupancy, precision_recall
from stiffkit.diffusion.metrics.coverage import _covered, _knn_radii
from stiffkit.diffusion.mixtures import GaussianMixture, ring_gmm


def test_pr_of_two_truth_draws_is_near_one(ring):
    pr = precision_recall(ring.sample(1000, 0.0, _gen(13)), ring.sample(1000, 0.0, _gen(14)))
    assert pr.precision.value > PR_SAME_BOUND and pr.recall.value > PR_SAME_BOUND
    for est in pr:
        assert est.lo <= est.value <= est.hi


def test_pr_detects_mode_collapse_and_overspreading(ring):
    truth = ring.sample(1000, 0.0, _gen(15))
    one_mode = GaussianMixture(torch.ones(1), ring.means[:1], ring.covs[:1])
    collapsed = precision_recall(one_mode.sample(1000, 0.0, _gen(16)), truth, num_bootstrap=0)
    assert collapsed.precision.value > 0.9 and collapsed.recall.value < 0.2  # recall ≈ 1/8
    wide = ring_gmm(std=0.2).sample(1000, 0.0, _gen(17))
    spread = precision_recall(wide, truth, num_bootstrap=0)
    assert spread.precision.value < 0.5 and spread.recall.value > 0.95


@pytest.mark.parametrize("dim", [2, 5])
def test_pr_chunked_equals_unchunked_and_kdtree(dim):
    x = _np_rng(20).standard_normal((60, dim)) + 1.5  # overlapping, shifted clouds
    t = _np_rng(21).standard_normal((45, dim))
    results = {}
    for method, chunk in [("brute", None), ("brute", 1), ("brute", 7), ("kdtree", None)]:
        rx = _knn_radii(x, 3, method, chunk)
        rt = _knn_radii(t, 3, method, chunk)
        results[method, chunk] = (
            _covered(x, t, rt, method, chunk),  # samples inside the truth's manifold
            _covered(t, x, rx, method, chunk),
        )
        if method == "brute":
            if chunk is None:
                base_radii = (rx, rt)
            else:  # bit-for-bit, whatever the chunking
                assert np.array_equal(rx, base_radii[0]) and np.array_equal(rt, base_radii[1])
    reference = results["brute", None]
    for covered in reference:  # not a trivial all/none case
        assert 0 < covered.sum() < len(covered)
    for got in results.values():
        assert np.array_equal(got[0], reference[0]) and np.array_equal(got[1], reference[1])
    # And the public function agrees across methods.
    kw = dict(num_bootstrap=0)
    assert precision_recall(x, t, method="brute", chunk_size=5, **kw) == precision_recall(
        x, t, method="kdtree", **kw
    )


def test_pr_handles_duplicate_points(ring):
    truth = ring.sample(200, 0.0, _gen(22))
    point = truth[:1].repeat(50, 1)  # a sampler collapsed to one point of the truth
    for method in ("kdtree", "brute"):
        pr = precision_recall(point, truth, method=method, num_bootstrap=0)
        assert pr.precision.value == 1.0  # it sits on a truth point
        assert pr.recall.value == pytest.approx(1 / 200)  # zero radius: covers only itself


def test_occupancy_of_truth_and_of_a_collapsed_sampler(ring):
    truth = component_occupancy(ring.sample(2000, 0.0, _gen(23)), ring)
    assert truth.occupancy.value == 1.0
    assert int(truth.counts.sum()) == 2000
    assert truth.tv.value < 0.05
    one_mode = GaussianMixture(torch.ones(1), ring.means[2:3], ring.covs[2:3])
    collapsed = component_occupancy(one_mode.sample(500, 0.0, _gen(24)), ring, num_bootstrap=20)
    assert collapsed.occupancy.value == 1 / 8
    assert collapsed.counts.tolist() == [0, 0, 500, 0, 0, 0, 0, 0]
    assert collapsed.tv.value == pytest.approx(7 / 8, abs=1e-6)
    at_means = component_occupancy(ring.means, ring, num_bootstrap=0)
    assert at_means.occupancy.value == 1.0
    assert torch.allclose(at_means.soft, torch.full((8,), 1 / 8, dtype=F64))
    assert component_occupancy(ring.means, ring, min_count=2).occupancy.value == 0.0


def test_soft_histogram_is_unbiased_where_components_overlap(small_gmm):
    # E_x[r_k(x)] = w_k exactly under the truth, even for overlapping components.
    occ = component_occupancy(small_gmm.sample(40000, 0.0, _gen(25)), small_gmm, num_bootstrap=0)
    assert torch.allclose(occ.soft, small_gmm.weights, atol=0.01)
