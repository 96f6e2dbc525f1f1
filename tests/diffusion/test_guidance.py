"""`Guided`: ``D_g + w (D − D_g)``, its call counts, and ERK-Guid adding no network call."""

import pytest
import torch
from _diffusion_cases import small_tree_like

from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.noise import mixture_samples
from stiffkit.diffusion.samplers import sample
from stiffkit.diffusion.schedules import edm_sigmas

F64 = torch.float64


def test_guided_erk_guid_adds_no_network_call(mix):
    guide = small_tree_like(1)
    sig = edm_sigmas(8, 0.002, 5.0)
    x0 = mixture_samples(mix, 16, 5.0, dtype=F64)
    counts = []
    for w_stiff in (0.0, 1.0):
        g = Guided(mix, guide, w=2.0)
        sample(g, x0, sig, w_stiff=w_stiff, w_con=0.5)
        counts.append(dict(g.num_calls))
    assert counts[0] == counts[1] == {"denoiser": 15, "guide": 15}


def test_guidance_composition(mix):
    guide = small_tree_like(1)
    x = mixture_samples(mix, 16, 0.3, dtype=F64)
    d, dg = mix(x, 0.3), guide(x, 0.3)
    torch.testing.assert_close(Guided(mix, guide, 2.5)(x, 0.3), dg + 2.5 * (d - dg))
    off = Guided(mix, guide, 1.0)
    assert torch.equal(off(x, 0.3), d) and off.num_calls == {"denoiser": 1, "guide": 0}
    assert torch.equal(Guided(mix, guide, 0.0)(x, 0.3), dg)


def test_guidance_bad_input(mix):
    with pytest.raises(ValueError, match="`guide`"):
        Guided(mix, lambda x, s: x[:, :1], 2.0)(torch.zeros(3, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="`guide`"):
        Guided(mix, lambda x, s: mix(x, s).float(), 2.0)(torch.zeros(3, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="`w`"):
        Guided(mix, mix, float("inf"))
    with pytest.raises(TypeError, match="`guide`"):
        Guided(mix, "not a model", 2.0)
