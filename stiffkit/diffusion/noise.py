"""Per-sample seeds: noise ``i`` never depends on the batch size; the one home of seed schemes.

Every sample draws its noise from its own ``torch.Generator`` seeded with ``seeds[i]`` (the
idea of EDM's stacked random generator), so a batch of 16 and a batch of 16k share their
first 16 initial states bit for bit, and any one can be regenerated alone from its seed.
(The *samples* a sampler makes from them agree across batch sizes to roundoff only: see the
Notes of :func:`stiffkit.diffusion.sample`.)

The seed schemes built on it live here too: the per-sample seeds of a run
(:func:`run_seeds`, ``seed · SEED_STRIDE + k``), a ``torch.Generator`` from a NumPy
``SeedSequence`` (:func:`torch_generator`) and an integer sub-seed of one
(:func:`sub_seed`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_float_dtype, check_int, check_real

__all__ = [
    "SEED_STRIDE",
    "MAX_SEED",
    "MAX_RUN_SEED",
    "as_seeds",
    "run_seeds",
    "torch_generator",
    "sub_seed",
    "randn_per_sample",
    "initial_noise",
    "mixture_samples",
]

#: Sample ``k`` of the run with base seed ``s`` uses the per-sample seed ``s · SEED_STRIDE + k``
#: (:func:`run_seeds`), so runs of different base seeds never share a sample as long as each
#: has at most ``SEED_STRIDE`` samples.
SEED_STRIDE = 10**7
#: The largest per-sample seed (``torch.Generator.manual_seed`` takes a signed 64-bit int).
MAX_SEED = 2**63 - 1
#: The largest base seed of :func:`run_seeds` (its last sample's seed stays within MAX_SEED).
MAX_RUN_SEED = MAX_SEED // SEED_STRIDE - 1


def as_seeds(seeds: int | Sequence[int] | Tensor) -> list[int]:
    """Return a list of seeds; an integer ``n`` (Python or NumPy) means ``range(n)``.

    Raises
    ------
    TypeError
        For a bool, a non-integer seed or something that is not a sequence.
    ValueError
        For a negative count, negative seeds, seeds above :data:`MAX_SEED`, or a non-1-D
        sequence.
    """
    if isinstance(seeds, bool | np.bool_):
        raise TypeError("`seeds` must be an int or a sequence of ints, got bool.")
    if isinstance(seeds, int | np.integer):
        if seeds < 0:
            raise ValueError(f"`seeds` as a count must be non-negative, got {seeds}.")
        return list(range(int(seeds)))
    if isinstance(seeds, Tensor):
        if seeds.ndim != 1 or seeds.is_floating_point() or seeds.is_complex():
            raise ValueError("`seeds` must be a 1-D integer tensor.")
        seeds = seeds.tolist()
    if isinstance(seeds, str | bytes) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"`seeds` must be an int or a sequence of ints, got {seeds!r}.")
    seeds = list(seeds)
    bad = [s for s in seeds
           if isinstance(s, bool | np.bool_) or not isinstance(s, int | np.integer)]
    if bad:
        raise TypeError(f"`seeds` must hold integers, got {bad[0]!r}.")
    out = [int(s) for s in seeds]
    if any(s < 0 for s in out):
        raise ValueError("`seeds` must be non-negative.")
    if any(s > MAX_SEED for s in out):
        raise ValueError(f"`seeds` must be at most MAX_SEED = 2**63 - 1 (torch's seed range), "
                         f"got {max(out)}.")
    return out


def run_seeds(seed: int, n: int) -> list[int]:
    """Return the per-sample seeds ``seed · SEED_STRIDE + k``, ``k < n``, of run `seed`.

    Sample ``k``'s seed does not depend on `n`, so a quick run's initial states are bitwise
    the first of a full run's (its samples then agree with the full run's to roundoff: see
    the Notes of :func:`stiffkit.diffusion.sample`), and different base seeds never share a
    sample.

    Raises
    ------
    ValueError
        For a negative `seed` or `n`, ``seed > MAX_RUN_SEED`` or ``n > SEED_STRIDE``.
    """
    seed = check_int(seed, "seed", 0)
    n = check_int(n, "n", 0)
    if seed > MAX_RUN_SEED:
        raise ValueError(f"`seed` must be at most MAX_RUN_SEED = {MAX_RUN_SEED} (its samples' "
                         f"seeds seed · {SEED_STRIDE} + k must fit torch's 64 bits), got {seed}.")
    if n > SEED_STRIDE:
        raise ValueError(f"`n` must be at most SEED_STRIDE = {SEED_STRIDE} (else the samples "
                         f"of base seeds {seed} and {seed + 1} overlap), got {n}.")
    start = seed * SEED_STRIDE
    return list(range(start, start + n))


def torch_generator(
    seed_sequence: np.random.SeedSequence, device: torch.device | str | None = None
) -> torch.Generator:
    """Return a ``torch.Generator`` on `device` (default CPU) seeded from `seed_sequence`.

    The seed is the sequence's first 64-bit word shifted right by one (a non-negative
    int63), so independent streams of one ``SeedSequence`` (``spawn``) give independent
    torch generators.
    """
    if not isinstance(seed_sequence, np.random.SeedSequence):
        raise TypeError(f"`seed_sequence` must be a numpy.random.SeedSequence, "
                        f"got {type(seed_sequence).__name__}.")
    gen = torch.Generator() if device is None else torch.Generator(device=device)
    gen.manual_seed(int(seed_sequence.generate_state(1, np.uint64)[0] >> np.uint64(1)))
    return gen


def sub_seed(seed_sequence: np.random.SeedSequence) -> int:
    """Return an integer seed in ``[0, 2³²)`` from `seed_sequence` (its first 32-bit word).

    For APIs that take an integer seed (such as
    :func:`stiffkit.diffusion.metrics.evaluate`) fed from one stream of a ``SeedSequence``.
    """
    if not isinstance(seed_sequence, np.random.SeedSequence):
        raise TypeError(f"`seed_sequence` must be a numpy.random.SeedSequence, "
                        f"got {type(seed_sequence).__name__}.")
    return int(seed_sequence.generate_state(1, np.uint32)[0])


def _per_seed(seeds: list[int]) -> Iterator[torch.Generator]:
    """Yield one CPU generator per seed, freshly seeded with it (the same object, reseeded)."""
    gen = torch.Generator()
    for seed in seeds:
        gen.manual_seed(seed)
        yield gen


def randn_per_sample(
    seeds: int | Sequence[int] | Tensor,
    dims: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return standard normal noise ``[len(seeds), *dims]``, row ``i`` from ``seeds[i]``.

    Drawn in float64 on the CPU and then cast, so the values do not depend on `dtype`'s
    sampling path or on the device.

    Raises
    ------
    TypeError
        For bad `seeds` (:func:`as_seeds`), `dims` that is not a sequence of non-negative
        integers, or a `dtype` that is not floating.
    """
    seeds = as_seeds(seeds)
    check_float_dtype(dtype)
    if isinstance(dims, str | bytes) or not hasattr(dims, "__iter__"):
        raise TypeError(f"`dims` must be a sequence of non-negative integers, got {dims!r}.")
    dims = tuple(check_int(d, "dims", 0) for d in dims)
    out = torch.empty(len(seeds), *dims, dtype=torch.float64)
    for i, gen in enumerate(_per_seed(seeds)):
        out[i] = torch.randn(dims, dtype=torch.float64, generator=gen)
    return out.to(device=device, dtype=dtype)


