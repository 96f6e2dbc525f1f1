"""k-diffusion's protocol: plain samplers bit for bit at w_stiff = 0, stiffkit's with ERK-Guid.

The references below are k-diffusion's ``sample_heun`` and ``sample_dpm_2`` without churn,
written out here from the algorithm (k-diffusion itself is not a dependency): the model is
called with σ as a ``[batch]`` tensor, the derivative is ``(x − D)/σ``, a final 0 in the
grid is an Euler step, Heun averages ``(d + d₂)/2`` and DPM-2 evaluates at the log-midpoint.
"""

import pytest
import torch

from stiffkit.diffusion import edm_sigmas, ring_gmm, sample
from stiffkit.integrations.k_diffusion import sample_erk_dpm_2, sample_erk_heun

F64 = torch.float64


def _ref_heun(model, x, sigmas, extra_args):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1] * s_in, **extra_args)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def _ref_dpm_2(model, x, sigmas, extra_args):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = (x - denoised) / sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = (x_2 - model(x_2, sigma_mid * s_in, **extra_args)) / sigma_mid
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


class Net(torch.nn.Module):
    """A small conditional float32 MLP ``D(x, sigma[batch], cond=...)``, k-diffusion style."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(0.5 * torch.randn(3, 32, generator=gen))
        self.w2 = torch.nn.Parameter(0.3 * torch.randn(32, 2, generator=gen))
        self.calls, self.sigma_shapes = 0, set()

    def forward(self, x, sigma, cond=0.0):
        self.calls += 1
        self.sigma_shapes.add(tuple(sigma.shape))
        c_in = 1 / (sigma**2 + 1).sqrt()
        h = torch.cat([x * c_in[:, None], sigma.log()[:, None] / 4], dim=1)
        return x / (sigma**2 + 1)[:, None] + torch.tanh(h @ self.w1) @ self.w2 + cond


def _mixture_model(x, sigma):
    return ring_gmm()(x, sigma)  # the exact mixture accepts a [batch] sigma


@pytest.mark.parametrize(("ours", "ref"), [(sample_erk_heun, _ref_heun),
                                           (sample_erk_dpm_2, _ref_dpm_2)])
@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_zero_w_stiff_is_k_diffusion_bit_for_bit(ours, ref, ends_at_zero):
    net = Net()
    sig = edm_sigmas(8, 0.002, 10.0).float()
    if not ends_at_zero:
        sig = sig[:-1]
    x = 10.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    extra = {"cond": 0.1}
    with torch.no_grad():
        want = ref(net, x, sig, extra)
    got = ours(net, x, sig, extra_args=extra, disable=True)
    assert torch.equal(got, want)
    assert net.sigma_shapes == {(64,)}  # σ arrives per sample, as k-diffusion passes it


@pytest.mark.parametrize(("ours", "solver"), [(sample_erk_heun, "heun"),
                                              (sample_erk_dpm_2, "dpm2")])
def test_erk_guid_equals_stiffkit_sample_with_no_extra_model_calls(ours, solver):
    sig = edm_sigmas(8, 0.002, 5.0)
    x = 5.0 * torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    want = sample(_mixture_model, x, sig, solver=solver, w_stiff=0.5, w_con=0.1).states[-1]
    got = ours(_mixture_model, x, sig, disable=True, w_stiff=0.5, w_con=0.1)
    assert torch.equal(got, want)
    assert not torch.equal(got, ours(_mixture_model, x, sig, disable=True))  # it did correct
    net, plain = Net(), Net()
    xf = x.float()
    ours(net, xf, sig, disable=True, w_stiff=0.5)
    ours(plain, xf, sig, disable=True)
    assert net.calls == plain.calls == (2 * 8 - 1)


def test_callback_carries_k_diffusions_keys():
    seen = []
    sig = edm_sigmas(4, 0.002, 5.0)
    x = 5.0 * torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    sample_erk_heun(_mixture_model, x, sig, callback=seen.append, disable=True, w_stiff=0.5)
    assert [d["i"] for d in seen] == [0, 1, 2, 3]
    for d in seen:
        assert {"x", "i", "sigma", "sigma_hat", "denoised"} <= set(d)
        assert torch.equal(d["sigma_hat"], d["sigma"])
        assert d["denoised"].shape == x.shape
    assert torch.equal(seen[0]["x"], x)


def test_dpm_2_takes_its_r_option_and_bad_arguments_are_named():
    sig = edm_sigmas(4, 0.002, 5.0)
    x = 5.0 * torch.randn(8, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    a = sample_erk_dpm_2(_mixture_model, x, sig, disable=True, r=0.3)
    b = sample(_mixture_model, x, sig, solver="dpm2", r=0.3).states[-1]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="`r`"):
        sample_erk_dpm_2(_mixture_model, x, sig, disable=True, r=1.5)
    with pytest.raises(TypeError, match="`model`"):
        sample_erk_heun("model", x, sig)
    with pytest.raises(TypeError, match="`extra_args`"):
        sample_erk_heun(_mixture_model, x, sig, extra_args=[1])
    with pytest.raises(ValueError, match="`w_stiff`"):
        sample_erk_heun(_mixture_model, x, sig, w_stiff=-1.0)
    with pytest.raises(ValueError, match="sigmas"):
        sample_erk_heun(_mixture_model, x, sig.flip(0))
