"""Exact Gaussian mixtures: the closed-form denoisers behind the 2-D (and d-D) showcases.

For ``p_0 = Σ_k w_k N(μ_k, Σ_k)`` the noisy marginal is ``p_σ = Σ_k w_k N(μ_k, C_k)`` with
``C_k = Σ_k + σ² I``, and everything the probability-flow ODE needs has a closed form
(docs/theory/toy_world.md, eqs. (3)–(5)): responsibilities ``r_k ∝ w_k N(x; μ_k, C_k)``,
score ``Σ_k r_k s_k`` with
``s_k = C_k⁻¹(μ_k − x)``, denoiser ``D = x + σ² score`` (Tweedie), drift
``f = (x − D)/σ = −σ score`` and its Jacobian ``J_f = −σ H``, with the Hessian of
``log p_σ``::

    H = −Σ_k r_k C_k⁻¹ + Σ_k r_k s_k s_kᵀ − (Σ_k r_k s_k)(Σ_k r_k s_k)ᵀ.

Every covariance is stored through its eigendecomposition ``Σ_k = U_k diag(e_k) U_kᵀ +
τ_k² (I − U_k U_kᵀ)`` with ``U_k: [d, r]`` orthonormal. Full covariances have ``r = d`` (the
``τ`` part vanishes); ``r < d`` is the "isotropic floor plus low-rank spikes" form that keeps
``d = 4096`` cheap (memory ``K·d·r`` instead of ``K·d²``). Then, for *any* σ — one per sample
included — ``C_k⁻¹ = U_k diag(1/(e_k + σ²)) U_kᵀ + (I − U_k U_kᵀ)/(τ_k² + σ²)`` and
``log det C_k`` cost nothing extra.

By default all arithmetic runs in float64 whatever the input dtype, and results are cast
back: at 100 units from the tree, Mahalanobis terms reach ~10⁹ while the log-sum-exp depends
on their O(1) differences, and the Hessian is a difference of large terms — float32 loses
digits in both. ``GaussianMixture(..., compute_dtype=torch.float32)`` (or
``gmm.with_compute_dtype(torch.float32)``) is an opt-in float32 mode for throughput: still a
softmax of log-densities, so finite everywhere, and within float32 roundoff near the data
(tree, σ = 0.1: median 1e-7 relative against float64); far out the loss shows (measured at
2,000 directions 100 units out: denoiser max 8e-4 relative, median 1e-7). Float64 stays the
ground truth.

Modules:

* :mod:`~stiffkit.diffusion.mixtures.mixture` — :class:`GaussianMixture` (validation, the
  chunked batched maps, exact sampling); its per-chunk closed forms live in
  :mod:`~stiffkit.diffusion.mixtures._terms`;
* :mod:`~stiffkit.diffusion.mixtures.tree` — the autoguidance toy's tree (:func:`tree_gmm`);
* :mod:`~stiffkit.diffusion.mixtures.catalogue` — rings, grids and random d-dimensional
  mixtures (:func:`ring_gmm`, :func:`grid_gmm`, :func:`random_gmm`);
* :mod:`~stiffkit.diffusion.mixtures.isotropic` — :class:`IsotropicMixture`, components
  ``N(μ_k, b² I)`` on states of any shape, ``O((K + d)·q)`` per point (per-chunk closed forms
  in :mod:`~stiffkit.diffusion.mixtures._iso_terms`);
* :mod:`~stiffkit.diffusion.mixtures.digits` — the 1797 scikit-learn digits as an exact
  image-shaped mixture (:func:`digits_mixture`, :func:`digits_images`).
"""

from stiffkit.diffusion.mixtures.catalogue import FULL_RANK_MAX_DIM as FULL_RANK_MAX_DIM
from stiffkit.diffusion.mixtures.catalogue import grid_gmm, random_gmm, ring_gmm
from stiffkit.diffusion.mixtures.digits import digits_images, digits_mixture
from stiffkit.diffusion.mixtures.isotropic import IsotropicMixture
from stiffkit.diffusion.mixtures.mixture import CHUNK_BYTES as CHUNK_BYTES
from stiffkit.diffusion.mixtures.mixture import ORTHONORMAL_ATOL as ORTHONORMAL_ATOL
from stiffkit.diffusion.mixtures.mixture import SYMMETRY_RTOL as SYMMETRY_RTOL
from stiffkit.diffusion.mixtures.mixture import GaussianMixture
from stiffkit.diffusion.mixtures.mixture import SigmaLike as SigmaLike
from stiffkit.diffusion.mixtures.tree import TREE_CLASS_ANGLES as TREE_CLASS_ANGLES
from stiffkit.diffusion.mixtures.tree import TREE_DEPTH as TREE_DEPTH
from stiffkit.diffusion.mixtures.tree import TREE_ORIGIN as TREE_ORIGIN
from stiffkit.diffusion.mixtures.tree import TREE_POINTS_PER_BRANCH as TREE_POINTS_PER_BRANCH
from stiffkit.diffusion.mixtures.tree import TREE_SCALE as TREE_SCALE
from stiffkit.diffusion.mixtures.tree import TREE_SEED as TREE_SEED
from stiffkit.diffusion.mixtures.tree import tree_gmm

__all__ = [
    "GaussianMixture",
    "IsotropicMixture",
    "digits_images",
    "digits_mixture",
    "grid_gmm",
    "random_gmm",
    "ring_gmm",
    "tree_gmm",
]