def initial_noise(
    seeds: int | Sequence[int] | Tensor,
    dims: Sequence[int],
    sigma_max: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return ``σ_max · N(0, I)`` start states ``[len(seeds), *dims]`` with per-sample seeds.

    Raises
    ------
    ValueError
        For a `sigma_max` that is not a positive number, or so large that the noise
        overflows `dtype`; and as :func:`randn_per_sample`.
    """
    check_real(sigma_max, "sigma_max", lo=0, lo_open=True)
    out = randn_per_sample(seeds, dims, dtype=dtype, device=device) * sigma_max
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"`sigma_max` = {sigma_max:g} overflows {dtype}: the noise is Inf.")
    return out


def mixture_samples(
    mixture,
    seeds: int | Sequence[int] | Tensor,
    sigma: float = 0.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Return exact samples of the mixture's ``p_σ`` with per-sample seeds, ``[n, d]``.

    Sample ``i`` uses one uniform (the component) and ``d`` normals from ``seeds[i]``
    (:meth:`GaussianMixture.sample_from_noise`), a different stream from
    :func:`randn_per_sample`'s. Starting a sampler from exact samples of ``p_{σ_max}`` (as the
    autoguidance toy does) removes the mismatch between ``N(0, σ_max² I)`` and the true
    marginal from the comparison.
    """
    if not callable(getattr(mixture, "sample_from_noise", None)):
        raise TypeError(f"`mixture` must be a GaussianMixture (with `sample_from_noise`), got "
                        f"{type(mixture).__name__}.")
    seeds = as_seeds(seeds)
    u = torch.empty(len(seeds), dtype=torch.float64)
    eps = torch.empty(len(seeds), mixture.dim, dtype=torch.float64)
    for i, gen in enumerate(_per_seed(seeds)):
        u[i] = torch.rand((), dtype=torch.float64, generator=gen)
        eps[i] = torch.randn(mixture.dim, dtype=torch.float64, generator=gen)
    return mixture.sample_from_noise(u, eps, sigma, dtype=dtype)
