"""`ToyWorld` and the tree's branch geometry: bad input is named (issue 12); the geometry
matches the mixture it describes."""

import numpy as np
import pytest

from stiffkit.diffusion.mixtures.tree import TREE_DEPTH, TREE_POINTS_PER_BRANCH
from stiffkit.paper import toy_world, tree_branch_depths, tree_branches


def test_initial_state_names_sigma_max():
    """Issue 12: a negative σ_max was reported as `sigma`."""
    with pytest.raises(ValueError, match="`sigma_max` must be a finite number >= 0"):
        toy_world().initial_state(3, -1.0)


def test_branch_depths_form_a_binary_tree_in_pre_order():
    depth = tree_branch_depths()
    assert len(depth) == 2**TREE_DEPTH - 1
    assert [int((depth == d).sum()) for d in range(TREE_DEPTH)] == [2**d for d in range(TREE_DEPTH)]
    assert depth[0] == 0 and np.all(np.diff(depth) <= 1)  # pre-order: one level down at a time


def test_branches_match_the_mixture_components():
    geo = tree_branches()
    means = toy_world().exact.means.numpy().reshape(len(geo), TREE_POINTS_PER_BRANCH, 2)
    np.testing.assert_allclose(geo[["cx", "cy"]].to_numpy(), means.mean(axis=1), rtol=1e-12)
    u, n = geo[["ux", "uy"]].to_numpy(), geo[["nx", "ny"]].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.einsum("bi,bi->b", u, n), 0.0, atol=1e-12)
    # every component of a branch lies on its line through the centre along u
    rel = means - geo[["cx", "cy"]].to_numpy()[:, None]
    assert np.abs(np.einsum("bpi,bi->bp", rel, n)).max() < 1e-9
    assert (geo.width > 0).all() and (geo.clearance > 0).all()
    # thin tips: widths shrink with depth
    per_depth = geo.groupby("depth").width.median().to_numpy()
    assert np.all(np.diff(per_depth) < 0)
