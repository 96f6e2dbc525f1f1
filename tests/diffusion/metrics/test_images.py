"""Tests for ``stiffkit.diffusion.metrics.images``: FD-digits, feature precision/recall, class
consistency.

Truth comes from constructed cases (identical sets, disjoint digit classes), from the
classifier's recorded held-out accuracy, and from the generic metrics on explicit features.
"""

import math

import numpy as np
import pytest
import torch
from _metric_data import F64, _gen

from stiffkit.diffusion.metrics import (
    class_consistency,
    digits_precision_recall,
    fd_digits,
    frechet_distance,
    image_features,
    precision_recall,
    predict_digits,
)
from stiffkit.diffusion.metrics.classifier import digits_classifier, digits_split
from stiffkit.diffusion.mixtures import digits_images


@pytest.fixture(scope="module")
def real():
    return digits_images()


def test_features_shape_layouts_and_resolutions(real):
    images = real[0][:50]
    f = image_features(images)
    assert f.shape == (50, 64) and f.dtype == np.float64
    assert np.array_equal(image_features(images.reshape(50, 64).numpy()), f)
    # 16 × 16 images are pooled back to 8 × 8 first.
    up = torch.nn.functional.interpolate(images, size=(16, 16), mode="nearest")
    np.testing.assert_allclose(image_features(up), f, rtol=1e-12, atol=1e-12)
    assert predict_digits(images).shape == (50,)
    with pytest.raises(TypeError, match="`classifier`"):
        image_features(images, classifier="shipped")


def test_fd_digits_of_identical_and_permuted_sets_is_zero(real):
    images = real[0][:400]
    assert fd_digits(images, images, num_bootstrap=0).value == pytest.approx(0.0, abs=1e-8)
    perm = torch.randperm(400, generator=_gen(0))
    assert fd_digits(images[perm], images, num_bootstrap=0).value == pytest.approx(0.0, abs=1e-8)


def test_fd_digits_is_the_fd_of_the_features(real):
    x, y = real[0][:300], real[0][300:700]
    expected = frechet_distance(image_features(x), image_features(y), num_bootstrap=50, seed=2)
    assert fd_digits(x, y, num_bootstrap=50, seed=2) == expected


def test_fd_digits_separates_classes_and_covers_its_estimate(real):
    x, y = real
    same = fd_digits(x[y == 3][:80], x[y == 3][80:], num_bootstrap=0).value
    est = fd_digits(x[y == 3], x[y == 8], num_bootstrap=100)
    assert est.value > 10 * same  # the within-class value at these sizes is mostly bias
    assert est.lo < est.value < est.hi


def test_precision_recall_of_identical_and_disjoint_sets(real):
    x, y = real
    same = digits_precision_recall(x[:300], x[:300], num_bootstrap=0)
    assert same.precision.value == 1.0 and same.recall.value == 1.0
    # Zeros and ones are far apart in feature space: no sample lies in the other manifold.
    far = digits_precision_recall(x[y == 0], x[y == 1], num_bootstrap=0)
    assert far.precision.value == 0.0 and far.recall.value == 0.0
    # Same as the generic kNN precision/recall on the features.
    a, b = x[:200], x[200:500]
    expected = precision_recall(image_features(a), image_features(b), method="brute", seed=1)
    assert digits_precision_recall(a, b, seed=1) == expected


def test_class_consistency_of_held_out_real_digits_is_the_held_out_accuracy(real):
    x, y = real
    test = digits_split()[1]
    est = class_consistency(x[test], y[test], num_bootstrap=200)
    recorded = digits_classifier().metadata["held_out_accuracy"]["8"]
    assert abs(est.value - recorded) <= 1.0 / len(test) + 1e-12
    assert est.value >= 0.95
    assert est.lo <= est.value <= est.hi
    # An int label: all samples conditioned on the same digit; wrong labels score ~0.
    sevens = x[test][y[test] == 7]
    assert class_consistency(sevens, 7, num_bootstrap=0).value >= 0.95
    assert class_consistency(sevens, 1, num_bootstrap=0).value <= 0.05
    assert math.isnan(class_consistency(sevens, 7, num_bootstrap=0).lo)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros(3, dtype=np.int64), r"`labels` must have shape \[5\]"),
        (np.zeros(5), "`labels` must be an integer"),
        (np.full(5, 10), "`labels` must be digits 0..9"),
        (-1, "`labels` must be digits 0..9"),
        (True, "`labels` must be an integer"),
    ],
)
def test_class_consistency_rejects_bad_labels(real, labels, match):
    with pytest.raises(ValueError, match=match):
        class_consistency(real[0][:5], labels)


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [(fd_digits, {}), (digits_precision_recall, {})],
)
def test_image_metrics_reject_bad_images(real, fn, kwargs):
    good = real[0][:20]
    with pytest.raises(ValueError, match="`samples` contains NaN"):
        fn(torch.full((20, 1, 8, 8), float("nan"), dtype=F64), good, **kwargs)
    with pytest.raises(ValueError, match="`reference` must hold square images"):
        fn(good, torch.zeros(20, 1, 12, 12), **kwargs)
    with pytest.raises(ValueError, match="`samples` is empty"):
        fn(torch.zeros(0, 1, 8, 8), good, **kwargs)
    with pytest.raises(ValueError, match="`samples` needs"):
        fn(good[:1], good, **kwargs)
