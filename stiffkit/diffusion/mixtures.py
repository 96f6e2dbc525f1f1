"""Exact Gaussian mixtures: the closed-form denoisers behind the 2-D (and d-D) showcases.

For ``p_0 = Σ_k w_k N(μ_k, Σ_k)`` the noisy marginal is ``p_σ = Σ_k w_k N(μ_k, C_k)`` with
``C_k = Σ_k + σ² I``, and everything the probability-flow ODE needs has a closed form
(DESIGN.md §5): responsibilities ``r_k ∝ w_k N(x; μ_k, C_k)``, score ``Σ_k r_k s_k`` with
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

All arithmetic runs in float64 whatever the input dtype, and results are cast back: at 100
units from the tree, Mahalanobis terms reach ~10⁹ while the log-sum-exp depends on their
O(1) differences, and the Hessian is a difference of large terms — float32 would lose both.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import broadcast_per_sample, check_finite, check_tensor

__all__ = ["GaussianMixture", "tree_gmm", "ring_gmm", "grid_gmm", "random_gmm"]

#: Target size of one chunk's working set (the ``[chunk, K, d, r]`` Hessian term dominates).
#: Small chunks cost real time here (tree, K = 1016: 344-point chunks ran 1.8× slower than
#: 1024-point ones, measured), so the target is generous while still bounding memory.
CHUNK_BYTES = 128 * 2**20
#: ``random_gmm`` builds full covariances up to this dimension, low-rank ones above it.
FULL_RANK_MAX_DIM = 256
#: Relative tolerances for validating user covariances and eigenbases.
SYMMETRY_RTOL = 1e-10
ORTHONORMAL_ATOL = 1e-8
_LOG_2PI = math.log(2.0 * math.pi)
_F64 = torch.float64

SigmaLike = float | Tensor


class GaussianMixture(torch.nn.Module):
    """Gaussian mixture ``Σ_k w_k N(μ_k, Σ_k)`` with exact score, denoiser and drift Jacobian.

    Calling the mixture, ``gmm(x, sigma)``, returns the exact denoiser, so it plugs into any
    sampler that takes ``denoiser(x, sigma)``. Parameters live in float64 buffers
    (``.to(device)`` moves them); batched methods compute in float64 and return ``x.dtype``,
    and split the batch into chunks so ``10⁶`` points × ``2032`` components fit in memory.

    Parameters
    ----------
    weights : array_like, shape [K]
        Positive mixture weights; normalised on construction.
    means : array_like, shape [K, d]
    covs : array_like, shape [K, d, d]
        Symmetric positive-definite covariances of the clean components.
    chunk_size : int, optional
        Points per chunk; by default chosen so a chunk's working set is ~``CHUNK_BYTES``.

    Notes
    -----
    ``sigma`` arguments accept a python float, a 0-d tensor or a ``[batch]`` tensor (one σ
    per sample). ``sigma = 0`` is allowed for densities, scores and the denoiser; the drift
    needs ``σ > 0``. See :meth:`from_spectral` for large-``d`` low-rank covariances.
    """

    def __init__(self, weights, means, covs, *, chunk_size: int | None = None) -> None:
        super().__init__()
        covs = torch.as_tensor(covs, dtype=_F64)
        if covs.ndim != 3 or covs.shape[1] != covs.shape[2]:
            raise ValueError(f"`covs` must have shape [K, d, d], got {tuple(covs.shape)}.")
        check_finite(covs, "covs")
        scale = covs.abs().amax(dim=(1, 2), keepdim=True)
        if not bool(((covs - covs.mT).abs() <= SYMMETRY_RTOL * scale).all()):
            raise ValueError("`covs` must be symmetric.")
        covs = 0.5 * (covs + covs.mT)
        eigvals, eigvecs = torch.linalg.eigh(covs)
        d = covs.shape[-1]
        # Numerically PD: the smallest eigenvalue must clear eigh's own roundoff.
        if not bool((eigvals[:, 0] > d * torch.finfo(_F64).eps * eigvals[:, -1]).all()):
            raise ValueError("`covs` must be positive definite.")
        self._setup(weights, means, eigvals, eigvecs, None, chunk_size)
        self.register_buffer("_covs", covs)

    @classmethod
    def from_spectral(
        cls, weights, means, eigvals, eigvecs, floor=None, *, chunk_size: int | None = None
    ) -> GaussianMixture:
        """Build from ``Σ_k = U_k diag(e_k) U_kᵀ + τ_k² (I − U_k U_kᵀ)`` without forming ``Σ_k``.

        Parameters
        ----------
        weights : array_like, shape [K]
        means : array_like, shape [K, d]
        eigvals : array_like, shape [K, r]
            Positive variances ``e_k`` along the columns of ``U_k``.
        eigvecs : array_like, shape [K, d, r]
            Orthonormal columns ``U_k``.
        floor : array_like, shape [K], optional
            Positive variance ``τ_k²`` of the orthogonal complement; required when ``r < d``.
        chunk_size : int, optional
        """
        self = cls.__new__(cls)
        torch.nn.Module.__init__(self)
        eigvals = torch.as_tensor(eigvals, dtype=_F64)
        eigvecs = torch.as_tensor(eigvecs, dtype=_F64)
        if eigvecs.ndim != 3 or eigvals.shape != (eigvecs.shape[0], eigvecs.shape[2]):
            raise ValueError("`eigvecs` must be [K, d, r] and `eigvals` [K, r].")
        check_finite(eigvals, "eigvals")
        check_finite(eigvecs, "eigvecs")
        if not bool((eigvals > 0).all()):
            raise ValueError("`eigvals` must be positive.")
        gram = eigvecs.mT @ eigvecs  # [K, r, r]
        eye = torch.eye(gram.shape[-1], dtype=_F64)
        if not bool(((gram - eye).abs() <= ORTHONORMAL_ATOL).all()):
            raise ValueError("`eigvecs` must have orthonormal columns.")
        self._setup(weights, means, eigvals, eigvecs, floor, chunk_size)
        self.register_buffer("_covs", self._materialize() if self.rank == self.dim else None)
        return self

    def _setup(self, weights, means, eigvals, eigvecs, floor, chunk_size) -> None:
        weights = torch.as_tensor(weights, dtype=_F64)
        means = torch.as_tensor(means, dtype=_F64)
        k, d, r = eigvecs.shape
        if weights.shape != (k,):
            raise ValueError(f"`weights` must have shape [{k}], got {tuple(weights.shape)}.")
        check_finite(weights, "weights")
        if not bool((weights > 0).all()):
            raise ValueError("`weights` must be positive.")
        if means.shape != (k, d):
            raise ValueError(f"`means` must have shape [{k}, {d}], got {tuple(means.shape)}.")
        check_finite(means, "means")
        if r < d:
            if floor is None:
                raise ValueError("`floor` is required when the eigenbasis has rank < dim.")
            floor = torch.as_tensor(floor, dtype=_F64).expand(k).clone()
            if not bool((torch.isfinite(floor) & (floor > 0)).all()):
                raise ValueError("`floor` must be positive and finite.")
        else:
            floor = None
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError("`chunk_size` must be a positive integer.")
        self.chunk_size = chunk_size
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("_eigvals", eigvals)  # e: [K, r]
        self.register_buffer("_eigvecs", eigvecs)  # U: [K, d, r]
        self.register_buffer("_floor", floor)  # τ²: [K] or None
        # U flattened for one GEMM per chunk, [d, r*K] (component index fastest); Uᵀμ: [r, K].
        self.register_buffer("_basis", eigvecs.permute(1, 2, 0).reshape(d, r * k))
        self.register_buffer("_mean_coef", torch.einsum("kdr,kd->rk", eigvecs, means))

    # ------------------------------------------------------------------ attributes
    @property
    def dim(self) -> int:
        """Dimension ``d`` of the space."""
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        """Number of components ``K``."""
        return self.means.shape[0]

    @property
    def rank(self) -> int:
        """Number ``r`` of stored eigenvectors per component (``d`` for full covariances)."""
        return self._eigvecs.shape[2]

    @property
    def covs(self) -> Tensor:
        """Covariances ``Σ_k``, ``[K, d, d]`` float64 (built on access when low-rank)."""
        return self._covs if self._covs is not None else self._materialize()

    def _materialize(self) -> Tensor:
        u, e = self._eigvecs, self._eigvals
        covs = torch.einsum("kir,kr,kjr->kij", u, e, u)  # [K, d, d]
        if self._floor is not None:
            eye = torch.eye(self.dim, dtype=_F64, device=u.device)
            covs = covs + self._floor[:, None, None] * (eye - u @ u.mT)
        return 0.5 * (covs + covs.mT)

    def extra_repr(self) -> str:
        return f"num_components={self.num_components}, dim={self.dim}, rank={self.rank}"

    # ------------------------------------------------------------------ batched maps
    def log_prob(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``log p_σ(x)``, ``[batch, d] -> [batch]``, by log-sum-exp over components."""
        return self._map(x, sigma, lambda t: torch.logsumexp(t.log_resp, dim=-1))

    def responsibilities(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the posterior component probabilities ``r_k(x)``, ``[batch, K]``."""
        return self._map(x, sigma, lambda t: torch.softmax(t.log_resp, dim=-1))

    def score(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``∇_x log p_σ(x)``, ``[batch, d]``."""
        return self._map(x, sigma, lambda t: -t.mean_cinv_diff())

    def denoise(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the posterior mean ``D(x; σ) = E[x_0 | x] = x + σ² score``, ``[batch, d]``.

        Computed as ``Σ_k r_k (μ_k + Σ_k C_k⁻¹ (x − μ_k))`` so that large σ does not cancel
        ``x`` against ``σ² score``.
        """
        return self._map(x, sigma, lambda t: t.denoise())

    def forward(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return :meth:`denoise` — the mixture is its own exact denoiser."""
        return self.denoise(x, sigma)

    def drift(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the probability-flow drift ``f = (x − D)/σ = −σ score``, ``[batch, d]``."""
        return self._map(
            x, sigma, lambda t: t.sigma_col() * t.mean_cinv_diff(), positive=True
        )

    def drift_jacobian(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``J_f = ∂f/∂x = −σ H``, ``[batch, d, d]``, symmetric (DESIGN.md §5)."""
        return self._map(x, sigma, lambda t: t.drift_jacobian(), positive=True, hessian=True)

    def _map(
        self,
        x: Tensor,
        sigma: SigmaLike,
        fn: Callable[[_Terms], Tensor],
        *,
        positive: bool = False,
        hessian: bool = False,
    ) -> Tensor:
        """Validate, then apply ``fn`` to float64 chunks of ``x`` and concatenate."""
        check_tensor(x, "x", min_ndim=2)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"`x` must have shape [batch, {self.dim}], got {tuple(x.shape)}.")
        check_finite(x, "x")
        s = _sigma_tensor(sigma, x.shape[0], positive=positive, device=x.device)
        chunk = self.chunk_size or self._default_chunk(hessian)
        x64, batch = x.to(_F64), x.shape[0]
        if batch <= chunk:
            return fn(_Terms(self, x64, s)).to(x.dtype)
        # Fill a preallocated result rather than torch.cat a list: small live chunk results
        # interleaved with freed chunk temporaries fragment glibc's heap in multi-threaded
        # torch (measured: RSS grew ~10 GB over 10⁶ points). Slice assignment keeps autograd
        # and torch.func transforms working.
        out = None
        for start in range(0, batch, chunk):
            s_chunk = s[start : start + chunk] if s.ndim else s
            res = fn(_Terms(self, x64[start : start + chunk], s_chunk))
            if out is None:
                out = res.new_empty((batch, *res.shape[1:]), dtype=x.dtype)
            out[start : start + chunk] = res
        return out

    def _default_chunk(self, hessian: bool) -> int:
        k, d, r = self._eigvecs.shape
        floats = k * (4 * r + 4)  # ~4 live [r, K] temporaries, logits and weights per point
        if hessian:
            floats += k * d * (r + 4) + 3 * d * d  # [K, d, r] term, y_k, deviations, output
        return max(1, CHUNK_BYTES // (8 * floats))

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        sigma: SigmaLike = 0.0,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = _F64,
    ) -> Tensor:
        """Draw ``n`` exact samples of ``p_σ``, ``[n, d]``.

        Picks ``k`` with probability ``w_k``, then adds ``C_k^{1/2} ε`` using the symmetric
        square root from the stored eigendecomposition (same law as ``chol(C_k) ε``, and no
        factorisation per σ). Sample ``i`` depends on ``n``; for per-sample determinism draw
        the noise per sample and call :meth:`sample_from_noise`.

        Parameters
        ----------
        n : int
        sigma : float or Tensor, shape [] or [n]
        generator : torch.Generator, optional
            Source of randomness (device of the buffers); the global RNG is never used.
        dtype : torch.dtype
            Output dtype; drawing is in float64.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError("`n` must be a non-negative integer.")
        device = self.means.device
        u = torch.rand(n, dtype=_F64, device=device, generator=generator)
        eps = torch.randn(n, self.dim, dtype=_F64, device=device, generator=generator)
        return self.sample_from_noise(u, eps, sigma, dtype=dtype)

    def sample_from_noise(
        self, u: Tensor, eps: Tensor, sigma: SigmaLike = 0.0, *, dtype: torch.dtype = _F64
    ) -> Tensor:
        """Map given noise to exact samples of ``p_σ``, ``[n, d]`` (deterministic).

        Sample ``i`` is a function of ``(u_i, eps_i)`` alone, so drawing the noise with one
        generator per sample makes sample ``i`` independent of the batch size
        (:func:`stiffkit.diffusion.noise.mixture_samples`).

        Parameters
        ----------
        u : Tensor, shape [n]
            Uniform variates in ``[0, 1)``; component ``k`` is chosen where ``u`` falls in
            the cumulative weights.
        eps : Tensor, shape [n, d]
            Standard normal variates; the sample is ``μ_k + C_k^{1/2} eps``.
        sigma : float or Tensor, shape [] or [n]
        dtype : torch.dtype
            Output dtype; the map runs in float64.
        """
        check_tensor(u, "u")
        check_tensor(eps, "eps", min_ndim=2)
        n = u.shape[0]
        if u.ndim != 1 or eps.shape != (n, self.dim):
            raise ValueError(
                f"`u` must have shape [n] and `eps` shape [n, {self.dim}], "
                f"got {tuple(u.shape)} and {tuple(eps.shape)}."
            )
        check_finite(eps, "eps")
        if not bool(((u >= 0) & (u <= 1)).all()):
            raise ValueError("`u` must lie in [0, 1].")
        device = self.means.device
        u, eps = u.to(device, _F64), eps.to(device, _F64)
        s = _sigma_tensor(sigma, n, positive=False, device=device)
        cdf = torch.cumsum(self.weights, 0)
        k = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=self.num_components - 1)
        chunk = max(1, CHUNK_BYTES // (8 * self.dim * (self.rank + 2)))
        out = torch.empty(n, self.dim, dtype=dtype, device=device)
        for start in range(0, n, chunk):
            kc, ec = k[start : start + chunk], eps[start : start + chunk]
            s2 = (s[start : start + chunk] if s.ndim else s)[..., None] ** 2  # [c|1, 1]
            u_k = self._eigvecs[kc]  # [c, d, r]
            coef = torch.einsum("cdr,cd->cr", u_k, ec)  # [c, r]
            x = self.means[kc] + torch.einsum(
                "cdr,cr->cd", u_k, (self._eigvals[kc] + s2).sqrt() * coef
            )  # [c, d]
            if self._floor is not None:
                resid = ec - torch.einsum("cdr,cr->cd", u_k, coef)  # [c, d]
                x = x + (self._floor[kc, None] + s2).sqrt() * resid
            out[start : start + chunk] = x
        return out


class _Terms:
    """Per-chunk closed-form pieces shared by every batched method (all float64).

    Shapes: ``b`` = chunk, ``r`` stored eigenvectors, ``K`` components; a leading ``1``
    instead of ``b`` marks a scalar σ. Components sit in the last (contiguous) axis so the
    many elementwise passes over ``[b, r, K]`` stay vectorised when ``r`` is tiny (d = 2).
    """

    def __init__(self, gmm: GaussianMixture, x: Tensor, s: Tensor) -> None:
        self.gmm, self.x, self.s = gmm, x, s
        k, d, r = gmm._eigvecs.shape
        s2 = s.reshape(-1, 1, 1) ** 2  # [b|1, 1, 1]
        e = gmm._eigvals.T  # [r, K]
        # Coefficients of x − μ_k in the eigenbasis, one GEMM: [b, r, K].
        self.coef = (x @ gmm._basis).view(-1, r, k) - gmm._mean_coef
        self.inv_e = 1.0 / (e + s2)  # 1/(e + σ²): [b|1, r, K]
        maha = (self.coef**2 * self.inv_e).sum(1)  # [b, K]
        logdet = torch.log(e + s2).sum(1)  # [b|1, K]
        self.inv_floor = None
        if gmm._floor is not None:
            s2 = s2[..., 0]  # [b|1, 1]
            self.inv_floor = 1.0 / (gmm._floor + s2)  # 1/(τ² + σ²): [b|1, K]
            sq = (x**2).sum(-1, keepdim=True) - 2 * x @ gmm.means.T + (gmm.means**2).sum(-1)
            resid_sq = (sq - (self.coef**2).sum(1)).clamp(min=0.0)  # |(I − UUᵀ)(x − μ_k)|²
            maha = maha + resid_sq * self.inv_floor
            logdet = logdet + (d - r) * torch.log(gmm._floor + s2)
        const = torch.log(gmm.weights) - 0.5 * (logdet + d * _LOG_2PI)  # [b|1, K]
        self.log_resp = torch.add(const, maha, alpha=-0.5)  # log w_k N(x; μ_k, C_k): [b, K]

    @functools.cached_property
    def resp(self) -> Tensor:
        """Return the responsibilities ``r_k``, ``[b, K]``."""
        return torch.softmax(self.log_resp, dim=-1)

    def sigma_col(self) -> Tensor:
        """Return σ shaped to broadcast against ``[b, d]``."""
        return broadcast_per_sample(self.s, self.x)

    def _spike_gain(self) -> Tensor:
        """Return the eigenbasis part of ``C_k⁻¹`` net of the floor, ``[b|1, r, K]``."""
        if self.inv_floor is None:
            return self.inv_e
        return self.inv_e - self.inv_floor[:, None, :]

    def mean_cinv_diff(self) -> Tensor:
        """Return ``Σ_k r_k C_k⁻¹ (x − μ_k)`` (= −score), ``[b, d]``."""
        g = self.gmm
        # coef first: the product then inherits its contiguous layout (no copy in flatten).
        a = self.coef * self._spike_gain() * self.resp[:, None, :]  # [b, r, K]
        out = a.flatten(1) @ g._basis.T  # [b, d]
        if self.inv_floor is not None:
            rf = self.resp * self.inv_floor  # [b, K]
            out = out + rf.sum(-1, keepdim=True) * self.x - rf @ g.means
        return out

    def denoise(self) -> Tensor:
        """Return ``Σ_k r_k (μ_k + Σ_k C_k⁻¹ (x − μ_k))``, ``[b, d]``."""
        g = self.gmm
        e = g._eigvals.T  # [r, K]
        if self.inv_floor is None:
            a = self.coef * (e * self.inv_e) * self.resp[:, None, :]  # [b, r, K]
            return self.resp @ g.means + a.flatten(1) @ g._basis.T
        shrink = g._floor * self.inv_floor  # τ²/(τ² + σ²): [b|1, K]
        a = self.coef * (e * self.inv_e - shrink[:, None, :]) * self.resp[:, None, :]
        return (
            (self.resp * (1.0 - shrink)) @ g.means
            + (self.resp * shrink).sum(-1, keepdim=True) * self.x
            + a.flatten(1) @ g._basis.T
        )

    def drift_jacobian(self) -> Tensor:
        """Return ``σ (Σ r_k C_k⁻¹ − Σ r_k (y_k − ȳ)(y_k − ȳ)ᵀ)``, ``y_k = C_k⁻¹(x − μ_k)``.

        The covariance form of ``Σ r s sᵀ − ḡḡᵀ`` is positive semi-definite term by term,
        so nothing cancels catastrophically; roundoff asymmetry is averaged away.
        """
        g = self.gmm
        u, gain = g._eigvecs, self._spike_gain()
        y = torch.einsum("kdr,brk->bkd", u, gain * self.coef)  # y_k: [b, K, d]
        if self.inv_floor is not None:
            y = y + self.inv_floor[..., None] * (self.x[:, None, :] - g.means)
        dev = y - torch.einsum("bk,bkd->bd", self.resp, y)[:, None, :]  # [b, K, d]
        cov = torch.einsum("bk,bki,bkj->bij", self.resp, dev, dev)  # [b, d, d]
        w = self.resp[:, None, :] * gain  # [b, r, K]
        prec = torch.einsum("brk,kir,kjr->bij", w, u, u)  # Σ r_k C_k⁻¹: [b, d, d]
        if self.inv_floor is not None:
            iso = (self.resp * self.inv_floor).sum(-1)  # [b]
            prec = prec + iso[:, None, None] * torch.eye(g.dim, dtype=_F64, device=u.device)
        jac = self.s.reshape(-1, 1, 1) * (prec - cov)
        return 0.5 * (jac + jac.mT)


def _sigma_tensor(sigma: SigmaLike, batch: int, *, positive: bool, device) -> Tensor:
    """Check ``sigma`` and return it as a float64 tensor, shape ``[]`` or ``[batch]``."""
    s = torch.as_tensor(sigma, dtype=_F64, device=device)
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != batch):
        raise ValueError(
            f"`sigma` must be a scalar or have shape [{batch}], got {tuple(s.shape)}."
        )
    finite = bool(torch.isfinite(s).all())
    if positive and not (finite and bool((s > 0).all())):
        raise ValueError("`sigma` must be positive and finite.")
    if not (finite and bool((s >= 0).all())):
        raise ValueError("`sigma` must be non-negative and finite.")
    return s


# ---------------------------------------------------------------------- constructors
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
    """Return the 2-D tree mixture of the autoguidance toy (DESIGN.md §5).

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


def ring_gmm(num: int = 8, radius: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """Return ``num`` equal isotropic 2-D Gaussians (width ``std``) on a circle."""
    if num < 1:
        raise ValueError("`num` must be a positive integer.")
    angle = torch.arange(num, dtype=_F64) * (2 * math.pi / num)
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # [num, 2]
    covs = torch.eye(2, dtype=_F64).expand(num, 2, 2) * std**2
    return GaussianMixture(torch.ones(num), means, covs)


def grid_gmm(n: int = 5, spacing: float = 0.5, std: float = 0.05) -> GaussianMixture:
    """Return ``n × n`` equal isotropic 2-D Gaussians on a grid centred at the origin."""
    if n < 1:
        raise ValueError("`n` must be a positive integer.")
    ticks = (torch.arange(n, dtype=_F64) - (n - 1) / 2) * spacing
    means = torch.cartesian_prod(ticks, ticks)  # [n², 2]
    covs = torch.eye(2, dtype=_F64).expand(n * n, 2, 2) * std**2
    return GaussianMixture(torch.ones(n * n), means, covs)


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
    """
    if dim < 1 or num_components < 1:
        raise ValueError("`dim` and `num_components` must be positive integers.")
    if not (math.isfinite(condition) and condition >= 1):
        raise ValueError("`condition` must be at least 1.")
    if not (math.isfinite(min_std) and min_std > 0):
        raise ValueError("`min_std` must be positive and finite.")
    rank = (dim if dim <= FULL_RANK_MAX_DIM else min(dim, 16)) if rank is None else rank
    if not 1 <= rank <= dim:
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
