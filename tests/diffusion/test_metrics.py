"""Tests for ``stiffkit.diffusion.metrics``: sample-quality metrics against exact mixtures.

Truth comes from closed forms first (sliced Wasserstein of a shifted cloud, the entropy of a
Gaussian, hand-computed norms), then from independent computations (scipy's Gaussian
log-pdf, explicit resample-and-sort, unchunked distances), then from behaviour that any
correct implementation must show (mode collapse lowers recall, spreading lowers precision).
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from stiffkit.diffusion import metrics as M
from stiffkit.diffusion.metrics import (
    COLUMNS,
    component_occupancy,
    endpoint_error,
    evaluate,
    nll_stats,
    noise_floor,
    precision_recall,
    sliced_wasserstein,
)
from stiffkit.diffusion.mixtures import GaussianMixture, ring_gmm, tree_gmm

F64 = torch.float64
#: Agreement of two float64 evaluations of the same formula (different summation orders).
EXACT_RTOL = 1e-12
#: kNN precision/recall (k = 3) of two independent 1000-point ring draws: mean ≈ 0.967,
#: minimum over 20 seed pairs 0.947 (measured); the bound leaves room for seed changes.
PR_SAME_BOUND = 0.93


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _np_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def ring() -> GaussianMixture:
    return ring_gmm()


@pytest.fixture(scope="module")
def tree() -> GaussianMixture:
    return tree_gmm("A")


@pytest.fixture(scope="module")
def small_gmm() -> GaussianMixture:
    """Three overlapping anisotropic 2-D components with unequal weights."""
    means = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0]], dtype=F64)
    covs = torch.tensor(
        [[[0.2, 0.05], [0.05, 0.1]], [[0.05, -0.02], [-0.02, 0.3]], [[0.1, 0.0], [0.0, 0.1]]],
        dtype=F64,
    )
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, covs)


# ---------------------------------------------------------------------- sliced Wasserstein
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
    dirs = M._directions(3, 5, _np_rng(2))
    for p in (1.0, 2.0):
        value, reps = M._sw_replicates(x, y, dirs, p, 30, _np_rng(3))
        assert value == pytest.approx(M._sw_point(x, y, dirs, p, 5), rel=EXACT_RTOL)
        rng = _np_rng(3)  # same draw order: x's indices, then y's, per replicate
        for rep in reps:
            ix, iy = rng.integers(0, 40, 40), rng.integers(0, 25, 25)
            assert rep == pytest.approx(M._sw_point(x[ix], y[iy], dirs, p, 5), rel=EXACT_RTOL)


def test_sw_interval_brackets_estimate_and_is_seeded():
    x = torch.randn(1000, 2, generator=_gen(6), dtype=F64)
    y = torch.randn(1000, 2, generator=_gen(7), dtype=F64) + torch.tensor([0.5, 0.0], dtype=F64)
    est = sliced_wasserstein(x, y, seed=1)
    assert est.lo < est.value < est.hi
    assert sliced_wasserstein(x, y, seed=1) == est
    assert sliced_wasserstein(x, y, seed=2) != est


# ---------------------------------------------------------------------- NLL
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
    # DESIGN.md §6: shrinking samples toward the modes lowers mean NLL below the truth's —
    # exactly why the truth's value is reported beside it.
    truth = ring.sample(2000, 0.0, _gen(12))
    modes = ring.means[ring.responsibilities(truth, 0.0).argmax(1)]
    shrunk = modes + 0.3 * (truth - modes)
    stats = nll_stats(shrunk, ring, truth=truth, num_bootstrap=50)
    # Per sample the Mahalanobis term χ²_2/2 (mean 1) shrinks by 0.3² : ≈ 0.91 nats better.
    assert stats.mean.hi < stats.truth_mean - 0.5


# ---------------------------------------------------------------------- precision / recall
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
        rx = M._knn_radii(x, 3, method, chunk)
        rt = M._knn_radii(t, 3, method, chunk)
        results[method, chunk] = (
            M._covered(x, t, rt, method, chunk),  # samples inside the truth's manifold
            M._covered(t, x, rx, method, chunk),
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


# ---------------------------------------------------------------------- occupancy
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


# ---------------------------------------------------------------------- endpoint error
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
    w = M._multiplicities(17, 25, _np_rng(31))
    got = M._weighted_lower_medians(v, w)
    for row, med in zip(w, got, strict=True):
        resample = np.repeat(v, row.astype(int))
        assert med == float(torch.median(torch.from_numpy(resample)))


# ---------------------------------------------------------------------- evaluate
def test_evaluate_returns_one_documented_finite_row(ring):
    x = ring.sample(600, 0.0, _gen(40))
    kw = dict(reference=x + 0.01, num_bootstrap=50, seed=3)
    df = evaluate(x, ring, **kw)
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    assert tuple(df.columns) == COLUMNS
    assert df.attrs["sw_p"] == 2 and df.attrs["k"] == 3
    row = df.iloc[0]
    assert np.isfinite(row.to_numpy(dtype=float)).all()
    assert row["n"] == 600 and row["n_truth"] == 600 and row["nonfinite_rate"] == 0.0
    assert row["endpoint_error_mean"] == pytest.approx(0.01 * math.sqrt(2))
    for name in ("nll_mean", "precision", "recall"):
        assert row[f"{name}_lo"] <= row[name] <= row[f"{name}_hi"]
    # An exact sampler sits at the floor and at the truth's NLL.
    assert row["sw"] < 3 * row["sw_floor"]
    assert abs(row["nll_mean"] - row["nll_truth_mean"]) < 0.2
    pd.testing.assert_frame_equal(df, evaluate(x, ring, **kw))  # deterministic under a seed


def test_evaluate_drops_and_reports_nonfinite_samples(ring):
    x = ring.sample(400, 0.0, _gen(41))
    ref = x + 0.02
    bad = x.clone()
    bad[::10, 0] = float("nan")
    bad[5, 1] = float("inf")
    keep = torch.isfinite(bad).all(dim=1)
    df = evaluate(bad, ring, reference=ref, num_bootstrap=20, seed=4)
    assert df["nonfinite_rate"][0] == pytest.approx(41 / 400)
    clean = evaluate(bad[keep], ring, reference=ref[keep], num_bootstrap=20, seed=4)
    cols = [c for c in COLUMNS if c != "nonfinite_rate"]
    pd.testing.assert_frame_equal(df[cols], clean[cols])

    diverged = evaluate(torch.full((30, 2), float("nan"), dtype=F64), ring, num_bootstrap=20)
    assert diverged["n"][0] == 0 and diverged["nonfinite_rate"][0] == 1.0
    assert diverged[["sw", "nll_mean", "precision"]].isna().all(axis=None)


def test_evaluate_with_given_truth_and_without_floor(ring):
    x = ring.sample(300, 0.0, _gen(42))
    truth = ring.sample(900, 0.0, _gen(43))
    df = evaluate(x, ring, truth=truth, noise_floor=False, num_bootstrap=0)
    assert df["n_truth"][0] == 900
    assert df[[c for c in COLUMNS if c.endswith("_floor")]].isna().all(axis=None)
    assert df[["sw_lo", "sw_hi"]].isna().all(axis=None)  # no resamples, no interval
    # Other directions than sliced_wasserstein's default seed, but 2-D stratified ones agree.
    direct = sliced_wasserstein(x, truth, num_bootstrap=0).value
    assert df["sw"][0] == pytest.approx(direct, rel=0.02)


def test_noise_floor_is_truth_against_truth(ring):
    floor = noise_floor(ring, 500, num_bootstrap=20, seed=5)
    assert tuple(floor.columns) == COLUMNS and floor["n"][0] == 500
    assert floor["precision"][0] > PR_SAME_BOUND - 0.02 and floor["occupancy"][0] == 1.0
    assert floor["endpoint_error_mean"].isna()[0]
    pd.testing.assert_frame_equal(floor, noise_floor(ring, 500, num_bootstrap=20, seed=5))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(samples=[[0.0, 1.0]]), TypeError, "`samples`"),
        (dict(samples=torch.zeros(5, 3, dtype=F64)), ValueError, "`samples`"),
        (dict(samples=torch.zeros(0, 2, dtype=F64)), ValueError, "`samples` is empty"),
        (dict(samples=torch.zeros(5, dtype=F64)), ValueError, "`samples`"),
        (dict(samples=torch.zeros(5, 2, dtype=torch.complex128)), TypeError, "`samples`"),
        (dict(reference=torch.zeros(4, 2, dtype=F64)), ValueError, "`reference`"),
        (dict(reference=torch.full((5, 2), float("nan"), dtype=F64)), ValueError, "`reference`"),
        (dict(truth=torch.zeros(5, 3, dtype=F64)), ValueError, "`truth`"),
        (dict(gmm="ring"), TypeError, "`gmm`"),
        (dict(level=1.5), ValueError, "`level`"),
        (dict(ci="bca"), ValueError, "`ci`"),
        (dict(num_bootstrap=-1), ValueError, "`num_bootstrap`"),
        (dict(sw_p=0.5), ValueError, "`sw_p`"),
        (dict(k=0), ValueError, "`k`"),
        (dict(seed=-3), ValueError, "`seed`"),
    ],
)
def test_evaluate_rejects_bad_input(ring, kwargs, error, match):
    args = dict(samples=torch.zeros(5, 2, dtype=F64), gmm=ring)
    args.update(kwargs)
    samples, gmm = args.pop("samples"), args.pop("gmm")
    with pytest.raises(error, match=match):
        evaluate(samples, gmm, num_bootstrap=args.pop("num_bootstrap", 0), **args)


def test_metric_functions_reject_nonfinite_and_mismatched_input(ring):
    x = torch.zeros(10, 2, dtype=F64)
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="`x` contains NaN"):
        sliced_wasserstein(bad, x)
    with pytest.raises(ValueError, match="`x` has 2 features"):
        sliced_wasserstein(x, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="`samples` and `reference` must have the same shape"):
        endpoint_error(x, x[:5])
    with pytest.raises(ValueError, match="more than k = 3"):
        precision_recall(x[:3], x)
    with pytest.raises(ValueError, match="`method`"):
        precision_recall(x, x, method="ball")
    with pytest.raises(ValueError, match="`min_count`"):
        component_occupancy(x, ring, min_count=0)
    with pytest.raises(ValueError, match="`threshold`"):
        nll_stats(x, ring, threshold=float("inf"))
