"""Initial states with per-sample seeds: sample ``i`` never depends on the batch size.

Every sample draws its noise from its own ``torch.Generator`` seeded with ``seeds[i]`` (the
idea of EDM's stacked random generator), so a batch of 16 and a batch of 16k share their
first 16 samples bit for bit, and any sample can be regenerated alone from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["as_seeds", "randn_per_sample", "initial_noise", "mixture_samples"]


def as_seeds(seeds: int | Sequence[int] | Tensor) -> list[int]:
    """Return a list of seeds; an int ``n`` means ``range(n)``.

    Raises
    ------
    ValueError
        For a negative count, negative seeds, or a non-1-D sequence.
    """
    if isinstance(seeds, bool):
        raise TypeError("`seeds` must be an int or a sequence of ints, got bool.")
    if isinstance(seeds, int):
        if seeds < 0:
            raise ValueError(f"`seeds` as a count must be non-negative, got {seeds}.")
        return list(range(seeds))
    if isinstance(seeds, Tensor):
        if seeds.ndim != 1 or seeds.is_floating_point() or seeds.is_complex():
            raise ValueError("`seeds` must be a 1-D integer tensor.")
        seeds = seeds.tolist()
    out = [int(s) for s in seeds]
    if any(s < 0 for s in out):
        raise ValueError("`seeds` must be non-negative.")
    return out


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
    """
    seeds = as_seeds(seeds)
    dims = tuple(int(d) for d in dims)
    out = torch.empty(len(seeds), *dims, dtype=torch.float64)
    gen = torch.Generator()
    for i, seed in enumerate(seeds):
        gen.manual_seed(seed)
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
    """Return ``σ_max · N(0, I)`` start states ``[len(seeds), *dims]`` with per-sample seeds."""
    if not (isinstance(sigma_max, (int, float)) and 0 < sigma_max < float("inf")):
        raise ValueError(f"`sigma_max` must be positive and finite, got {sigma_max!r}.")
    return randn_per_sample(seeds, dims, dtype=dtype, device=device) * sigma_max


def mixture_samples(
    mixture,
    seeds: int | Sequence[int] | Tensor,
    sigma: float = 0.0,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Return exact samples of the mixture's ``p_σ`` with per-sample seeds, ``[n, d]``.

    Sample ``i`` uses one uniform (the component) and ``d`` normals from ``seeds[i]``
    (:meth:`GaussianMixture.sample_from_noise`). Starting a sampler from exact samples of
    ``p_{σ_max}`` (as the autoguidance toy does) removes the mismatch between
    ``N(0, σ_max² I)`` and the true marginal from the comparison.
    """
    seeds = as_seeds(seeds)
    u = torch.empty(len(seeds), dtype=torch.float64)
    eps = torch.empty(len(seeds), mixture.dim, dtype=torch.float64)
    gen = torch.Generator()
    for i, seed in enumerate(seeds):
        gen.manual_seed(seed)
        u[i] = torch.rand((), dtype=torch.float64, generator=gen)
        eps[i] = torch.randn(mixture.dim, dtype=torch.float64, generator=gen)
    return mixture.sample_from_noise(u, eps, sigma, dtype=dtype)
