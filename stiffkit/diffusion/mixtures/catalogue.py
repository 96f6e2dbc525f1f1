"""Simple mixtures of the catalogue: rings and grids in 2-D, random anisotropic ones in d-D.

The 2-D tree of the autoguidance toy has its own module, :mod:`~stiffkit.diffusion.mixtures.tree`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from stiffkit._utils import check_int, check_positive, check_real
from stiffkit.diffusion.mixtures.mixture import GaussianMixture

__all__ = ["grid_gmm", "random_gmm", "ring_gmm"]

#: ``random_gmm`` builds full covariances up to this dimension, low-rank ones above it.
FULL_RANK_MAX_DIM = 256
_F64 = torch.float64


def _equal_isotropic(means: torch.Tensor, std: float) -> GaussianMixture:
    """Equal-weight components ``N(μ_k, std² I)`` at `means` ``[K, d]``."""
    k, d = means.shape
    return GaussianMixture(torch.ones(k), means, torch.eye(d, dtype=_F64).expand(k, d, d) * std**2)


def ring_gmm(num: int = 8, radius: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """Return ``num`` equal isotropic 2-D Gaussians (width ``std > 0``) on a circle of finite
    `radius`.

    Raises
    ------
    ValueError
        Naming the argument: a `num` that is not a positive integer, a `radius` that is not
        finite, a `std` that is not positive.
    """
    num = check_int(num, "num", 1)
    radius = check_real(radius, "radius")
    std = check_real(std, "std", lo=0, lo_open=True)
    angle = torch.arange(num, dtype=_F64) * (2 * math.pi / num)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # [num, 2]
    return _equal_isotropic(means, std)


def grid_gmm(n: int = 5, spacing: float = 0.5, std: float = 0.05) -> GaussianMixture:
    """Return ``n × n`` equal isotropic 2-D Gaussians on a grid centred at the origin.

    Raises
    ------
    ValueError
        Naming the argument: an `n` that is not a positive integer, a `spacing` that is not
        finite, a `std` that is not positive.
    """
    n = check_int(n, "n", 1)
    spacing = check_real(spacing, "spacing")
    std = check_real(std, "std", lo=0, lo_open=True)
    ticks = (torch.arange(n, dtype=_F64) - (n - 1) / 2) * spacing
    means = torch.cartesian_prod(ticks, ticks)  # [n², 2]
    return _equal_isotropic(means, std)


def random_gmm(
    dim: int,
    num_components: int,
    *,
    seed: int = 0,
    rank: int | None = None,
    min_std: float = 0.05,
    condition: float = 100.0,
    mean_std: float = 1.0,
) -> GaussianMixture:
    """Return a random anisotropic ``dim``-dimensional mixture with controlled stiffness.

    Each ``Σ_k`` has eigenvalues from ``min_std²`` to ``condition · min_std²`` along a random
    orthonormal basis, so ``J_f``'s largest eigenvalue peaks near ``1/(2 min_std)``.
    With ``rank = dim`` (default for ``dim ≤ FULL_RANK_MAX_DIM``) the ``dim`` eigenvalues
    are log-spaced over that range. With ``rank < dim`` (default 16 above it) ``Σ_k`` is
    ``min_std² I`` plus ``rank`` random spikes log-spaced up to ``condition · min_std²``:
    memory ``K·dim·rank`` floats instead of ``K·dim²`` (``d = 4096`` builds in well under a
    second). Means are ``N(0, mean_std² I)``; weights uniform on [0.5, 1.5], normalised.

    Parameters
    ----------
    dim, num_components : int
    seed : int
        Seed of the private ``numpy.random.Generator``.
    rank, min_std, condition, mean_std : see above.

    Raises
    ------
    ValueError
        Naming the argument: counts that are not positive integers (a `rank` above `dim`),
        a negative or non-integer `seed`, a `condition` below 1, a non-positive `min_std`,
        a negative or non-finite `mean_std`.
    """
    dim = check_int(dim, "dim", 1)
    num_components = check_int(num_components, "num_components", 1)
    seed = check_int(seed, "seed", 0)
    check_real(condition, "condition")
    if not (math.isfinite(condition) and condition >= 1):
        raise ValueError("`condition` must be at least 1.")
    check_real(min_std, "min_std")
    check_positive(min_std, "min_std")
    mean_std = check_real(mean_std, "mean_std", lo=0)
    if rank is None:
        rank = dim if dim <= FULL_RANK_MAX_DIM else min(dim, 16)
    else:
        rank = check_int(rank, "rank", 1)
        if rank > dim:
            raise ValueError(f"`rank` must lie in [1, {dim}], got {rank}.")
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 1.5, num_components)
    means = mean_std * rng.standard_normal((num_components, dim))
    q, rr = np.linalg.qr(rng.standard_normal((num_components, dim, rank)))
    q = q * np.sign(np.diagonal(rr, axis1=1, axis2=2))[:, None, :]  # Haar-distributed
    if rank == dim:
        var = np.geomspace(1.0, condition, dim)
    else:
        var = np.geomspace(condition, 1.0, rank + 1)[:-1]  # spikes above the floor
    eigvals = np.tile(var * min_std**2, (num_components, 1))  # [K, rank]
    floor = None if rank == dim else min_std**2
    return GaussianMixture.from_spectral(weights, means, eigvals, q, floor)
