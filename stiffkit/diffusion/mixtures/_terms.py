"""The closed-form pieces of a Gaussian mixture at one chunk of points.

:class:`~stiffkit.diffusion.mixtures.GaussianMixture` validates its input, splits the batch
into chunks and hands each chunk to :class:`_Terms`, which holds the quantities that every
batched method shares (coefficients in the eigenbases, ``1/(e + σ²)``, the log
responsibilities) and derives the score, the denoiser and the drift Jacobian from them, in
the mixture's compute dtype: float64 by default (the buffers themselves), or float32 with
the parameters cast once and cached (:func:`_params`). Either way the responsibilities are
a softmax of log-densities (log-sum-exp stable far from every component), and the
residual off a low-rank eigenbasis, a difference of squared norms, is formed in float64.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import broadcast_per_sample

if TYPE_CHECKING:
    from stiffkit.diffusion.mixtures.mixture import GaussianMixture

_LOG_2PI = math.log(2.0 * math.pi)
#: Up to this dimension the drift Jacobian forms its ``y_k`` by one elementwise pass per
#: stored eigenvector and ``Σ r_k C_k⁻¹`` from a ``[r·K, d²]`` table of outer products
#: (faster than batched ``[d, r]`` products when d is tiny, e.g. 2); above it, batched
#: products (the table would grow as ``K r d²``).
SMALL_DIM = 8
_F64 = torch.float64


class _Params(NamedTuple):
    """The mixture's parameters in one compute dtype (see :class:`GaussianMixture`)."""

    weights: Tensor  # [K]
    means: Tensor  # [K, d]
    eigvals: Tensor  # e: [K, r]
    eigvecs: Tensor  # U: [K, d, r]
    floor: Tensor | None  # τ²: [K]
    basis: Tensor  # [d, r*K]
    mean_coef: Tensor  # Uᵀμ: [r, K]


_NAMES = ("weights", "means", "_eigvals", "_eigvecs", "_floor", "_basis", "_mean_coef")


def _params(gmm: GaussianMixture, dtype: torch.dtype) -> _Params:
    """Return `gmm`'s parameters in `dtype`: its float64 buffers, or cached casts of them.

    The cache is keyed by the buffers' identity and version, so ``.to(device)`` or an
    in-place edit of a buffer invalidates it.
    """
    buffers = [getattr(gmm, name) for name in _NAMES]
    if dtype == _F64:
        return _Params(*buffers)
    key = (dtype, tuple((id(b), b._version, b.device) if b is not None else None
                        for b in buffers))
    cached = getattr(gmm, "_cast_cache", None)
    if cached is None or cached[0] != key:
        cast = _Params(*(b.to(dtype) if b is not None else None for b in buffers))
        object.__setattr__(gmm, "_cast_cache", (key, cast))  # not a module attribute
        return cast
    return cached[1]


