"""Tests for ``stiffkit.diffusion.images.denoiser``: EDM preconditioning, labels, shapes, errors.

Truth: EDM's closed forms (Karras et al. 2022, Table 1) written out here, the zero-initialised
output (an untrained model is ``c_skip x`` exactly), and per-sample consistency (a batch
equals its rows called one by one).
"""

import math

import pytest
import torch

from stiffkit.diffusion import Guided, edm_sigmas, sample_final
from stiffkit.diffusion.images import (
    NULL_LABEL,
    ConditionedDenoiser,
    DigitsDenoiser,
    edm_preconditioning,
)
from stiffkit.diffusion.images.denoiser import class_index

F64 = torch.float64
SIGMA_DATA = 0.75


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def net() -> DigitsDenoiser:
    """A small float64 model whose output and class table are random (so labels matter)."""
    model = DigitsDenoiser(8, 2, 16, SIGMA_DATA, generator=_gen(1), dtype=F64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=_gen(2), dtype=F64))
    return model.eval().requires_grad_(False)


def _x(batch: int = 6, dtype=F64, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=_gen(seed), dtype=dtype)


# ---------------------------------------------------------------------- preconditioning
def test_preconditioning_matches_edm_closed_forms():
    sigma = torch.tensor([0.002, 0.05, 0.5, 0.7521, 3.0, 80.0], dtype=F64)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, SIGMA_DATA)
    for i, s in enumerate(sigma.tolist()):
        sd = SIGMA_DATA
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-14)
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-14)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-14)
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-14)
    # EDM's derivation: unit-variance input and target, c_out² = c_skip σ² (B.6).
    torch.testing.assert_close(c_in**2 * (sigma**2 + SIGMA_DATA**2), torch.ones_like(sigma))
    torch.testing.assert_close(c_out**2, c_skip * sigma**2)


def test_preconditioning_rejects_bad_sigma_data():
    with pytest.raises(ValueError, match="`sigma_data`"):
        edm_preconditioning(torch.ones(2), 0.0)


def test_untrained_model_is_the_skip_connection():
    model = DigitsDenoiser(sigma_data=SIGMA_DATA, dtype=F64)
    x, sigma = _x(), torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 80.0], dtype=F64)
    c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
    torch.testing.assert_close(model(x, sigma, 3), c_skip.view(-1, 1, 1, 1) * x)


# ---------------------------------------------------------------------- shapes and sigma
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_shape_and_dtype_follow_x(net, dtype):
    out = net(_x(dtype=dtype), 0.3)
    assert out.shape == (6, 1, 8, 8) and out.dtype == dtype
    assert bool(torch.isfinite(out).all())


def test_sigma_forms_agree(net):
    x = _x()
    ref = net(x, 0.3)
    torch.testing.assert_close(net(x, torch.tensor(0.3, dtype=F64)), ref, rtol=0, atol=0)
    torch.testing.assert_close(net(x, torch.full((6,), 0.3, dtype=F64)), ref, rtol=0, atol=0)


