"""The :class:`GaussianMixture` type: exact density, score, denoiser, drift Jacobian, sampling.

For ``p_0 = Σ_k w_k N(μ_k, Σ_k)`` the noisy marginal is ``p_σ = Σ_k w_k N(μ_k, C_k)`` with
``C_k = Σ_k + σ² I``; the closed forms are listed in :mod:`stiffkit.diffusion.mixtures` and
evaluated chunk by chunk by :class:`~stiffkit.diffusion.mixtures._terms._Terms`. This module
holds the validated parameters (each covariance through its eigendecomposition), the chunked
batched maps and exact sampling.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import (
    as_per_sample,
    check_finite,
    check_float_dtype,
    check_generator,
    check_int,
    check_tensor,
)
from stiffkit.diffusion.mixtures._terms import _Terms

__all__ = ["GaussianMixture"]

#: Target size of one chunk's working set (the ``[chunk, K, d, r]`` Hessian term dominates).
#: Small chunks cost real time here (tree, K = 1016: 344-point chunks ran 1.8× slower than
#: 1024-point ones, measured), so the target is generous while still bounding memory.
CHUNK_BYTES = 128 * 2**20
#: Relative tolerances for validating user covariances and eigenbases.
SYMMETRY_RTOL = 1e-10
ORTHONORMAL_ATOL = 1e-8
_F64 = torch.float64

SigmaLike = float | Tensor


class GaussianMixture(torch.nn.Module):
    """Gaussian mixture ``Σ_k w_k N(μ_k, Σ_k)`` with exact score, denoiser and drift Jacobian.

    Calling the mixture, ``gmm(x, sigma)``, returns the exact denoiser, so it plugs into any
    sampler that takes ``denoiser(x, sigma)``. Parameters live in float64 buffers
    (``.to(device)`` moves them); batched methods compute in :attr:`compute_dtype` (float64
    by default: the exact ground truth) and return ``x.dtype``, and split the batch into
    chunks so ``10⁶`` points × ``2032`` components fit in memory.

    Parameters
    ----------
    weights : array_like, shape [K]
        Positive mixture weights; normalised on construction.
    means : array_like, shape [K, d]
    covs : array_like, shape [K, d, d]
        Symmetric positive-definite covariances of the clean components.
    chunk_size : int, optional
        Points per chunk; by default chosen so a chunk's working set is ~``CHUNK_BYTES``.
    compute_dtype : {torch.float64, torch.float32}
        Arithmetic of the batched maps. float32 (opt-in; :meth:`with_compute_dtype` gives a
        float32 view of an existing mixture) is ~1.5–2× faster and accurate to float32
        roundoff: the responsibilities stay a log-sum-exp-stable softmax of log-densities,
        so points far from every component give finite, correct results. Sampling and the
        parameters stay float64.

    Notes
    -----
    ``sigma`` arguments accept a python float, a 0-d tensor or a ``[batch]`` tensor (one σ
    per sample). ``sigma = 0`` is allowed for densities, scores and the denoiser; the drift
    needs ``σ > 0``. See :meth:`from_spectral` for large-``d`` low-rank covariances.
    """

    def __init__(self, weights, means, covs, *, chunk_size: int | None = None,
                 compute_dtype: torch.dtype = _F64) -> None:
        super().__init__()
        covs = _real64(covs, "covs")
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
        self._setup(weights, means, eigvals, eigvecs, None, chunk_size, compute_dtype)
        self.register_buffer("_covs", covs)

    @classmethod
    def from_spectral(
        cls, weights, means, eigvals, eigvecs, floor=None, *, chunk_size: int | None = None,
        compute_dtype: torch.dtype = _F64,
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
        compute_dtype : {torch.float64, torch.float32}
            As in the constructor.
        """
        self = cls.__new__(cls)
        torch.nn.Module.__init__(self)
        eigvals = _real64(eigvals, "eigvals")
        eigvecs = _real64(eigvecs, "eigvecs")
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
        self._setup(weights, means, eigvals, eigvecs, floor, chunk_size, compute_dtype)
        self.register_buffer("_covs", self._materialize() if self.rank == self.dim else None)
        return self

    def _setup(self, weights, means, eigvals, eigvecs, floor, chunk_size, compute_dtype) -> None:
        self.compute_dtype = _check_compute_dtype(compute_dtype)
        weights = _real64(weights, "weights")
        means = _real64(means, "means")
        k, d, r = eigvecs.shape
        if k == 0:
            raise ValueError("A mixture needs at least one component (`weights` is empty).")
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
            floor = _real64(floor, "floor").expand(k).clone()
            if not bool((torch.isfinite(floor) & (floor > 0)).all()):
                raise ValueError("`floor` must be positive and finite.")
        else:
            floor = None
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", 1)
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
        extra = "" if self.compute_dtype == _F64 else f", compute_dtype={self.compute_dtype}"
        return f"num_components={self.num_components}, dim={self.dim}, rank={self.rank}{extra}"

    def with_compute_dtype(self, dtype: torch.dtype) -> GaussianMixture:
        """Return this mixture computing in `dtype` (float32 or float64), sharing its buffers.

        The original is unchanged; the copy casts the parameters once, on first use.
        """
        other = copy.copy(self)
        for name in ("_parameters", "_buffers", "_modules"):
            object.__setattr__(other, name, dict(getattr(self, name)))
        other.__dict__.pop("_cast_cache", None)
        other.compute_dtype = _check_compute_dtype(dtype)
        return other

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
        """Return ``J_f = ∂f/∂x = −σ H``, ``[batch, d, d]``, symmetric.

        The closed form is docs/theory/toy_world.md, eq. (5).
        """
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
        """Validate, then apply ``fn`` to chunks of ``x`` in the compute dtype and concatenate."""
        check_tensor(x, "x", min_ndim=2)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"`x` must have shape [batch, {self.dim}], got {tuple(x.shape)}.")
        check_finite(x, "x")
        s = _sigma_tensor(sigma, x.shape[0], positive=positive, device=x.device)
        chunk = self.chunk_size or self._default_chunk(hessian)
        xc, batch, s = x.to(self.compute_dtype), x.shape[0], s.to(self.compute_dtype)
        if batch <= chunk:
            return fn(_Terms(self, xc, s)).to(x.dtype)
        # Fill a preallocated result rather than torch.cat a list: small live chunk results
        # interleaved with freed chunk temporaries fragment glibc's heap in multi-threaded
        # torch (measured: RSS grew ~10 GB over 10⁶ points). Slice assignment keeps autograd
        # and torch.func transforms working.
        out = None
        for start in range(0, batch, chunk):
            s_chunk = s[start : start + chunk] if s.ndim else s
            res = fn(_Terms(self, xc[start : start + chunk], s_chunk))
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
        n = check_int(n, "n", 0)
        check_generator(generator)
        check_float_dtype(dtype)
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


def _real64(value, name: str) -> Tensor:
    """`value` as a float64 tensor, raising naming `name` unless it holds real numbers."""
    try:
        complex_ = value.is_complex() if isinstance(value, Tensor) else np.iscomplexobj(value)
    except (TypeError, ValueError):  # ragged: as_tensor below names it
        complex_ = False
    if complex_:
        raise ValueError(f"`{name}` must be real, got complex values.")
    try:
        return torch.as_tensor(value, dtype=_F64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"`{name}` must be an array of real numbers, got "
                         f"{type(value).__name__} ({err}).") from err


def _check_compute_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.float32, _F64):
        raise ValueError(f"`compute_dtype` must be torch.float32 or torch.float64, got {dtype!r}.")
    return dtype


def _sigma_tensor(sigma: SigmaLike, batch: int, *, positive: bool, device) -> Tensor:
    """Check ``sigma`` and return it as a float64 tensor, shape ``[]`` or ``[batch]``."""
    return as_per_sample(sigma, "sigma", batch=batch, dtype=_F64, device=device,
                         bound="positive" if positive else "non-negative")

