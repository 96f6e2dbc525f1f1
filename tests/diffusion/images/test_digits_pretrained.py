"""Tests for ``stiffkit.diffusion.images.pretrained``: weight files and the shipped digits models.

Truth for the shipped models: the exact digits mixture at large σ, where every denoiser is
close to the mean image and the learned one must be too; the guide must be the degraded
version autoguidance asks for (smaller, shorter, worse).
"""

import math

import pytest
import torch

import stiffkit
from stiffkit.diffusion import digits_mixture
from stiffkit.diffusion.images import DIGITS_RUNS, DigitsDenoiser, pretrained
from stiffkit.diffusion.images.pretrained import (
    DIGITS_PRETRAINED,
    DIGITS_REGENERATE_COMMAND,
    digits_pretrained_path,
    load_digits_model,
    load_digits_pretrained,
    save_digits_model,
)
from stiffkit.diffusion.images.report import denoiser_error_table
from stiffkit.diffusion.models import EnergyDenoiser, save_model

#: Upper bounds on the per-pixel RMS of ``D_θ − D_exact`` (bandwidth 0) at large σ, labels
#: None and per-sample digits: about 2x the values measured on 512 points of the empirical
#: ``p_σ`` (``python -m stiffkit.diffusion.images.report``): main 0.070 / 0.051 / 0.062
#: unconditional and 0.068 / 0.060 / 0.076 conditional at σ = 5 / 20 / 80; the guide
#: 0.13 / 0.13 / 0.21 and 0.18 / 0.19 / 0.24. For scale: the untrained ``D = c_skip x`` is off
#: by the mean image there, 0.85.
LARGE_SIGMA_RMSE_MAX = {"digits": {5.0: 0.15, 20.0: 0.12, 80.0: 0.15},
                        "digits_ag_guide": {5.0: 0.35, 20.0: 0.4, 80.0: 0.5}}


@pytest.fixture(scope="module")
def shipped():
    return {name: stiffkit.diffusion.load_pretrained(name) for name in DIGITS_PRETRAINED}


@pytest.fixture()
def small():
    return DigitsDenoiser(8, 1, 8, 0.7, generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------------- files
def test_round_trip(tmp_path, small):
    path = save_digits_model(small, tmp_path / "m.pt", metadata={"note": "x"})
    loaded = load_digits_model(path)
    assert loaded.architecture == small.architecture
    assert loaded.metadata["note"] == "x" and loaded.metadata["torch_version"]
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x, 0.3, 2), small(x, 0.3, 2), rtol=0, atol=0)
    as64 = load_digits_model(path, dtype=torch.float64)
    assert as64.conv_in.weight.dtype == torch.float64


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="`path`"):
        load_digits_model(tmp_path / "nope.pt")


def test_garbage_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    short = tmp_path / "short.pt"
    short.write_bytes(b"broken")  # IndexError inside torch's weights-only unpickler
    with pytest.raises(ValueError, match="not a readable weight file"):
        load_digits_model(short)
    with pytest.raises(ValueError, match="not a readable weight file") as err:
        load_digits_model(bad)
    assert str(bad) in str(err.value)
    toy = save_model(EnergyDenoiser(width=8, depth=1), tmp_path / "toy.pt")
    with pytest.raises(ValueError, match="not a stiffkit DigitsDenoiser file"):
        load_digits_model(toy)


