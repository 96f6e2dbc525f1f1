"""Tests for ``stiffkit.diffusion.mixtures.catalogue``: rings, grids, random d-D mixtures."""

import numpy as np
import pytest
import torch
from _mixture_data import EXACT_RTOL, F64, _autograd_score, _gen, _rel_err

from stiffkit.diffusion.mixtures import grid_gmm, random_gmm, ring_gmm


def test_ring_and_grid():
    ring = ring_gmm(8, radius=2.0, std=0.1)
    assert ring.num_components == 8
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((8,), 2.0, dtype=F64))
    torch.testing.assert_close(ring.covs, 0.01 * torch.eye(2, dtype=F64).expand(8, 2, 2))
    grid = grid_gmm(5, spacing=0.5)
    assert grid.num_components == 25
    torch.testing.assert_close(grid.weights @ grid.means, torch.zeros(2, dtype=F64))
    assert set(np.round(grid.means[:, 0].numpy(), 12)) == {-1.0, -0.5, 0.0, 0.5, 1.0}


@pytest.mark.parametrize(("dim", "rank"), [(8, None), (40, 3)])
def test_random_gmm_condition_number(dim, rank):
    gmm = random_gmm(dim, 3, seed=1, rank=rank, min_std=0.1, condition=50.0)
    eig = torch.linalg.eigvalsh(gmm.covs)  # [K, d]
    torch.testing.assert_close(eig[:, 0], torch.full((3,), 0.01, dtype=F64))
    torch.testing.assert_close(eig[:, -1], torch.full((3,), 0.5, dtype=F64))


def test_random_gmm_in_4096_dimensions():
    gmm = random_gmm(4096, 3, seed=0)
    assert gmm.rank < gmm.dim
    x = gmm.sample(4, 0.3, _gen(10))
    assert _rel_err(gmm.score(x, 0.3), _autograd_score(gmm, x, 0.3)) < EXACT_RTOL
    assert _rel_err(gmm.drift(x, 0.3), (x - gmm.denoise(x, 0.3)) / 0.3) < 1e-9
    assert gmm.drift(x.float(), 0.3).dtype == torch.float32


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: ring_gmm(0), "num"),
        (lambda: ring_gmm(2.5), "num"),
        (lambda: grid_gmm(0), "n"),
        (lambda: random_gmm(0, 2), "dim"),
        (lambda: random_gmm(3, True), "num_components"),
        (lambda: random_gmm(3, 2, rank=0), "rank"),
        (lambda: random_gmm(3, 2, min_std=0.0), "min_std"),
        (lambda: random_gmm(3, 2, min_std=float("nan")), "min_std"),
    ],
)
def test_constructors_name_the_bad_argument(build, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        build()


def test_constructors_accept_numpy_integers():
    assert ring_gmm(np.int64(4)).num_components == 4
    assert grid_gmm(np.int32(3)).num_components == 9
    assert random_gmm(np.int64(3), np.int64(2), rank=np.int64(2)).rank == 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ring_gmm(4, float("nan")), "`radius` must be a finite number"),
        (lambda: ring_gmm(4, "a"), "`radius` must be a real number"),
        (lambda: ring_gmm(4, 1.0, 0.0), "`std` must be a finite number > 0"),
        (lambda: ring_gmm(4, 1.0, -0.1), "`std` must be a finite number > 0"),
        (lambda: grid_gmm(3, float("inf")), "`spacing` must be a finite number"),
        (lambda: grid_gmm(3, 0.5, "a"), "`std` must be a real number"),
        (lambda: random_gmm(2, 3, seed=-1), "`seed` must be a non-negative integer"),
        (lambda: random_gmm(2, 3, seed=1.5), "`seed` must be a non-negative integer"),
        (lambda: random_gmm(2, 3, condition="a"), "`condition` must be a real number"),
        (lambda: random_gmm(2, 3, mean_std=float("nan")), "`mean_std` must be a finite number"),
        (lambda: random_gmm(2, 3, mean_std="a"), "`mean_std` must be a real number"),
    ],
)
def test_bad_parameters_are_named(call, message):
    """Issue 12: a NaN radius was reported as `means`, std = 0 as `covs`, a negative std was
    silently squared, strings and seeds were torch / numpy errors."""
    with pytest.raises(ValueError, match=message):
        call()