class _Terms:
    """Per-chunk closed-form pieces shared by every batched method (in ``x``'s dtype).

    Shapes: ``b`` = chunk, ``r`` stored eigenvectors, ``K`` components; a leading ``1``
    instead of ``b`` marks a scalar σ. Components sit in the last (contiguous) axis so the
    many elementwise passes over ``[b, r, K]`` stay vectorised when ``r`` is tiny (d = 2).
    """

    def __init__(self, gmm: GaussianMixture, x: Tensor, s: Tensor) -> None:
        self.gmm, self.x, self.s = gmm, x, s
        self.p = p = _params(gmm, x.dtype)
        k, d, r = p.eigvecs.shape
        s2 = s.reshape(-1, 1, 1) ** 2  # [b|1, 1, 1]
        e = p.eigvals.T  # [r, K]
        # Coefficients of x − μ_k in the eigenbasis, one GEMM: [b, r, K].
        self.coef = (x @ p.basis).view(-1, r, k) - p.mean_coef
        self.inv_e = 1.0 / (e + s2)  # 1/(e + σ²): [b|1, r, K]
        maha = (self.coef**2 * self.inv_e).sum(1)  # [b, K]
        logdet = torch.log(e + s2).sum(1)  # [b|1, K]
        self.inv_floor = None
        if p.floor is not None:
            s2 = s2[..., 0]  # [b|1, 1]
            self.inv_floor = 1.0 / (p.floor + s2)  # 1/(τ² + σ²): [b|1, K]
            maha = maha + _residual_sq(gmm, x, self.coef).to(x.dtype) * self.inv_floor
            logdet = logdet + (d - r) * torch.log(p.floor + s2)
        const = torch.log(p.weights) - 0.5 * (logdet + d * _LOG_2PI)  # [b|1, K]
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
        g = self.p
        # coef first: the product then inherits its contiguous layout (no copy in flatten).
        a = self.coef * self._spike_gain() * self.resp[:, None, :]  # [b, r, K]
        out = a.flatten(1) @ g.basis.T  # [b, d]
        if self.inv_floor is not None:
            rf = self.resp * self.inv_floor  # [b, K]
            out = out + rf.sum(-1, keepdim=True) * self.x - rf @ g.means
        return out

    def denoise(self) -> Tensor:
        """Return ``Σ_k r_k (μ_k + Σ_k C_k⁻¹ (x − μ_k))``, ``[b, d]``."""
        g = self.p
        e = g.eigvals.T  # [r, K]
        if self.inv_floor is None:
            a = self.coef * (e * self.inv_e) * self.resp[:, None, :]  # [b, r, K]
            return self.resp @ g.means + a.flatten(1) @ g.basis.T
        shrink = g.floor * self.inv_floor  # τ²/(τ² + σ²): [b|1, K]
        a = self.coef * (e * self.inv_e - shrink[:, None, :]) * self.resp[:, None, :]
        return (
            (self.resp * (1.0 - shrink)) @ g.means
            + (self.resp * shrink).sum(-1, keepdim=True) * self.x
            + a.flatten(1) @ g.basis.T
        )

    def drift_jacobian(self) -> Tensor:
        """Return ``σ (Σ r_k C_k⁻¹ − Σ r_k (y_k − ȳ)(y_k − ȳ)ᵀ)``, ``y_k = C_k⁻¹(x − μ_k)``.

        The covariance form of ``Σ r s sᵀ − ḡḡᵀ`` is positive semi-definite term by term,
        so nothing cancels catastrophically; roundoff asymmetry is averaged away. The
        ``y_k`` are laid out ``[b, d, K]`` (components contiguous); up to
        :data:`SMALL_DIM` dimensions they take one pass per stored eigenvector and
        ``Σ r_k C_k⁻¹`` is one GEMM of the weights ``[b, rK]`` with the table of eigenvector
        outer products ``[rK, d²]``; above it both are batched products.
        """
        g = self.p
        u, gain = g.eigvecs, self._spike_gain()  # U: [K, d, r]; gain: [b|1, r, K]
        k, d, r = u.shape
        a = gain * self.coef  # coefficients of y_k in the eigenbasis: [b, r, K]
        small = d <= SMALL_DIM
        if small:  # one vectorised pass over [b, d, K] per eigenvector
            ut = u.permute(2, 1, 0)  # [r, d, K]
            y = a[:, 0, None, :] * ut[0]
            for j in range(1, r):
                y = y + a[:, j, None, :] * ut[j]  # y_k: [b, d, K]
        else:  # a batched product over the components
            y = torch.einsum("kdr,brk->bdk", u, a)
        if self.inv_floor is not None:
            y = y + self.inv_floor[:, None, :] * (self.x[:, :, None] - g.means.T)
        resp = self.resp  # [b, K]
        dev = y - y @ resp[:, :, None]  # y_k − ȳ: [b, d, K]
        cov = (dev * resp[:, None, :]) @ dev.mT  # [b, d, d]
        w = resp[:, None, :] * gain  # [b, r, K]
        if small:
            prec = (w.reshape(-1, r * k) @ _outer_table(g)).view(-1, d, d)
        else:
            prec = torch.einsum("brk,kir,kjr->bij", w, u, u)  # Σ r_k C_k⁻¹: [b, d, d]
        if self.inv_floor is not None:
            iso = (resp * self.inv_floor).sum(-1)  # [b]
            prec = prec + iso[:, None, None] * torch.eye(d, dtype=u.dtype, device=u.device)
        jac = self.s.reshape(-1, 1, 1) * (prec - cov)
        return 0.5 * (jac + jac.mT)


def _outer_table(p: _Params) -> Tensor:
    """``U_kr U_krᵀ`` flattened to ``[r·K, d²]`` in the weights' ``(r, k)`` order.

    ``K·r·d²`` entries (16k for the 2-D tree; d ≤ :data:`SMALL_DIM` only), far below one
    chunk's ``[b, d, K]`` passes, so it is formed per call rather than cached.
    """
    k, d, r = p.eigvecs.shape
    return torch.einsum("kir,kjr->rkij", p.eigvecs, p.eigvecs).reshape(r * k, d * d)


def _residual_sq(gmm: GaussianMixture, x: Tensor, coef: Tensor) -> Tensor:
    """``|(I − U_k U_kᵀ)(x − μ_k)|²`` ``[b, K]``, as a difference of squared norms in float64.

    ``|x − μ_k|² − |U_kᵀ(x − μ_k)|²`` cancels where ``x − μ_k`` lies almost in the span of
    ``U_k``; in float32 that would leave an error of ``eps · |x − μ_k|²``. The two squared
    norms are therefore formed in float64 (a ``[b, d] × [d, K]`` product, cheaper than the
    ``[b, d] × [d, rK]`` one of the coefficients) whatever the compute dtype.
    """
    x64, mu, c64 = x.to(_F64), gmm.means, coef.to(_F64)
    sq = (x64**2).sum(-1, keepdim=True) - 2 * x64 @ mu.T + (mu**2).sum(-1)
    return (sq - (c64**2).sum(1)).clamp(min=0.0)
