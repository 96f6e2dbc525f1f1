"""Tests for ``stiffkit.diffusion.metrics.image_evaluation``: every image metric as one row.

Truth comes from perfect samplers (exact draws of the digits mixture, whose metrics must sit
at their floors), from deliberately bad ones, and from the per-metric functions; the
pixel-space metrics of :mod:`~stiffkit.diffusion.metrics.transport` are checked on
image-shaped inputs here too.
"""

import math

import numpy as np
import pytest
import torch
from _metric_data import F64, _gen

from stiffkit.diffusion.metrics import (
    IMAGE_COLUMNS,
    MetricSettings,
    endpoint_error,
    evaluate_images,
    sliced_wasserstein,
)
from stiffkit.diffusion.mixtures import digits_images, digits_mixture

FAST = {"num_bootstrap": 50, "num_projections": 32}
N = 300


@pytest.fixture(scope="module")
def mix():
    return digits_mixture(8, 0.1)


@pytest.fixture(scope="module")
def refs():
    """Cheap references: one-digit mixtures (8 × 8 and 16 × 16) and 100 real images."""
    return {"mix16": digits_mixture(16, 0.0, classes=[0, 1]), "real": digits_images()[0][:100],
            "mix3": digits_mixture(8, 0.0, classes=3)}


@pytest.fixture(scope="module")
def conditional(mix):
    """Exact conditional draws: 30 images of each digit, and their labels."""
    labels = torch.arange(N) // (N // 10)
    images = torch.cat([mix.conditional(c).sample(N // 10, 0.0, _gen(c)) for c in range(10)])
    return images, labels


@pytest.fixture(scope="module")
def perfect(mix, conditional):
    images, labels = conditional
    ref = images + 1e-3 * torch.randn(images.shape, generator=_gen(99), dtype=F64)
    return evaluate_images(images, mix, labels=labels, endpoint_reference=ref, seed=1, **FAST)


def test_row_has_every_column(perfect):
    assert tuple(perfect.columns) == IMAGE_COLUMNS and len(perfect) == 1
    row = perfect.iloc[0]
    assert row["n"] == N and row["n_truth"] == N and row["n_floor"] == N
    assert row["nonfinite_rate"] == 0.0
    assert not perfect.isna().any(axis=None)
    assert perfect.attrs["reference"] == "mixture" and perfect.attrs["num_bootstrap"] == 50


def test_perfect_sampler_sits_at_its_floors(perfect):
    row = perfect.iloc[0]
    # Floors: small and positive (finite-sample noise of the truth against itself).
    assert 0.0 < row["fd_floor"] < 0.2 * 1184  # tr Σ of the real features is ~1184
    assert 0.7 < row["precision_floor"] <= 1.0 and 0.7 < row["recall_floor"] <= 1.0
    assert 0.0 < row["sw_floor"] < 0.1
    assert 0.95 <= row["class_consistency_floor"] <= 1.0
    # An exact sampler scores like its floor.
    assert row["fd"] < 2.0 * row["fd_floor"]
    assert abs(row["precision"] - row["precision_floor"]) < 0.1
    assert abs(row["recall"] - row["recall_floor"]) < 0.1
    assert row["sw"] < 2.0 * row["sw_floor"]
    assert row["class_consistency"] >= 0.95
    # Endpoint errors of a 1e-3 perturbation in 64 pixels: ≈ 1e-3 · √64.
    assert row["endpoint_error_rms"] == pytest.approx(8e-3, rel=0.05)
    for name in ("fd", "precision", "recall", "class_consistency", "endpoint_error_mean"):
        assert row[f"{name}_lo"] <= row[name] <= row[f"{name}_hi"]


def test_bad_sampler_is_far_above_its_floors(mix, conditional):
    images, labels = conditional
    noisy = images + 0.6 * torch.randn(images.shape, generator=_gen(5), dtype=F64)
    row = evaluate_images(noisy, mix, labels=labels, seed=1, **FAST).iloc[0]
    assert row["fd_lo"] > row["fd_floor"] and row["fd"] > 3 * row["fd_floor"]
    assert row["precision"] < 0.5 * row["precision_floor"]
    assert row["sw_lo"] > 2 * row["sw_floor"]
    assert row["class_consistency"] < row["class_consistency_floor"]


def test_image_reference_uses_disjoint_halves_for_the_floor():
    real, labels = digits_images()
    samples = digits_mixture(8, 0.0).sample(N, 0.0, _gen(3))
    df = evaluate_images(samples, real[:600], labels=labels[:N], reference_labels=labels[:600],
                         seed=0, **FAST)
    row = df.iloc[0]
    assert row["n_truth"] == 600 and row["n_floor"] == 300 and df.attrs["reference"] == "images"
    assert row["fd_floor"] > 0 and 0.95 <= row["class_consistency_floor"] <= 1.0
    # Without reference labels there is no consistency floor; without labels no consistency.
    row = evaluate_images(samples, real[:600], labels=labels[:N], seed=0, **FAST).iloc[0]
    assert math.isnan(row["class_consistency_floor"]) and not math.isnan(row["class_consistency"])
    row = evaluate_images(samples, real[:600], seed=0, **FAST).iloc[0]
    assert math.isnan(row["class_consistency"])


def test_nonfinite_rows_are_dropped_with_their_labels(mix, conditional):
    images, labels = conditional
    broken = images.clone()
    broken[:10] = float("nan")
    row = evaluate_images(broken, mix, labels=labels, seed=1, **FAST).iloc[0]
    assert row["n"] == N - 10 and row["nonfinite_rate"] == pytest.approx(10 / N)
    assert row["class_consistency"] >= 0.95
    nothing = evaluate_images(torch.full((5, 1, 8, 8), float("inf")), mix, **FAST)
    assert nothing.iloc[0]["n"] == 0 and nothing.iloc[0]["nonfinite_rate"] == 1.0
    assert nothing.drop(columns=["n", "n_truth", "nonfinite_rate"]).isna().all(axis=None)


def test_seeded_and_floor_switch(mix, conditional):
    images, labels = conditional
    a = evaluate_images(images, mix, seed=4, **FAST)
    assert a.equals(evaluate_images(images, mix, seed=4, settings=MetricSettings(**FAST)))
    assert not a.equals(evaluate_images(images, mix, seed=5, **FAST))
    off = evaluate_images(images, mix, labels=labels, seed=4, noise_floor=False, **FAST)
    floors = [c for c in IMAGE_COLUMNS if c.endswith("_floor")] + ["n_floor"]
    assert off[floors].isna().all(axis=None)
    assert off["fd"].iloc[0] == a["fd"].iloc[0]


def test_num_truth_and_upsampled_resolution(mix, refs):
    samples = mix.sample(200, 0.0, _gen(8))
    row = evaluate_images(samples, mix, num_truth=400, seed=0, **FAST).iloc[0]
    assert row["n_truth"] == 400 and row["n_floor"] == 200
    # 16 × 16 images (pooled to 8 × 8 for the classifier): exact draws sit at the floor.
    mix16 = refs["mix16"]
    row = evaluate_images(mix16.sample(200, 0.0, _gen(9)), mix16, seed=0, **FAST).iloc[0]
    assert row["fd"] < 3 * row["fd_floor"] and row["sw"] < 3 * row["sw_floor"]
    assert row["precision"] > 0.7 and row["recall"] > 0.7


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"reference": "mix16"}, ValueError, "`samples` have 64 features per sample but "
                                             "`reference` has 256"),
        ({"reference": "real", "num_truth": 10}, ValueError, "`num_truth` applies only"),
        ({"labels": np.zeros(3, dtype=np.int64)}, ValueError, r"`labels` must have shape \[20\]"),
        ({"endpoint_reference": torch.zeros(20, 64)}, ValueError,
         "`endpoint_reference` must have the shape of `samples`"),
        ({"endpoint_reference": torch.full((20, 1, 8, 8), float("nan"))}, ValueError,
         "`endpoint_reference` contains NaN"),
        ({"reference": "mix3", "labels": 4}, ValueError, "digit 4, which `reference` has no"),
        ({"reference": "real", "labels": 4, "reference_labels": np.zeros(100, dtype=np.int64)},
         ValueError, "digit 4, which `reference_labels` does not"),
        ({"classifier": 3}, TypeError, "`classifier` must be a DigitsClassifier"),
        ({"k": 0}, ValueError, "`k`"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_evaluate_images_rejects_bad_input(mix, refs, kwargs, exc, match):
    kwargs = dict(kwargs)
    reference = refs.get(kwargs.pop("reference", None), mix)
    samples = mix.sample(20, 0.0, _gen(0))
    with pytest.raises(exc, match=match):
        evaluate_images(samples, reference, **kwargs, num_bootstrap=0, num_projections=4)


# ---------------------------------------------------------------------- pixel-space metrics
def test_sliced_wasserstein_on_image_shaped_inputs(mix):
    x, y = mix.sample(200, 0.0, _gen(1)), mix.sample(150, 0.0, _gen(2))  # [n, 1, 8, 8]
    shaped = sliced_wasserstein(x, y, num_bootstrap=20, num_projections=32, seed=3)
    flat = sliced_wasserstein(x.reshape(200, 64), y.reshape(150, 64), num_bootstrap=20,
                              num_projections=32, seed=3)
    assert shaped == flat and shaped.value > 0
    assert sliced_wasserstein(x, x, num_bootstrap=0, num_projections=32).value == 0.0
    with pytest.raises(ValueError, match="features"):
        sliced_wasserstein(x, torch.zeros(5, 1, 16, 16))


def test_endpoint_error_on_image_shaped_inputs():
    x = torch.randn(50, 1, 16, 16, generator=_gen(4), dtype=F64)
    ref = x.clone()
    ref[:, 0, 0, 0] += 3.0
    ref[:, 0, 5, 7] += 4.0  # every per-image error is exactly 5
    err = endpoint_error(x, ref, num_bootstrap=20)
    assert err.mean.value == pytest.approx(5.0, rel=1e-13)
    assert err.per_sample.shape == (50,)
    flat = endpoint_error(x.reshape(50, 256), ref.reshape(50, 256), num_bootstrap=20)
    assert flat[:3] == err[:3] and torch.equal(flat.per_sample, err.per_sample)
    with pytest.raises(ValueError, match="same shape"):
        endpoint_error(x, ref.reshape(50, 256))
