"""The :class:`IsotropicMixture` type: ``Σ_k w_k N(μ_k, b² I)`` on states of any shape.

All components share one isotropic covariance ``b² I`` (``b`` the *bandwidth*; ``b = 0``
gives the empirical distribution of the means), so the noisy marginal is
``p_σ = Σ_k w_k N(μ_k, v I)`` with ``v = b² + σ²`` and every closed form is a weighted sum
over the means with the responsibilities ``r_k ∝ w_k exp(−‖x − μ_k‖²/(2v))``:

* score ``∇ log p_σ = (m − x)/v`` with ``m = Σ_k r_k μ_k``;
* denoiser (Tweedie) ``D = x + σ² ∇ log p_σ = (b² x + σ² m)/v = m + (b²/v)(x − m)``;
* drift (EDM, :func:`stiffkit.diffusion.samplers.drift.to_d`) ``f = (x − D)/σ = σ(x − m)/v``;
* drift Jacobian ``J_f = (σ/v)(I − Cov_r[μ]/v)``, where ``Cov_r[μ] = Σ_k r_k (μ_k − m)(μ_k − m)ᵀ``.

The last one follows from ``∂r_k/∂x = r_k (μ_k − m)ᵀ/v`` (the gradient of the log-weight
``−‖x − μ_k‖²/(2v)`` is ``(μ_k − x)/v``, and the softmax subtracts its ``r``-average), so
``∂m/∂x = Σ_k μ_k ∂r_k/∂x = Cov_r[μ]/v``: a multiple of ``I`` minus a matrix of rank at most
``min(K − 1, d)``. It is the general mixture's ``σ(Σ r_k C_k⁻¹ − Cov_r[C_k⁻¹(x − μ_k)])``
with ``C_k = v I``.

No ``d × d`` matrix is ever formed per component: the means are stored through the thin
SVD of their centred matrix (:mod:`~stiffkit.diffusion.mixtures._iso_terms`), so a point
costs ``O((K + d)·q)`` with ``q ≤ min(K, d)`` the rank of the centred means (61 for the
digits at every resolution), and ``Cov_r[μ] = B Cov_r[z] Bᵀ`` is built from one GEMM of the
responsibilities with the ``[K, q(q + 1)/2]`` table of coordinate products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from stiffkit._utils import check_finite, check_int, check_real, check_tensor
from stiffkit.diffusion.mixtures._iso_terms import TABLE_BYTES, _IsoTerms, triangle_table
from stiffkit.diffusion.mixtures.mixture import (
    CHUNK_BYTES,
    GaussianMixture,
    SigmaLike,
    _sigma_tensor,
)

__all__ = ["IsotropicMixture"]

_F64 = torch.float64


class IsotropicMixture(GaussianMixture):
    """Mixture ``Σ_k w_k N(μ_k, b² I)`` with exact score, denoiser and drift Jacobian.

    A :class:`GaussianMixture` (``isinstance`` holds, so the metrics, samplers and
    :func:`stiffkit.diffusion.mixture_oracle` take it) with the same methods, σ conventions
    and float64 compute, and two differences: states may have any shape ``[batch, *dims]``
    (``event_shape``; flattened ``[batch, d]`` states are accepted too and keep their
    shape), and the bandwidth may be 0 (Dirac components).

    Parameters
    ----------
    means : array_like, shape [K, *dims]
        Component means; ``dims`` is the :attr:`event_shape` (``d = prod(dims)``).
    bandwidth : float
        Common standard deviation ``b ≥ 0`` of the components.
    weights : array_like, shape [K], optional
        Positive weights, normalised on construction (default: equal).
    labels : array_like of int, shape [K], optional
        A non-negative class per component, for :meth:`conditional`.
    chunk_size : int, optional
        Points per chunk; by default chosen so a chunk's working set is ~``CHUNK_BYTES``.

    Notes
    -----
    ``sigma`` is a python float, a 0-d tensor or a ``[batch]`` tensor. With ``b > 0``,
    ``σ = 0`` is allowed wherever :class:`GaussianMixture` allows it (densities, scores,
    the denoiser — which then returns ``x``). With ``b = 0`` and ``σ = 0`` the density and
    the score do not exist (``ValueError``); :meth:`responsibilities` and :meth:`denoise`
    return their ``σ → 0`` limits: the nearest mean gets all the weight (ties share it in
    proportion to the weights) and the denoiser returns that mean. The drift and its
    Jacobian need ``σ > 0`` as for any mixture.
    """

    def __init__(
        self,
        means,
        bandwidth: float = 0.0,
        *,
        weights=None,
        labels=None,
        chunk_size: int | None = None,
    ) -> None:
        torch.nn.Module.__init__(self)
        means = torch.as_tensor(means, dtype=_F64).clone()
        if means.ndim < 2 or means.shape[0] == 0 or math.prod(means.shape[1:]) == 0:
            raise ValueError(f"`means` must have shape [K, *dims] with K ≥ 1 and non-empty "
                             f"dims, got {tuple(means.shape)}.")
        check_finite(means, "means")
        k = means.shape[0]
        self.event_shape: tuple[int, ...] = tuple(means.shape[1:])
        self.bandwidth = check_real(bandwidth, "bandwidth", lo=0.0)
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=_F64, device=means.device)
        weights = torch.as_tensor(weights, dtype=_F64, device=means.device).clone()
        if weights.shape != (k,):
            raise ValueError(f"`weights` must have shape [{k}], got {tuple(weights.shape)}.")
        check_finite(weights, "weights")
        if not bool((weights > 0).all()):
            raise ValueError("`weights` must be positive.")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if (labels.shape != (k,) or labels.dtype == torch.bool or labels.is_floating_point()
                    or labels.is_complex()):
                raise ValueError(f"`labels` must be integers of shape [{k}], "
                                 f"got {labels.dtype} {tuple(labels.shape)}.")
            labels = labels.to(means.device, torch.int64).clone()
            if not bool((labels >= 0).all()):
                raise ValueError("`labels` must be non-negative integers.")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", 1)
        flat = means.reshape(k, -1)
        weights = weights / weights.sum()
        self.register_buffer("weights", weights)
        self.register_buffer("means", flat)
        self.register_buffer("labels", labels)
        self.register_buffer("_log_weights", weights.log())
        self._factorize(flat, weights)

    def _factorize(self, flat: Tensor, weights: Tensor) -> None:
        """Store the centre ``c``, the basis ``B: [d, q]`` and the coordinates ``z: [K, q]``."""
        center = weights @ flat  # [d]
        centred = flat - center
        basis = _span_basis(centred)  # [d, q]
        coords = centred @ basis  # [K, q]
        q = basis.shape[1]
        self.register_buffer("_center", center)
        self.register_buffer("_basis", basis)
        self.register_buffer("_coords", coords)
        self.register_buffer("_half_sq", 0.5 * (coords**2).sum(-1))  # ½‖z_k‖²: [K]
        rows, cols = torch.triu_indices(q, q, device=flat.device)  # pairs i ≤ j of Cov_r[z]'s table
        fits = 8 * coords.shape[0] * rows.numel() <= TABLE_BYTES
        self.register_buffer("_tri_rows", rows)
        self.register_buffer("_tri_cols", cols)
        self.register_buffer("_table", triangle_table(coords, rows, cols) if fits else None)

    @classmethod
    def from_spectral(cls, *args, **kwargs):
        """Not available: build an isotropic mixture from its means and bandwidth."""
        raise TypeError("IsotropicMixture has no spectral constructor; call "
                        "IsotropicMixture(means, bandwidth) or GaussianMixture.from_spectral.")

    # ------------------------------------------------------------------ attributes
    @property
    def rank(self) -> int:
        """``0``: no eigenvectors are stored, every covariance is ``b² I``."""
        return 0

    @property
    def subspace_rank(self) -> int:
        """Rank ``q`` of the centred means (the Jacobian is ``(σ/v) I`` off their span)."""
        return self._basis.shape[1]

    @property
    def covs(self) -> Tensor:
        """Covariances ``b² I``, ``[K, d, d]`` float64 — a broadcast view, not ``K`` copies."""
        eye = torch.eye(self.dim, dtype=_F64, device=self.means.device)
        return (self.bandwidth**2 * eye).expand(self.num_components, self.dim, self.dim)

    @property
    def classes(self) -> list[int]:
        """The distinct :attr:`labels`, sorted (empty without labels)."""
        return [] if self.labels is None else sorted(set(self.labels.tolist()))

    def extra_repr(self) -> str:
        return (f"num_components={self.num_components}, event_shape={self.event_shape}, "
                f"bandwidth={self.bandwidth:g}, subspace_rank={self.subspace_rank}")

    def conditional(self, label: int | Sequence[int]) -> IsotropicMixture:
        """Return the mixture restricted to the components of class `label` (or classes).

        The weights are renormalised over the selection, so ``mix.conditional(y)`` is the
        exact class-conditional ``p(x | y)`` next to the unconditional ``mix`` (CFG).

        Parameters
        ----------
        label : int or sequence of int
            One class or several, among :attr:`classes`.

        Returns
        -------
        IsotropicMixture
            Same bandwidth, event shape and chunk size; the kept components' labels.
        """
        if self.labels is None:
            raise ValueError("`label`: this mixture has no labels (build it with `labels=`).")
        wanted = [label] if not isinstance(label, Sequence) else list(label)
        for item in wanted:
            check_int(item, "label", 0)
        missing = sorted(set(wanted) - set(self.classes))
        if not wanted or missing:
            raise ValueError(f"`label` must name classes among {self.classes}, got {label!r}.")
        keep = torch.isin(self.labels, torch.tensor(wanted, device=self.labels.device))
        return IsotropicMixture(self.means[keep].view(-1, *self.event_shape), self.bandwidth,
                                weights=self.weights[keep], labels=self.labels[keep],
                                chunk_size=self.chunk_size)

    # ------------------------------------------------------------------ batched maps
    def log_prob(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``log p_σ(x)``, ``[batch, *dims] -> [batch]`` (needs ``b² + σ² > 0``)."""
        return self._map(x, sigma, lambda t: t.log_prob(), density=True)

    def responsibilities(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the posterior component probabilities ``r_k(x)``, ``[batch, K]``."""
        return self._map(x, sigma, lambda t: t.resp)

    def score(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``∇_x log p_σ(x) = (m − x)/v``, ``[batch, *dims]`` (needs ``b² + σ² > 0``)."""
        return self._map(x, sigma, lambda t: -t.offset() / t.var, density=True, state=True)

    def denoise(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``D(x; σ) = E[x_0 | x] = m + (b²/v)(x − m)``, ``[batch, *dims]``.

        Equal to ``x + σ² score`` (Tweedie) without cancelling ``x`` against ``σ² score``
        at large σ; ``m = Σ_k r_k μ_k`` (the nearest mean where ``b = σ = 0``).
        """
        return self._map(x, sigma, lambda t: t.denoise(), state=True)

    def drift(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the probability-flow drift ``f = (x − D)/σ = σ(x − m)/v``, ``[batch, *dims]``."""
        return self._map(x, sigma, lambda t: t.offset() * (t.s.reshape(-1, 1) / t.var),
                         positive=True, state=True)

    def drift_jacobian(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``J_f = (σ/v)(I − Cov_r[μ]/v)``, ``[batch, d, d]`` over the flattened dims.

        Symmetric; eigenvalues ``σ/v`` off the span of the centred means (module docstring).
        """
        return self._map(x, sigma, lambda t: t.drift_jacobian(), positive=True, jacobian=True)

    def _map(
        self,
        x: Tensor,
        sigma: SigmaLike,
        fn: Callable[[_IsoTerms], Tensor],
        *,
        positive: bool = False,
        density: bool = False,
        state: bool = False,
        jacobian: bool = False,
    ) -> Tensor:
        """Validate, flatten, apply ``fn`` to float64 chunks and restore the state's shape."""
        flat = self._flatten(x)
        s = _sigma_tensor(sigma, x.shape[0], positive=positive, device=x.device)
        if density and self.bandwidth == 0 and not bool((s > 0).all()):
            raise ValueError("`sigma` must be positive here: with bandwidth 0 the components "
                             "are Dirac masses, which have no density or score at σ = 0.")
        chunk = self.chunk_size or self._default_chunk(jacobian)
        x64, batch = flat.to(_F64), flat.shape[0]
        if batch <= chunk:
            out = fn(_IsoTerms(self, x64, s)).to(x.dtype)
        else:  # a preallocated result, filled chunk by chunk (see GaussianMixture._map)
            out = None
            for start in range(0, batch, chunk):
                s_chunk = s[start : start + chunk] if s.ndim else s
                res = fn(_IsoTerms(self, x64[start : start + chunk], s_chunk))
                if out is None:
                    out = res.new_empty((batch, *res.shape[1:]), dtype=x.dtype)
                out[start : start + chunk] = res
        return out.reshape(x.shape) if state else out

    def _flatten(self, x: Tensor) -> Tensor:
        """Check ``x`` (``[batch, *event_shape]`` or ``[batch, d]``) and return ``[batch, d]``."""
        check_tensor(x, "x", min_ndim=2)
        if tuple(x.shape[1:]) not in (self.event_shape, (self.dim,)):
            shapes = " or ".join(f"[batch, {', '.join(map(str, s))}]"
                                 for s in dict.fromkeys([self.event_shape, (self.dim,)]))
            raise ValueError(f"`x` must have shape {shapes}, got {tuple(x.shape)}.")
        check_finite(x, "x")
        return x.reshape(x.shape[0], self.dim)

    def _default_chunk(self, jacobian: bool) -> int:
        k, d, q = self.num_components, self.dim, self.subspace_rank
        floats = 4 * k + 4 * d + 2 * q  # logits, weights, exponentials; x, x_⊥, outputs
        if jacobian:
            block = min(q * (q + 1) // 2, TABLE_BYTES // (8 * k))  # one [b, block] product
            floats += 3 * d * d + 2 * d * q + 4 * q * q + block
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
        """Draw ``n`` exact samples of ``p_σ``, ``[n, *dims]``: ``μ_k + √(b² + σ²) ε``.

        As :meth:`GaussianMixture.sample` (``k`` drawn with probability ``w_k``, then ``d``
        normals; ``generator`` on the buffers' device), in the state's shape.
        """
        return super().sample(n, sigma, generator, dtype=dtype)

    def sample_from_noise(
        self, u: Tensor, eps: Tensor, sigma: SigmaLike = 0.0, *, dtype: torch.dtype = _F64
    ) -> Tensor:
        """Map given noise to exact samples of ``p_σ``, ``[n, *dims]`` (deterministic).

        Parameters
        ----------
        u : Tensor, shape [n]
            Uniform variates in ``[0, 1]``; they pick the component by the cumulative weights.
        eps : Tensor, shape [n, *dims] or [n, d]
            Standard normal variates; the sample is ``μ_k + √(b² + σ²) eps``.
        sigma : float or Tensor, shape [] or [n]
        dtype : torch.dtype
            Output dtype; the map runs in float64.
        """
        check_tensor(u, "u")
        if u.ndim != 1:
            raise ValueError(f"`u` must have shape [n], got {tuple(u.shape)}.")
        n = u.shape[0]
        check_tensor(eps, "eps", min_ndim=2)
        if eps.shape[0] != n or tuple(eps.shape[1:]) not in (self.event_shape, (self.dim,)):
            raise ValueError(f"`eps` must have shape [{n}, {', '.join(map(str, self.event_shape))}]"
                             f" or [{n}, {self.dim}], got {tuple(eps.shape)}.")
        check_finite(eps, "eps")
        if not bool(((u >= 0) & (u <= 1)).all()):
            raise ValueError("`u` must lie in [0, 1].")
        device = self.means.device
        u, eps = u.to(device, _F64), eps.to(device, _F64).reshape(n, self.dim)
        s = _sigma_tensor(sigma, n, positive=False, device=device)
        scale = (self.bandwidth**2 + s**2).sqrt().reshape(-1, 1)  # [n|1, 1]
        cdf = torch.cumsum(self.weights, 0)
        k = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=self.num_components - 1)
        out = torch.addcmul(self.means[k], scale, eps)
        return out.to(dtype).reshape(n, *self.event_shape)


def _span_basis(centred: Tensor) -> Tensor:
    """Return an orthonormal basis ``[d, q]`` of the row span of ``centred`` ``[K, d]``.

    Directions whose singular value is below numpy.linalg.matrix_rank's tolerance
    ``s_max · max(K, d) · eps`` are roundoff and dropped. With ``d ≤ K`` the basis comes from
    the eigendecomposition of the ``d × d`` Gram matrix (a GEMM and one ``eigh``: ~10× faster
    than the SVD, which also stalls on a busy machine); because squaring loses the smallest
    directions, the result is kept only if the means are reproduced to that tolerance, and
    the SVD is the fallback.
    """
    k, d = centred.shape
    eps = torch.finfo(_F64).eps
    if d <= k:
        lam, vec = torch.linalg.eigh(centred.T @ centred)  # ascending
        s_max = float(lam[-1].clamp_min(0.0).sqrt())
        basis = vec[:, lam > lam[-1] * max(k, d) * eps].flip(1)
        # One subspace-iteration step removes the Gram's eigenvector error (~eps·λ_max/λ):
        # the discarded directions have eigenvalue ~0, so it is scaled away (measured on the
        # digits: max error of the reproduced means 4e-13 -> 1e-14, as with the SVD).
        basis = torch.linalg.qr(centred.T @ (centred @ basis)).Q.contiguous()
        resid = centred - (centred @ basis) @ basis.T
        if float(torch.linalg.matrix_norm(resid)) <= s_max * max(k, d) * eps * math.sqrt(d):
            return basis
    _, svals, vh = torch.linalg.svd(centred, full_matrices=False)
    tol = (svals[:1] * max(k, d) * eps).clamp_min(1e-300)
    return vh[: int((svals > tol).sum())].T.contiguous()
