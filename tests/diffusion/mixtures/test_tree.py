"""Tests for ``stiffkit.diffusion.mixtures.tree``: the autoguidance toy's tree.

Truth is the recipe of docs/theory/toy_world.md, recomputed by hand for the first component.
"""

import math

import numpy as np
import pytest
import torch
from _mixture_data import F64, _moments

from stiffkit.diffusion.mixtures import tree_gmm


@pytest.mark.parametrize(("classes", "count"), [("A", 1016), ("B", 1016), ("AB", 2032)])
def test_tree_component_counts(classes, count):
    gmm = tree_gmm(classes)
    assert gmm.num_components == count and gmm.dim == 2
    assert gmm.means.shape == (count, 2) and gmm.covs.shape == (count, 2, 2)
    torch.testing.assert_close(gmm.weights.sum(), torch.tensor(1.0, dtype=F64))


def test_tree_moments_match_design():
    mean_a, _ = _moments(tree_gmm("A"))
    assert torch.allclose(mean_a, torch.tensor([0.37, 0.37], dtype=F64), atol=0.01)
    _, cov_ab = _moments(tree_gmm("AB"))
    assert torch.allclose(cov_ab.diagonal().sqrt(), torch.full((2,), 0.50, dtype=F64), atol=0.02)


def test_tree_trunk_follows_recipe():
    # The first draw of RandomState(2) sets class A's trunk length; its first component
    # sits at t = 0.07 along the π/4 direction, scaled per axis.
    dist = 0.292 * (1 + 0.2 * np.random.RandomState(2).randn())
    u = np.array([1.0, 1.0]) / math.sqrt(2.0)
    scale = np.array([1.3136, 1.3844])
    first = (np.array([0.0030, 0.0325]) + u * dist * 0.07) * scale
    np.testing.assert_allclose(tree_gmm("A").means[0].numpy(), first, rtol=1e-12)
    size = scale * dist * 0.06
    cov = (np.outer(u, u) + (np.eye(2) - np.outer(u, u)) * (0.2 / dist) ** 2) * np.outer(size, size)
    np.testing.assert_allclose(tree_gmm("A").covs[0].numpy(), cov, rtol=1e-12)


def test_tree_classes_share_one_stream_and_renormalise():
    a, b, ab = tree_gmm("A"), tree_gmm("B"), tree_gmm("AB")
    assert torch.equal(ab.means, torch.cat([a.means, b.means]))
    assert torch.equal(ab.covs, torch.cat([a.covs, b.covs]))
    torch.testing.assert_close(ab.weights[:1016] / ab.weights[:1016].sum(), a.weights)
    torch.testing.assert_close(ab.weights[1016:] / ab.weights[1016:].sum(), b.weights)
    # B grows after A on the same stream, so it is not A's mirror image.
    assert not torch.allclose(b.means, -a.means, atol=1e-3)
