"""Tests for ``stiffkit.diffusion.images.report`` on tiny untrained models and few points.

Truth: an untrained model is ``c_skip x`` (so its error to the exact denoiser is known at
large σ), training images are at distance 0 from the training set, and a constant
classifier is right on one digit in ten.
"""

import pandas as pd
import pytest
import torch

from stiffkit.diffusion.images import DigitsDenoiser
from stiffkit.diffusion.images import report as rp
from stiffkit.diffusion.mixtures.digits import digits_images, digits_mixture


@pytest.fixture(scope="module")
def tiny():
    return DigitsDenoiser(8, 1, 8, 0.75).eval().requires_grad_(False)


def test_error_table_layout_and_truth(tiny):
    table = rp.denoiser_error_table(tiny, sigmas=(0.1, 80.0), bandwidths=(0.0, 0.1), n=16,
                                    name="tiny")
    assert list(table.columns) == ["model", "labels", "sigma", "bandwidth", "rmse", "rmse_clean"]
    assert len(table) == 2 * 2 * 2 and set(table.labels) == {"none", "digit"}
    assert (table.model == "tiny").all() and (table.rmse >= 0).all()
    # Untrained: D = c_skip x ≈ 0 at σ = 80, so D − D_exact ≈ −(mean image): RMS ≈ 0.85.
    far = table[(table.sigma == 80.0) & (table.labels == "none")]
    images, _ = digits_images(8)
    mean_rms = float(images.mean(0).square().mean().sqrt())
    assert far.rmse.to_numpy() == pytest.approx([mean_rms] * 2, abs=0.05)


def test_error_table_points_do_not_depend_on_n():
    x16, y16, l16 = rp._draw_training_points(16, 0.5, seed=3)
    x4, y4, l4 = rp._draw_training_points(4, 0.5, seed=3)
    assert torch.equal(x16[:4], x4) and torch.equal(y16[:4], y4) and torch.equal(l16[:4], l4)
    images, labels = digits_images(8)
    assert bool((torch.cdist(y16.flatten(1), images.flatten(1)).amin(1) == 0).all())


def test_nearest_image_distance():
    images, _ = digits_images(8)
    assert torch.equal(rp.nearest_image_distance(images[:5]), torch.zeros(5, dtype=torch.float64))
    shifted = images[:1] + 0.01
    assert float(rp.nearest_image_distance(shifted)) == pytest.approx(0.08, rel=1e-6)


def test_nearest_image_table(tiny, monkeypatch):
    monkeypatch.setattr(rp, "NUM_STEPS", 2)
    table = rp.nearest_image_table(tiny, bandwidths=(0.0, 0.1), n=10)
    assert list(table.source) == ["training (leave-one-out)", "learned, unconditional",
                                  "learned, conditional", "exact b=0", "exact b=0.1"]
    exact0 = table.set_index("source").loc["exact b=0"]
    assert exact0.nn_median == 0.0
    exact1 = table.set_index("source").loc["exact b=0.1"]
    assert exact1.nn_median == pytest.approx(0.8, rel=0.25)  # ≈ b √64


def test_sample_digits_is_per_sample_seeded(tiny):
    a = rp.sample_digits(tiny.unconditional(), [5, 6, 7], num_steps=3)
    b = rp.sample_digits(tiny.unconditional(), [5], num_steps=3)
    assert a.shape == (3, 1, 8, 8)
    torch.testing.assert_close(a[:1], b, rtol=1e-5, atol=1e-5)


def test_standin_classifier_is_accurate():
    classify, cv = rp.standin_classifier()
    images, labels = digits_images(8)
    assert cv > 0.9
    assert float((classify(images) == labels).double().mean()) > 0.97


def test_class_consistency_table(tiny, monkeypatch):
    monkeypatch.setattr(rp, "NUM_STEPS", 2)
    constant = lambda x: torch.full((x.shape[0],), 3, dtype=torch.int64)  # noqa: E731
    table = rp.class_consistency_table(tiny, tiny, classifier=constant, weights=(2.0,),
                                       n_per_class=2)
    assert isinstance(table, pd.DataFrame)
    assert list(table.guidance) == ["exact b=0 (training images)", "none", "CFG",
                                    "autoguidance"]
    assert table.accuracy.to_numpy() == pytest.approx([float(
        (digits_images(8)[1] == 3).double().mean()), 0.1, 0.1, 0.1])
    assert (table.worst_accuracy == 0).all() and (table.worst_digit == 0).all()


def test_bad_arguments(tiny):
    with pytest.raises(TypeError, match="`model`"):
        rp.denoiser_error_table(digits_mixture(8), n=4)
    with pytest.raises(ValueError, match="`n`"):
        rp.denoiser_error_table(tiny, n=0)
    with pytest.raises(ValueError, match="`n_per_class`"):
        rp.class_consistency_table(tiny, n_per_class=0)


@pytest.mark.slow
def test_command_line_prints_and_writes_the_tables(tmp_path, capsys):
    rp.main(["--n", "8", "--samples", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "sigma_data = 0.7521" in out and "STAND-IN" in out and "closest b" in out
    for stem in ("digits_denoiser_error", "digits_nearest", "digits_class_consistency"):
        assert not pd.read_csv(tmp_path / f"{stem}.csv").empty