def test_batch_equals_rows(net):
    x = _x()
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 80.0], dtype=F64)
    labels = torch.tensor([0, 3, NULL_LABEL, 9, 3, NULL_LABEL])
    out = net(x, sigma, labels)
    for i in range(6):
        row = net(x[i : i + 1], sigma[i], int(labels[i]))
        torch.testing.assert_close(out[i : i + 1], row, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- labels
def test_unconditional_forms_agree(net):
    x = _x()
    ref = net(x, 0.4)
    for labels in (NULL_LABEL, torch.full((6,), NULL_LABEL)):
        torch.testing.assert_close(net(x, 0.4, labels), ref, rtol=0, atol=0)
    torch.testing.assert_close(net.unconditional()(x, 0.4), ref, rtol=0, atol=0)


def test_labels_change_the_output(net):
    x = _x()
    outs = [net(x, 0.4, c) for c in (None, 0, 7)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert float((outs[a] - outs[b]).abs().max()) > 1e-3


def test_conditioned_binds_labels(net):
    x = _x()
    labels = torch.tensor([1, 2, 3, 4, 5, NULL_LABEL])
    bound = net.conditioned(labels)
    assert isinstance(bound, ConditionedDenoiser) and "per-sample" in repr(bound)
    torch.testing.assert_close(bound(x, 0.2), net(x, 0.2, labels), rtol=0, atol=0)
    torch.testing.assert_close(net.conditioned(4)(x, 0.2), net(x, 0.2, 4), rtol=0, atol=0)


def test_class_index_maps_null_to_row_ten():
    idx = class_index(torch.tensor([NULL_LABEL, 0, 9]), 3)
    assert idx.tolist() == [10, 0, 9] and idx.dtype == torch.int64
    assert class_index(None, 4).tolist() == [10] * 4
    assert class_index(2, 3).tolist() == [2] * 3


def test_cfg_and_autoguidance_run_through_the_sampler(net):
    guide = DigitsDenoiser(8, 1, 16, SIGMA_DATA, generator=_gen(5), dtype=F64).eval()
    labels = torch.arange(4)
    x0 = 80.0 * _x(4)
    sigmas = edm_sigmas(4)
    for g in (Guided(net.conditioned(labels), net.unconditional(), 2.0),
              Guided(net.conditioned(labels), guide.conditioned(labels), 2.0)):
        with torch.no_grad():
            out, nfe = sample_final(g, x0, sigmas)
        assert out.shape == x0.shape and bool(torch.isfinite(out).all()) and nfe == 7


# ---------------------------------------------------------------------- construction
def test_construction_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = DigitsDenoiser(8, 1, 16, generator=_gen(7))
    b = DigitsDenoiser(8, 1, 16, generator=_gen(7))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    c = DigitsDenoiser(8, 1, 16, generator=_gen(8))
    assert not torch.equal(a.conv_in.weight, c.conv_in.weight)


def test_architecture_round_trips():
    model = DigitsDenoiser(16, 3, 32, 0.6)
    again = DigitsDenoiser(**model.architecture)
    assert again.architecture == model.architecture == {
        "channels": 16, "blocks": 3, "emb_dim": 32, "sigma_data": 0.6}
    assert "channels=16" in repr(model)


# ---------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs, name", [
    ({"channels": 12}, "channels"), ({"channels": 0}, "channels"), ({"blocks": 1.5}, "blocks"),
    ({"emb_dim": -1}, "emb_dim"), ({"sigma_data": 0.0}, "sigma_data"),
    ({"sigma_data": float("nan")}, "sigma_data"),
])
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        DigitsDenoiser(**kwargs)


@pytest.mark.parametrize("x", [
    torch.zeros(2, 64), torch.zeros(2, 1, 8, 7), torch.zeros(2, 3, 8, 8), torch.zeros(1, 8, 8),
    torch.full((2, 1, 8, 8), float("nan")),
])
def test_bad_x(net, x):
    with pytest.raises(ValueError, match="`x`"):
        net(x.double(), 0.5)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("inf"), torch.ones(3), torch.ones(2, 6)])
def test_bad_sigma(net, sigma):
    with pytest.raises(ValueError, match="`sigma`"):
        net(_x(), sigma)


@pytest.mark.parametrize("labels", [
    10, -2, torch.tensor([0.0] * 6), torch.tensor([True] * 6), torch.zeros(5, dtype=torch.int64),
    torch.zeros(6, 1, dtype=torch.int64), torch.tensor([0, 1, 2, 3, 4, 10]), "3", 2.0,
])
def test_bad_labels(net, labels):
    with pytest.raises(ValueError, match="`labels`"):
        net(_x(), 0.5, labels)


def test_conditioned_validates_eagerly(net):
    with pytest.raises(ValueError, match="`labels`"):
        net.conditioned(11)
    with pytest.raises(ValueError, match=r"`labels` must have shape \[batch\] = \[6\]"):
        net.conditioned(torch.arange(3))(_x(), 0.5)
