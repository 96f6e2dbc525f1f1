"""The probability-flow drift ``(x − D)/σ``: one formula for scalar and per-sample σ."""

import pytest
import torch
from _diffusion_cases import linear_denoiser

from stiffkit.diffusion.samplers import pf_ode_drift, to_d
from stiffkit.diffusion.samplers.drift import denoise

F64 = torch.float64


def test_to_d_divides_each_sample_by_its_own_level():
    x = torch.arange(12, dtype=F64).reshape(3, 2, 2)
    den = 0.5 * x
    torch.testing.assert_close(to_d(x, den, torch.tensor(2.0, dtype=F64)), 0.25 * x)
    sig = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    torch.testing.assert_close(to_d(x, den, sig), 0.5 * x / sig[:, None, None])


def test_pf_ode_drift_of_a_linear_denoiser_is_its_matrix():
    J = torch.tensor([[2.0, 1.0], [0.0, -3.0]], dtype=F64)
    f = pf_ode_drift(linear_denoiser(J))
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for sigma in (0.7, torch.tensor(0.7), torch.tensor(0.7, dtype=torch.float32)):
        torch.testing.assert_close(f(sigma, x), x @ J.T, rtol=1e-13, atol=1e-13)
    # One level per sample: the denoiser sees [batch], the division is per sample.
    levels = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0], dtype=torch.float32)
    per_sample = pf_ode_drift(lambda y, s: y - s[:, None] * (y @ J.T))
    got = per_sample(levels, x)
    torch.testing.assert_close(got, x @ J.T, rtol=1e-13, atol=1e-13)
    seen = []
    pf_ode_drift(lambda y, s: seen.append(s) or y)(0.5, x.float())
    assert seen[0].dtype == torch.float32 and seen[0].ndim == 0  # the state decides


def test_denoise_checks_the_output():
    x = torch.zeros(2, 3, dtype=F64)
    assert denoise(lambda y, s: y + s, x, torch.tensor(1.0, dtype=F64)).shape == (2, 3)
    with pytest.raises(ValueError, match="`denoiser`.*shape"):
        denoise(lambda y, s: y[:, :1], x, 1.0)
    with pytest.raises(ValueError, match="`denoiser`.*dtype"):
        denoise(lambda y, s: y.float(), x, 1.0)
    with pytest.raises(TypeError, match="`denoiser`"):
        denoise(lambda y, s: None, x, 1.0)


def test_the_drift_carries_the_denoisers_jvp_hint():
    """An energy model's drift is a gradient (double backward is its cheap exact JVP): the
    hint travels through pf_ode_drift and through guidance of two such models, not further."""
    from stiffkit.diffusion import EnergyDenoiser, Guided

    energy, other = EnergyDenoiser(dim=2, width=8), EnergyDenoiser(dim=2, width=4)
    assert pf_ode_drift(energy).jvp_hint == "vjp"
    assert pf_ode_drift(Guided(energy, other, 2.0)).jvp_hint == "vjp"
    plain = linear_denoiser(torch.eye(2, dtype=F64))
    assert not hasattr(pf_ode_drift(plain), "jvp_hint")
    assert not hasattr(pf_ode_drift(Guided(energy, plain, 2.0)), "jvp_hint")
