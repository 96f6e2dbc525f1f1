"""Tests for ``stiffkit.diffusion.images.training``: the EDM loss, the schedule, determinism.

Tiny configs (8 channels, one block, a few iterations) keep every default test well under a
second; the shipped weights against a fresh run of their commands are ``@pytest.mark.slow``.
"""

import dataclasses

import pytest
import torch

from stiffkit.diffusion.images import DigitsDenoiser, load_digits_model
from stiffkit.diffusion.images import training as tr
from stiffkit.diffusion.images.pretrained import digits_pretrained_path
from stiffkit.diffusion.images.training import (
    DIGITS_RUNS,
    DigitsTrainConfig,
    edm_loss,
    learning_rate,
    measure_sigma_data,
    train_digits,
)
from stiffkit.diffusion.mixtures.digits import digits_images

TINY = DigitsTrainConfig(channels=8, blocks=1, emb_dim=8, iterations=4, batch_size=16)


def _same_weights(a: DigitsDenoiser, b: DigitsDenoiser) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigma_data_is_the_pixel_std():
    images, _ = digits_images(8)
    assert measure_sigma_data() == pytest.approx(float(images.std()), rel=1e-3)
    assert measure_sigma_data() == pytest.approx(0.7521, abs=1e-4)


def test_edm_loss_is_the_weighted_denoising_error():
    model = DigitsDenoiser(8, 1, 8, 0.75, dtype=torch.float64)  # untrained: D = c_skip x
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(5, 1, 8, 8, generator=gen, dtype=torch.float64)
    noise = torch.randn(5, 1, 8, 8, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 3.0, 50.0], dtype=torch.float64)
    sd2 = 0.75**2
    c_skip = (sd2 / (sigma**2 + sd2)).view(-1, 1, 1, 1)
    err = (c_skip * (y + sigma.view(-1, 1, 1, 1) * noise) - y).square().mean(dim=(1, 2, 3))
    expected = ((sigma**2 + sd2) / (sigma**2 * sd2) * err).mean()
    torch.testing.assert_close(edm_loss(model, y, sigma, noise, None), expected)


def test_learning_rate_ramps_then_decays():
    config = DigitsTrainConfig(lr=1e-3, warmup=10, lr_ref_iter=100)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 100) == pytest.approx(1e-3)
    assert learning_rate(config, 400) == pytest.approx(5e-4)
    assert learning_rate(dataclasses.replace(config, warmup=0), 0) == pytest.approx(1e-3)


def test_sigma_draws_are_edm_log_normal_plus_a_log_uniform_tail():
    pure = dataclasses.replace(TINY, p_wide=0.0, p_mean=-1.2, p_std=1.2)
    sigma = tr._draw_sigma(pure, 8, torch.Generator().manual_seed(0))
    z = torch.randn(8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sigma, torch.exp(-1.2 + 1.2 * z), rtol=0, atol=0)
    wide = dataclasses.replace(TINY, p_wide=0.5)
    sigma = tr._draw_sigma(wide, 20000, torch.Generator().manual_seed(1))
    assert float((sigma > 20).double().mean()) == pytest.approx(0.5 * 1.386 / 10.6, abs=0.01)
    assert float(sigma.max()) <= tr.SIGMA_MAX  # the log-normal side never gets there


def test_training_is_bitwise_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = train_digits(TINY, progress=False)
    b = train_digits(TINY, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same_weights(a.model, b.model) and torch.equal(a.losses, b.losses)
    c = train_digits(dataclasses.replace(TINY, seed=1), progress=False)
    assert not _same_weights(a.model, c.model)


def test_snapshot_does_not_depend_on_the_run_length():
    # The schedule and the EMA never look at `iterations`: the guide is literally an early
    # EMA of a run of its config, whatever that run's length.
    long = train_digits(dataclasses.replace(TINY, iterations=6), snapshots=(4,), progress=False)
    short = train_digits(TINY, progress=False)
    assert _same_weights(long.snapshots[4], short.model)
    assert not long.snapshots[4].training
    assert not any(p.requires_grad for p in long.snapshots[4].parameters())


def test_loss_goes_down():
    config = dataclasses.replace(TINY, iterations=60, batch_size=64, lr=5e-3, warmup=5)
    losses = train_digits(config, progress=False).losses
    assert float(losses[-15:].mean()) < 0.8 * float(losses[:15].mean())


def test_sigma_data_override_and_measurement():
    assert train_digits(TINY, progress=False).model.sigma_data == pytest.approx(0.7521, abs=1e-4)
    fixed = dataclasses.replace(TINY, sigma_data=0.5)
    assert train_digits(fixed, progress=False).model.sigma_data == 0.5


@pytest.mark.parametrize("field, value", [
    ("channels", 0), ("iterations", 1.5), ("batch_size", -1), ("warmup", -1), ("seed", -1),
    ("lr", 0.0), ("p_std", -1.0), ("p_mean", float("nan")), ("p_uncond", 1.0), ("p_wide", -0.1),
    ("ema_std", 0.5), ("sigma_data", 0.0), ("betas", (0.9,)), ("betas", (0.9, 1.0)),
])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        DigitsTrainConfig(**{field: value})


def test_bad_train_arguments():
    with pytest.raises(TypeError, match="`config`"):
        train_digits({"channels": 8})
    with pytest.raises(ValueError, match="`snapshots`"):
        train_digits(TINY, snapshots=(5,), progress=False)
    with pytest.raises(ValueError, match="`names`"):
        tr.train_digits_pretrained(["main"])


def test_command_line_writes_loadable_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tr, "DIGITS_RUNS", {"digits_ag_guide": (TINY, 3)})
    tr.main(["--names", "digits_ag_guide", "--out", str(tmp_path), "--no-progress"])
    model = load_digits_model(tmp_path / "digits_ag_guide.pt")
    meta = model.metadata
    assert meta["iteration"] == 3 and meta["train_config"] == TINY.as_dict()
    assert meta["threads"] == 1 and meta["name"] == "digits_ag_guide"
    assert _same_weights(model, train_digits(TINY, snapshots=(3,), progress=False).snapshots[3])
    assert "digits_ag_guide" in capsys.readouterr().out


def test_command_line_rejects_bad_threads(tmp_path):
    with pytest.raises(SystemExit):
        tr.main(["--threads", "0", "--out", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DIGITS_RUNS))
def test_shipped_weights_equal_a_fresh_run(name, tmp_path):
    """Rerun the shipped model's training (the guide ~1 min, the main model ~10 min)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config, iteration = DIGITS_RUNS[name]
        fresh = train_digits(config, snapshots=(iteration,), progress=False).snapshots[iteration]
    finally:
        torch.set_num_threads(threads)
    assert _same_weights(fresh, load_digits_model(digits_pretrained_path(name)))
