"""Per-sample seeds: sample i never depends on the batch size (nor does the sampler's output)."""

import numpy as np
import pytest
import torch

from stiffkit.diffusion.noise import (
    SEED_STRIDE,
    as_seeds,
    initial_noise,
    mixture_samples,
    randn_per_sample,
    run_seeds,
    sub_seed,
    torch_generator,
)
from stiffkit.diffusion.samplers import sample
from stiffkit.diffusion.schedules import edm_sigmas
from stiffkit.paper import quality

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


# ---------------------------------------------------------------------- seed helpers
def test_run_seeds_are_the_strided_per_sample_seeds():
    assert SEED_STRIDE == 10**7
    assert run_seeds(0, 3) == [0, 1, 2]
    assert run_seeds(3, 2) == [30_000_000, 30_000_001]
    assert run_seeds(np.int64(2), np.int32(1)) == [20_000_000]
    assert run_seeds(5, 0) == []
    assert run_seeds(1, 100)[:10] == run_seeds(1, 10)  # a quick run is a prefix of a full one
    assert run_seeds(0, SEED_STRIDE)[-1] < run_seeds(1, 1)[0]  # base seeds never overlap
    # The paper's modules share the one stride.
    assert quality.SEED_STRIDE is SEED_STRIDE


@pytest.mark.parametrize(
    "seed, n, message",
    [(-1, 3, "`seed` must be a non-negative integer"), (0, -1, "`n` must be a non-negative"),
     (0, 2.0, "`n` must be a non-negative integer"),
     (0, SEED_STRIDE + 1, "`n` must be at most SEED_STRIDE = 10000000")],
)
def test_run_seeds_rejects_bad_arguments(seed, n, message):
    with pytest.raises(ValueError, match=message):
        run_seeds(seed, n)


def test_torch_generator_seeds_from_the_first_64_bit_word():
    ss = np.random.SeedSequence(0)
    gen = torch_generator(ss)
    assert gen.initial_seed() == 7896617691693857887  # pinned: the committed tables use it
    assert gen.initial_seed() == int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))
    assert gen.device == torch.device("cpu")
    assert torch_generator(ss, device="cpu").initial_seed() == gen.initial_seed()
    a, b = np.random.SeedSequence(5).spawn(2)
    assert torch_generator(a).initial_seed() != torch_generator(b).initial_seed()
    x = torch.randn(4, generator=torch_generator(np.random.SeedSequence(5)))
    assert torch.equal(x, torch.randn(4, generator=torch_generator(np.random.SeedSequence(5))))
    with pytest.raises(TypeError, match="`seed_sequence` must be a numpy.random.SeedSequence"):
        torch_generator(5)


def test_sub_seed_is_the_first_32_bit_word():
    assert sub_seed(np.random.SeedSequence(0)) == 2968811710  # pinned
    ss = np.random.SeedSequence([0, 1, 0])
    assert sub_seed(ss) == int(ss.generate_state(1, np.uint32)[0]) == 3964924996
    assert all(0 <= sub_seed(s) < 2**32 for s in np.random.SeedSequence(9).spawn(8))
    with pytest.raises(TypeError, match="`seed_sequence`"):
        sub_seed(np.random.default_rng(0))


def test_per_sample_streams_are_one_fresh_generator_per_seed(mix):
    seeds = [4, 10**7 + 1, 0]
    noise = randn_per_sample(seeds, (2, 3), dtype=F64)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        assert torch.equal(noise[i], torch.randn(2, 3, dtype=F64, generator=g))
    # mixture_samples draws a different stream from the same seeds: one uniform, then normals.
    got = mixture_samples(mix, seeds, 0.3, dtype=F64)
    u, eps = torch.empty(3, dtype=F64), torch.empty(3, mix.dim, dtype=F64)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        u[i] = torch.rand((), dtype=F64, generator=g)
        eps[i] = torch.randn(mix.dim, dtype=F64, generator=g)
    assert torch.equal(got, mix.sample_from_noise(u, eps, 0.3, dtype=F64))


def test_as_seeds_treats_numpy_integers_like_ints():
    assert as_seeds(np.int64(3)) == as_seeds(3) == [0, 1, 2]
    assert as_seeds(torch.tensor([5, 7])) == [5, 7]
    assert as_seeds(range(2, 4)) == [2, 3]
    with pytest.raises(TypeError, match="got bool"):
        as_seeds(True)
    with pytest.raises(TypeError, match="got bool"):
        as_seeds(np.bool_(True))
    with pytest.raises(ValueError, match="as a count must be non-negative"):
        as_seeds(np.int32(-1))
    with pytest.raises(ValueError, match="`seeds` must be non-negative"):
        as_seeds([1, -2])


def test_initial_noise_checks_sigma_max():
    assert torch.equal(initial_noise(3, (2,), np.float64(2.0)), initial_noise(3, (2,), 2))
    for bad in (0.0, -1.0, float("inf"), True, "5"):
        with pytest.raises(ValueError, match="`sigma_max`"):
            initial_noise(3, (2,), bad)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: as_seeds([1.5]), TypeError, "`seeds` must hold integers, got 1.5"),
        (lambda: as_seeds(["a"]), TypeError, "`seeds` must hold integers"),
        (lambda: as_seeds(None), TypeError, "`seeds` must be an int or a sequence of ints"),
        (lambda: as_seeds(np.float64(3)), TypeError, "`seeds` must be an int or a sequence"),
        (lambda: as_seeds([2**70]), ValueError, "`seeds` must be at most MAX_SEED"),
        (lambda: run_seeds(10**13, 2), ValueError, "`seed` must be at most MAX_RUN_SEED"),
        (lambda: randn_per_sample(2, (-1,)), ValueError, "`dims` must be a non-negative"),
        (lambda: randn_per_sample(2, [1.5]), ValueError, "`dims` must be a non-negative"),
        (lambda: randn_per_sample(2, 2), TypeError, "`dims` must be a sequence"),
        (lambda: randn_per_sample(2, (2,), dtype=torch.int64), TypeError, "`dtype` must be a"),
        (lambda: initial_noise(2, (2,), 1e300), ValueError, "`sigma_max` = 1e\\+300 overflows"),
        (lambda: mixture_samples(None, 3), TypeError, "`mixture` must be a GaussianMixture"),
    ],
)
def test_bad_seeds_dims_and_levels_are_named(call, exc, message):
    """Issue 12: seed 1.5 was truncated to 1, dims 1.5 to 1, an integer dtype rounded the
    noise, σ_max = 1e300 gave Inf noise, seeds beyond 64 bits overflowed inside torch."""
    with pytest.raises(exc, match=message):
        call()
