"""Per-sample seeds: sample i never depends on the batch size (nor does the sampler's output)."""

import torch

from stiffkit.diffusion.noise import initial_noise, mixture_samples
from stiffkit.diffusion.samplers import sample
from stiffkit.diffusion.schedules import edm_sigmas

F64 = torch.float64


def test_per_sample_seeds_make_samples_batch_independent(mix):
    sig = edm_sigmas(6, 0.002, 5.0)
    small = initial_noise(8, (2,), 5.0, dtype=F64)
    big = initial_noise(40, (2,), 5.0, dtype=F64)
    assert torch.equal(small, big[:8])
    assert torch.equal(mixture_samples(mix, 8, 5.0), mixture_samples(mix, 40, 5.0)[:8])
    assert torch.equal(initial_noise([3, 7], (2,), 5.0), initial_noise(8, (2,), 5.0)[[3, 7]])
    xs = sample(mix, small, sig, w_stiff=1.0, w_con=0.2).states[-1]
    xb = sample(mix, big, sig, w_stiff=1.0, w_con=0.2).states[-1]
    torch.testing.assert_close(xs, xb[:8], rtol=1e-12, atol=1e-12)
    again = sample(mix, small, sig, w_stiff=1.0, w_con=0.2).states[-1]
    assert torch.equal(xs, again)