def _tampered(tmp_path, small, edit) -> str:
    path = save_digits_model(small, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def test_missing_entry_and_weights(tmp_path, small):
    path = _tampered(tmp_path, small, lambda p: p.pop("metadata"))
    with pytest.raises(ValueError, match=r"lacks the entries \['metadata'\]"):
        load_digits_model(path)
    path = _tampered(tmp_path, small, lambda p: p["state_dict"].pop("conv_in.weight"))
    with pytest.raises(ValueError, match="(?s)does not hold weights.*conv_in.weight"):
        load_digits_model(path)
    path = _tampered(tmp_path, small, lambda p: p["architecture"].update(channels=16))
    with pytest.raises(ValueError, match="does not hold weights"):
        load_digits_model(path)


def test_non_finite_weights(tmp_path, small):
    path = _tampered(tmp_path, small, lambda p: p["state_dict"]["conv_out.bias"].fill_(math.nan))
    with pytest.raises(ValueError, match=r"NaN or Inf weights in \['conv_out.bias'\]"):
        load_digits_model(path)


def test_regeneration_hint_for_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    (tmp_path / "digits.pt").write_bytes(b"broken")
    with pytest.raises(ValueError, match=DIGITS_REGENERATE_COMMAND):
        load_digits_pretrained("digits")
    with pytest.raises(FileNotFoundError, match=DIGITS_REGENERATE_COMMAND):
        load_digits_pretrained("digits_ag_guide")


def test_bad_arguments(tmp_path, small):
    with pytest.raises(ValueError, match="`name`"):
        digits_pretrained_path("main")
    with pytest.raises(ValueError, match="`name`.*digits"):
        stiffkit.diffusion.models.pretrained_path("nope")
    with pytest.raises(ValueError, match="`dtype`"):
        load_digits_model(save_digits_model(small, tmp_path / "m.pt"), dtype=torch.float16)
    with pytest.raises(TypeError, match="`model`"):
        save_digits_model(EnergyDenoiser(width=8, depth=1), tmp_path / "m.pt")


# ---------------------------------------------------------------------- shipped models
def test_shipped_files_are_small_and_carry_metadata(shipped):
    for name, model in shipped.items():
        path = digits_pretrained_path(name)
        assert path == stiffkit.diffusion.models.pretrained_path(name)
        assert path.stat().st_size < 1_000_000
        config, iteration = DIGITS_RUNS[name]
        meta = model.metadata
        assert meta["name"] == name and meta["iteration"] == iteration
        assert meta["train_config"] == config.as_dict() and meta["threads"] == 1
        assert math.isfinite(meta["final_loss"]) and meta["torch_version"]
        assert model.channels == config.channels and model.blocks == config.blocks
        assert model.sigma_data == pytest.approx(0.7521, abs=1e-4)
        assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_guide_is_smaller_and_shorter(shipped):
    main, guide = shipped["digits"], shipped["digits_ag_guide"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(guide) < count(main) / 2
    assert guide.metadata["iteration"] * 4 <= main.metadata["iteration"]


def test_shipped_models_denoise_finitely(shipped):
    images, labels = stiffkit.diffusion.mixtures.digits.digits_images(8)
    y, labels = images[:64].float(), labels[:64]
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    for model in shipped.values():
        for sigma in (0.002, 0.1, 1.0, 80.0):
            for lab in (None, labels):
                out = model(y + sigma * noise, sigma, lab)
                assert out.shape == y.shape and bool(torch.isfinite(out).all())


def test_learned_matches_exact_at_large_sigma(shipped):
    for name, model in shipped.items():
        table = denoiser_error_table(model, sigmas=(5.0, 20.0, 80.0), bandwidths=(0.0,), n=256)
        for row in table.itertuples():
            assert row.rmse < LARGE_SIGMA_RMSE_MAX[name][row.sigma], (name, row)


def test_guide_denoises_worse_than_main(shipped):
    errs = {name: denoiser_error_table(m, sigmas=(0.2, 0.5), bandwidths=(0.0,), n=256)
            for name, m in shipped.items()}
    worse = errs["digits_ag_guide"].rmse_clean.values > errs["digits"].rmse_clean.values
    assert worse.all()


def test_conditional_is_closer_to_its_class_than_unconditional(shipped):
    # At σ = 1 the class is not visible in x: the conditional model must use its label.
    table = denoiser_error_table(shipped["digits"], sigmas=(1.0,), bandwidths=(0.0,), n=256)
    clean = dict(zip(table.labels, table.rmse_clean))
    assert clean["digit"] < 0.9 * clean["none"]
    assert digits_mixture(8, 0.0).num_components == 1797
