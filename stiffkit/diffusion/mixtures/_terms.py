"""The closed-form pieces of a Gaussian mixture at one chunk of points (all float64).

:class:`~stiffkit.diffusion.mixtures.GaussianMixture` validates its input, splits the batch
into chunks and hands each chunk to :class:`_Terms`, which holds the quantities that every
batched method shares (coefficients in the eigenbases, ``1/(e + σ²)``, the log
responsibilities) and derives the score, the denoiser and the drift Jacobian from them.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stiffkit._utils import broadcast_per_sample

if TYPE_CHECKING:
    from stiffkit.diffusion.mixtures.mixture import GaussianMixture

_LOG_2PI = math.log(2.0 * math.pi)
_F64 = torch.float64


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
