"""Tests for ``stiffkit.diffusion.metrics.classifier``: the shipped digits classifier.

The shipped weights must load, reach their recorded held-out accuracy on the stratified
split, and fail loudly (path and regeneration command) when the file is damaged.
"""

import re
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch

from stiffkit.diffusion.metrics.classifier import (
    CLASSIFIER_PATH,
    CLASSIFIER_REGENERATE_COMMAND,
    DigitsClassifier,
    digits_classifier,
    digits_split,
    held_out_accuracy,
    load_classifier,
    main,
    save_classifier,
    to_classifier_input,
    train_classifier,
)
from stiffkit.diffusion.mixtures import digits_images

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_weights_are_small_and_packaged():
    assert CLASSIFIER_PATH.is_file()
    assert CLASSIFIER_PATH.stat().st_size < 1_000_000
    tomllib = pytest.importorskip("tomllib")  # python ≥ 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["stiffkit"]
    rel = CLASSIFIER_PATH.relative_to(ROOT / "stiffkit").as_posix()
    assert any(fnmatch(rel, g) for g in globs)


def test_shipped_classifier_reaches_its_held_out_accuracy():
    model = digits_classifier()
    assert isinstance(model, DigitsClassifier) and not model.training
    assert next(model.parameters()).dtype == torch.float64
    assert sum(p.numel() for p in model.parameters()) == 38282 == model.metadata["num_params"]
    recorded = model.metadata["held_out_accuracy"]
    for r in (8, 16, 32):
        acc = held_out_accuracy(model, r)
        assert acc >= 0.95
        # Trained and recorded in float32, evaluated here in float64: at most one flip.
        assert abs(acc - recorded[str(r)]) <= 1.0 / model.metadata["num_held_out"] + 1e-12


def test_digits_split_is_stratified_disjoint_and_fixed():
    train, test = digits_split()
    assert len(train) + len(test) == 1797 and np.intersect1d(train, test).size == 0
    assert len(test) == 359
    labels = digits_images()[1].numpy()
    share = np.bincount(labels[test], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.01)
    again = digits_split()
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    with pytest.raises(ValueError, match="held_out"):
        digits_split(held_out=1.0)


def test_features_and_logits_shapes():
    model = digits_classifier()
    x = to_classifier_input(digits_images()[0][:5])
    assert model.features(x).shape == (5, 64) and model(x).shape == (5, 10)
    assert bool((model.features(x) >= 0).all())  # ReLU activations


def test_to_classifier_input_accepts_image_layouts_and_pools():
    images = digits_images()[0][:4]  # [4, 1, 8, 8]
    base = to_classifier_input(images)
    assert base.shape == (4, 1, 8, 8) and base.dtype == torch.float64
    for layout in (images[:, 0], images.reshape(4, 64), images.numpy()):
        assert torch.equal(to_classifier_input(layout), base)
    big = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pooled = big.reshape(3, 1, 8, 2, 8, 2).mean(dim=(3, 5))
    torch.testing.assert_close(to_classifier_input(big), pooled, rtol=1e-14, atol=1e-14)
    assert to_classifier_input(torch.zeros(2, 1024)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(2, 1, 12, 12), "side 8, 16, 32"),
        (torch.zeros(2, 3, 8, 8), "side 8, 16, 32"),
        (torch.zeros(0, 1, 8, 8), "`images` is empty"),
        (torch.full((2, 64), float("nan")), "`images` contains NaN"),
        (torch.zeros(5), r"`images` must be real images \[n, \*dims\]"),
    ],
)
def test_to_classifier_input_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        to_classifier_input(images)


def _payload():
    return torch.load(CLASSIFIER_PATH, weights_only=True)


def _expect_load_error(path, match, exc=ValueError):
    with pytest.raises(exc, match=match) as info:
        load_classifier(path)
    assert str(path) in str(info.value)
    assert CLASSIFIER_REGENERATE_COMMAND in str(info.value)


def test_load_classifier_rejects_damaged_files(tmp_path):
    _expect_load_error(tmp_path / "missing.pt", "no classifier weight file", FileNotFoundError)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    _expect_load_error(garbage, "not a readable weight file")
    for name, edit, match in [
        ("version.pt", lambda p: p.update(format_version=99), "not a stiffkit DigitsClassifier"),
        ("entries.pt", lambda p: p.pop("metadata"), re.escape("lacks the entries ['metadata']")),
        ("weights.pt", lambda p: p["state_dict"].pop("fc2.bias"), "lacks the weights"),
        ("nan.pt", lambda p: p["state_dict"]["fc1.weight"].fill_(float("nan")), "NaN or Inf"),
        ("shape.pt", lambda p: p["state_dict"].update({"fc2.bias": torch.zeros(3)}),
         "does not hold weights of a DigitsClassifier"),
    ]:
        payload = _payload()
        edit(payload)
        torch.save(payload, tmp_path / name)
        _expect_load_error(tmp_path / name, match)
    with pytest.raises(ValueError, match="`dtype`"):
        load_classifier(CLASSIFIER_PATH, dtype=torch.int64)


def test_save_and_load_round_trip(tmp_path):
    model = digits_classifier()
    path = save_classifier(model, tmp_path / "copy.pt")
    loaded = load_classifier(path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)  # the shipped weights are float32 values
    assert loaded.metadata["held_out_accuracy"] == model.metadata["held_out_accuracy"]
    with pytest.raises(TypeError, match="`model`"):
        save_classifier(object(), tmp_path / "x.pt")


def test_training_is_bitwise_reproducible_on_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = train_classifier(epochs=1), train_classifier(epochs=1)
    finally:
        torch.set_num_threads(threads)
    for v, w in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(v, w)
    assert a.metadata["epochs"] == 1 and a.metadata["threads"] == 1


def test_command_line_summary(capsys):
    main([])
    out = capsys.readouterr().out
    assert "held_out_accuracy" in out and "num_params: 38282" in out
