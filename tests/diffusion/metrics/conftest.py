"""Fixtures of the metrics tests: a ring, the tree's class A and a small overlapping mixture."""

import pytest
import torch
from _metric_data import F64

from stiffkit.diffusion.mixtures import GaussianMixture, ring_gmm, tree_gmm


@pytest.fixture(scope="module")
def ring() -> GaussianMixture:
    return ring_gmm()


@pytest.fixture(scope="module")
def tree() -> GaussianMixture:
    return tree_gmm("A")


@pytest.fixture(scope="module")
def small_gmm() -> GaussianMixture:
    """Three overlapping anisotropic 2-D components with unequal weights."""
    means = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0]], dtype=F64)
    covs = torch.tensor(
        [[[0.2, 0.05], [0.05, 0.1]], [[0.05, -0.02], [-0.02, 0.3]], [[0.1, 0.0], [0.0, 0.1]]],
        dtype=F64,
    )
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, covs)
