"""The 2-D toy world of the paper's figures: the tree, its learned models, and guidance.

One object gathers what every experiment needs (docs/theory/toy_world.md): the exact class-A tree
mixture and the unconditional A∪B tree, the learned class-A model (the *learned ODE*), the
autoguidance guide (smaller, less trained) and the CFG guide (unconditional), and the
guidance weights of the autoguidance toy. :meth:`ToyWorld.denoiser` builds each method's
denoiser — exact or learned — so experiments never assemble guidance by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import check_real
from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.mixtures import GaussianMixture, tree_gmm
from stiffkit.diffusion.mixtures.tree import TREE_DEPTH, TREE_POINTS_PER_BRANCH, _tree_components
from stiffkit.diffusion.models import EnergyDenoiser, load_pretrained
from stiffkit.diffusion.noise import mixture_samples
from stiffkit.diffusion.schedules import SIGMA_MIN, TOY_SIGMA_MAX, edm_sigmas

__all__ = ["ToyWorld", "toy_world", "tree_branches", "tree_branch_depths", "GUIDANCE_WEIGHTS",
           "GUIDED_METHODS"]

#: Guidance weights of the autoguidance toy (Karras et al. 2024): CFG 4, AG 3 (EDM2 convention).
GUIDANCE_WEIGHTS = {"cfg": 4.0, "ag": 3.0}
#: Methods :meth:`ToyWorld.denoiser` knows: no guidance, classifier-free, autoguidance.
GUIDED_METHODS = ("none", "cfg", "ag")


@dataclass(frozen=True, eq=False)
class ToyWorld:
    """The tree world: exact mixtures and learned denoisers (see :func:`toy_world`).

    Attributes
    ----------
    exact : GaussianMixture
        Class A of the tree (1016 components), the target distribution.
    exact_uncond : GaussianMixture
        Classes A∪B (2032 components), the exact unconditional distribution.
    main, ag_guide, cfg_guide : EnergyDenoiser
        The learned class-A model, the autoguidance guide and the unconditional CFG guide.
    """

    exact: GaussianMixture
    exact_uncond: GaussianMixture
    main: EnergyDenoiser
    ag_guide: EnergyDenoiser
    cfg_guide: EnergyDenoiser

    def denoiser(self, guidance: str = "none", *, learned: bool = True, w: float | None = None):
        """Return the denoiser of a method.

        Parameters
        ----------
        guidance : {"none", "cfg", "ag"}
            No guidance, CFG (guide: the unconditional model) or autoguidance (guide: the
            weaker model; learned only — there is no exact "bad version").
        learned : bool
            Learned models (the learned ODE) or the exact mixtures.
        w : float, optional
            Guidance weight (default :data:`GUIDANCE_WEIGHTS`).
        """
        if guidance not in GUIDED_METHODS:
            raise ValueError(f"`guidance` must be one of {GUIDED_METHODS}, got {guidance!r}.")
        main = self.main if learned else self.exact
        if guidance == "none":
            return main
        if guidance == "ag" and not learned:
            raise ValueError("Autoguidance needs the learned guide: use `learned=True`.")
        guide = {"cfg": self.cfg_guide if learned else self.exact_uncond,
                 "ag": self.ag_guide}[guidance]
        return Guided(main, guide, GUIDANCE_WEIGHTS[guidance] if w is None else w)

    def guidance_direction(self, guidance: str, x: Tensor, sigma, *,
                           learned: bool = True) -> Tensor:
        """Return the guidance direction ``D − D_g`` at ``(x, σ)`` (CFG: D − D_uncond;
        AG: D − D_bad)."""
        g = self.denoiser(guidance, learned=learned)
        if not isinstance(g, Guided):
            raise ValueError("`guidance` must be 'cfg' or 'ag'.")
        return g.denoiser(x, sigma) - g.guide(x, sigma)

    def initial_state(self, seeds: int | Sequence[int] | Tensor, sigma_max: float = TOY_SIGMA_MAX,
                      *, dtype: torch.dtype = torch.float32) -> Tensor:
        """Return exact samples of class A's ``p_{σ_max}`` with per-sample seeds (as the toy
        does)."""
        check_real(sigma_max, "sigma_max", lo=0)
        return mixture_samples(self.exact, seeds, sigma_max, dtype=dtype)

    @staticmethod
    def sigmas(num_steps: int, sigma_min: float = SIGMA_MIN,
               sigma_max: float = TOY_SIGMA_MAX) -> Tensor:
        """Return the toy's EDM grid (σ_max = 5, σ_min = 0.002, ρ = 7) with the trailing 0."""
        return edm_sigmas(num_steps, sigma_min, sigma_max)


@functools.lru_cache(maxsize=4)
def toy_world(dtype: torch.dtype = torch.float32) -> ToyWorld:
    """Return the tree world with the shipped learned models in `dtype` (cached)."""
    return ToyWorld(
        exact=tree_gmm("A"),
        exact_uncond=tree_gmm("AB"),
        main=load_pretrained("main", dtype=dtype),
        ag_guide=load_pretrained("ag_guide", dtype=dtype),
        cfg_guide=load_pretrained("cfg_guide", dtype=dtype),
    )


def tree_branch_depths() -> np.ndarray:
    """Return the depth of each of class A's branches, in the order the tree grows them.

    Pre-order: a branch, then its two children (sign +1 first), as the tree mixture builds
    its components, ``TREE_POINTS_PER_BRANCH`` consecutive ones per branch.
    """
    out: list[int] = []

    def grow(depth: int) -> None:
        if depth >= TREE_DEPTH:
            return
        out.append(depth)
        grow(depth + 1)  # child with sign +1
        grow(depth + 1)  # child with sign −1

    grow(0)
    return np.array(out)


def tree_branches() -> pd.DataFrame:
    """Return class A's branches: centre, unit direction, normal, clean width, clearance.

    Each branch is ``TREE_POINTS_PER_BRANCH`` consecutive components on a segment
    (docs/theory/toy_world.md, eq. (2)), so the centre is their mean and the direction that of
    the first → last mean. The width is the clean standard deviation across the branch,
    ``sqrt(nᵀ Σ n)``; the clearance
    is the distance, in widths, from the centre to the nearest component of another branch
    within a strip of ±3 widths around the perpendicular line.
    """
    _, means, covs = _tree_components()["A"]
    depth = tree_branch_depths()
    nb = len(depth)
    m = means.reshape(nb, TREE_POINTS_PER_BRANCH, 2)
    c = covs.reshape(nb, TREE_POINTS_PER_BRANCH, 2, 2)
    centre = m.mean(axis=1)
    u = m[:, -1] - m[:, 0]
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    n = np.stack([-u[:, 1], u[:, 0]], axis=1)
    width = np.sqrt(np.einsum("bi,bij,bj->b", n, c[:, 0], n))
    clearance = np.empty(nb)
    for b in range(nb):
        rel = np.delete(m, b, axis=0).reshape(-1, 2) - centre[b]
        strip = np.abs(rel @ u[b]) < 3 * width[b]
        clearance[b] = np.abs(rel[strip] @ n[b]).min() / width[b] if strip.any() else np.inf
    return pd.DataFrame(dict(branch=np.arange(nb), depth=depth, cx=centre[:, 0], cy=centre[:, 1],
                             ux=u[:, 0], uy=u[:, 1], nx=n[:, 0], ny=n[:, 1], width=width,
                             clearance=clearance))
