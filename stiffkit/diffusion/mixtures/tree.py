"""The 2-D tree mixture of the autoguidance toy: a fractal of thin anisotropic components.

Two classes (``"A"`` and ``"B"``) grow from one ``numpy.random.RandomState(TREE_SEED)``, A's
draws first: each branch of depth ``< TREE_DEPTH`` carries ``TREE_POINTS_PER_BRANCH``
components along its axis and splits into two children at random angles, so each class has
``127 × 8 = 1016`` components whose widths shrink geometrically towards the tips — the
source of the probability-flow ODE's stiffness at small σ.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from stiffkit.diffusion.mixtures.mixture import GaussianMixture

__all__ = ["tree_gmm"]

TREE_SEED = 2
TREE_ORIGIN = (0.0030, 0.0325)
TREE_SCALE = (1.3136, 1.3844)
TREE_DEPTH = 7
TREE_CLASS_ANGLES = {"A": math.pi / 4, "B": 5 * math.pi / 4}
TREE_POINTS_PER_BRANCH = 8


@functools.lru_cache(maxsize=1)
def _tree_components() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Grow both classes of the tree from one RandomState (A's draws come first)."""
    rnd = np.random.RandomState(TREE_SEED)
    scale = np.array(TREE_SCALE)
    out = {}
    for name, angle in TREE_CLASS_ANGLES.items():
        parts: list[tuple[float, np.ndarray, np.ndarray]] = []
        _grow_branch(rnd, np.array(TREE_ORIGIN), angle, 0, scale, parts)
        w, m, c = (np.array([p[i] for p in parts]) for i in range(3))
        for arr in (w, m, c):
            arr.setflags(write=False)
        out[name] = (w, m, c)
    return out


def _grow_branch(rnd, pos: np.ndarray, angle: float, depth: int, scale: np.ndarray, parts):
    """Append one branch's components, then recurse into its two children."""
    if depth >= TREE_DEPTH:
        return
    u = np.array([math.cos(angle), math.sin(angle)])
    dist = 0.292 * 0.8**depth * (1 + 0.2 * rnd.randn())
    thick = 0.2 * 0.8**depth / dist
    size = scale * dist * 0.06  # per-axis width: [2]
    uu = np.outer(u, u)
    cov = (uu + (np.eye(2) - uu) * thick**2) * np.outer(size, size)
    for t in np.linspace(0.07, 0.93, TREE_POINTS_PER_BRANCH):
        parts.append((dist * 0.5**depth, (pos + u * dist * t) * scale, cov))
    for sign in (1, -1):
        child = angle + sign * 0.7**depth * (1 + 0.2 * rnd.randn())
        _grow_branch(rnd, pos + u * dist, child, depth + 1, scale, parts)


def tree_gmm(classes: str = "AB", *, chunk_size: int | None = None) -> GaussianMixture:
    """Return the 2-D tree mixture of the autoguidance toy (docs/theory/toy_world.md).

    Parameters
    ----------
    classes : {"A", "B", "AB"}
        Which class(es) to keep; weights are normalised over the selection. Both classes
        are always grown because they share one random stream.

    Returns
    -------
    GaussianMixture
        1016 components per class (127 branches × 8), 2032 for ``"AB"``.
    """
    if classes not in ("A", "B", "AB"):
        raise ValueError(f'`classes` must be "A", "B" or "AB", got {classes!r}.')
    comps = _tree_components()
    w, m, c = (np.concatenate([comps[name][i] for name in classes]) for i in range(3))
    return GaussianMixture(w, m, c, chunk_size=chunk_size)

