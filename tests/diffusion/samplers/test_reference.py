"""The converged reference solve that endpoint errors are measured against."""

import pytest
import torch
from _diffusion_cases import exact_single_gaussian_flow, single_gaussian

from stiffkit.diffusion.noise import randn_per_sample
from stiffkit.diffusion.samplers import reference_sample
from stiffkit.diffusion.schedules import edm_sigmas

F64 = torch.float64


def test_reference_sample_is_converged_on_single_gaussian():
    gmm = single_gaussian()
    x0 = randn_per_sample(16, (2,), dtype=F64) * 2.0
    sig = edm_sigmas(8, 0.01, 2.0)
    exact = gmm.denoise(exact_single_gaussian_flow(gmm, x0, 2.0, 0.01), 0.01)
    for method in ("rk4", "dopri5"):
        ref = reference_sample(gmm, x0, sig, method=method)
        assert float((ref - exact).norm(dim=1).max()) < 1e-6


def test_reference_sample_without_the_final_zero_stops_at_the_last_level():
    gmm = single_gaussian()
    x0 = randn_per_sample(4, (2,), dtype=F64) * 2.0
    ref = reference_sample(gmm, x0, edm_sigmas(8, 0.01, 2.0)[:-1], num_steps=64)
    exact = exact_single_gaussian_flow(gmm, x0, 2.0, 0.01)
    assert float((ref - exact).norm(dim=1).max()) < 1e-6


def test_reference_sample_bad_input():
    gmm = single_gaussian()
    x0 = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="`method`"):
        reference_sample(gmm, x0, edm_sigmas(4, 0.01, 2.0), method="euler")
    with pytest.raises(ValueError, match="`num_steps`"):
        reference_sample(gmm, x0, edm_sigmas(4, 0.01, 2.0), num_steps=0)
    with pytest.raises(ValueError, match="`x_init`"):
        reference_sample(gmm, torch.zeros(2, dtype=F64), edm_sigmas(4, 0.01, 2.0))


def test_dopri5_reference_never_evaluates_below_the_last_level():
    # Regression (issue 12, defect 7): torchdiffeq's first-step probe and overshooting steps
    # evaluated the denoiser at σ < σ_end (negative σ near the end of an EDM grid).
    from stiffkit.diffusion import edm_sigmas, ring_gmm
    from stiffkit.diffusion.samplers.reference import reference_sample

    gmm, seen = ring_gmm(), []

    def denoiser(x, sigma):
        seen.append(float(sigma))
        return gmm(x, sigma)

    sig = edm_sigmas(6, 0.002, 5)
    x0 = 5.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    out = reference_sample(denoiser, x0, sig, method="dopri5")
    assert torch.isfinite(out).all()
    assert min(seen) >= 0.002 * (1 - 1e-12) and max(seen) <= 5.0 * (1 + 1e-12)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(denoiser=None), TypeError, "`denoiser` must be callable"),
        (dict(x_init=torch.ones(0, 2, dtype=F64)), ValueError, "`x_init` has an empty batch"),
        (dict(rtol=-1.0), ValueError, "`rtol` must be a finite number > 0"),
        (dict(method="dopri5", atol=float("nan")), ValueError, "`atol` must be a finite"),
        (dict(method="dopri5", rtol="a"), ValueError, "`rtol` must be a real number"),
        (dict(sigmas="ab"), TypeError, "`sigmas` must be a 1-D sequence"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, message):
    """Issue 12: torchdiffeq AssertionErrors, an ignored rtol = −1 and an empty result before."""
    args = dict(denoiser=single_gaussian(), x_init=torch.ones(3, 2, dtype=F64),
                sigmas=edm_sigmas(4, 0.002, 5.0))
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        reference_sample(args.pop("denoiser"), args.pop("x_init"), args.pop("sigmas"), **args)


def test_a_grid_of_one_euler_step_is_the_denoiser():
    """Issue 12: [σ_max, 0] raised "`sigma_min` must be smaller than `sigma_max`"."""
    den = single_gaussian()
    x = torch.ones(3, 2, dtype=F64)
    torch.testing.assert_close(reference_sample(den, x, [5.0, 0.0]), den(x, torch.tensor(5.0)))
