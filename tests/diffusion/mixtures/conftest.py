"""Fixtures of the mixture tests."""

import pytest

from stiffkit.diffusion.mixtures import GaussianMixture, tree_gmm


@pytest.fixture(scope="module")
def tree() -> GaussianMixture:
    return tree_gmm("AB")
