"""The closed-form pieces of an isotropic mixture at one chunk of points (all float64).

:class:`~stiffkit.diffusion.mixtures.IsotropicMixture` validates its input, flattens and
chunks the batch and hands each chunk to :class:`_IsoTerms`. Every quantity is expressed in
the mixture's mean subspace: with the centre ``c``, the orthonormal basis ``B: [d, q]`` of
the span of the centred means and their coordinates ``z_k = Bᵀ(μ_k − c)``, a point splits
as ``x − c = B y + x_⊥`` and ``‖x − μ_k‖² = ‖y − z_k‖² + ‖x_⊥‖²``, so a point costs
``O((K + d)·q)`` and the Jacobian's rank-``q`` part is formed in ``q`` dimensions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from stiffkit.diffusion.mixtures.isotropic import IsotropicMixture

_LOG_2PI = math.log(2.0 * math.pi)
_F64 = torch.float64
#: Size of the ``[K, q(q + 1)/2]`` table of products ``z_ki z_kj`` (bytes): the mixture
#: caches it up to this size (27 MB for the digits), larger ones are built in blocks this big.
TABLE_BYTES = 64 * 2**20
#: Up to this dimension the Jacobian is symmetrised by averaging with its transpose; above,
#: it is formed as a Gram matrix (see :meth:`_IsoTerms.drift_jacobian`).
SYMMETRIZE_MAX_DIM = 128


class _IsoTerms:
    """Per-chunk pieces shared by the batched maps of an isotropic mixture (float64).

    Shapes: ``b`` = chunk, ``d`` flattened dimension, ``q`` rank of the centred means,
    ``K`` components; ``[b|1]`` is one variance per point or one for the chunk.

    Parameters
    ----------
    mix : IsotropicMixture
    x : Tensor, shape [b, d]
        Flattened float64 points.
    s : Tensor, shape [] or [b]
        Float64 noise levels (validated by the caller).
    """

    def __init__(self, mix: IsotropicMixture, x: Tensor, s: Tensor) -> None:
        self.mix, self.x, self.s = mix, x, s
        basis = mix._basis  # B: [d, q]
        u = x - mix._center  # x − c: [b, d]
        self.y = u @ basis  # [b, q]
        self.perp = u - self.y @ basis.T  # x_⊥: [b, d]
        self.var = (mix.bandwidth**2 + s**2).reshape(-1, 1)  # v = b² + σ²: [b|1, 1]
        # y·z_k − ½‖z_k‖² = −‖y − z_k‖²/2 up to the k-independent −‖y‖²/2: [b, K].
        self.lin = self.y @ mix._coords.T - mix._half_sq

    @functools.cached_property
    def log_resp(self) -> Tensor:
        """Return ``log w_k − ‖y − z_k‖²/(2v)`` up to a per-point constant, ``[b, K]``.

        Where ``v = 0`` (Dirac components at σ = 0) it is the limit: ``log w_k`` on the
        nearest components, ``−∞`` elsewhere.
        """
        logw = self.mix._log_weights
        if self.mix.bandwidth > 0:
            return self.lin / self.var + logw
        pos = self.var > 0  # [b|1, 1]
        scaled = self.lin / torch.where(pos, self.var, torch.ones_like(self.var)) + logw
        if bool(pos.all()):
            return scaled
        nearest = self.lin == self.lin.amax(dim=-1, keepdim=True)
        hard = torch.where(nearest, logw, torch.full_like(self.lin, -math.inf))
        return torch.where(pos, scaled, hard)

    @functools.cached_property
    def resp(self) -> Tensor:
        """Return the responsibilities ``r_k``, ``[b, K]``."""
        return torch.softmax(self.log_resp, dim=-1)

    @functools.cached_property
    def zbar(self) -> Tensor:
        """Return the posterior mean coordinates ``z̄ = Σ_k r_k z_k``, ``[b, q]``."""
        return self.resp @ self.mix._coords

    def log_prob(self) -> Tensor:
        """Return ``log p_σ(x)``, ``[b]`` (needs ``v > 0``)."""
        v = self.var[:, 0]
        sq = (self.y**2).sum(-1) + (self.perp**2).sum(-1)  # ‖x − c‖²: [b]
        d = self.x.shape[1]
        return (torch.logsumexp(self.log_resp, dim=-1) - 0.5 * sq / v
                - 0.5 * d * (torch.log(v) + _LOG_2PI))

    def offset(self) -> Tensor:
        """Return ``x − E_r[μ] = B (y − z̄) + x_⊥``, ``[b, d]``."""
        return (self.y - self.zbar) @ self.mix._basis.T + self.perp

    def posterior_mean(self) -> Tensor:
        """Return ``m = E_r[μ] = c + B z̄``, ``[b, d]``."""
        return self.zbar @ self.mix._basis.T + self.mix._center

    def denoise(self) -> Tensor:
        """Return ``D = m + (b²/v)(x − m)``, ``[b, d]`` (``m`` where ``b = 0``)."""
        m = self.posterior_mean()
        if self.mix.bandwidth == 0:
            return m
        return m + (self.mix.bandwidth**2 / self.var) * self.offset()

    def cov_coords(self) -> Tensor:
        """Return ``Cov_r[z] = Σ_k r_k z_k z_kᵀ − z̄ z̄ᵀ``, ``[b, q, q]``, exactly symmetric.

        One GEMM of the responsibilities with the table of products ``z_ki z_kj`` over the
        upper triangle ``i ≤ j`` (cached on the mixture when it fits in ``TABLE_BYTES``,
        else built in column blocks), mirrored into both triangles.
        """
        mix, q = self.mix, self.mix.subspace_rank
        cov = self.resp.new_empty(self.resp.shape[0], q * q)
        for table, rows, cols in _triangle_tables(mix):
            vals = self.resp @ table - self.zbar[:, rows] * self.zbar[:, cols]  # [b, block]
            cov[:, rows * q + cols] = vals
            cov[:, cols * q + rows] = vals
        return cov.view(self.resp.shape[0], q, q)

    def drift_jacobian(self) -> Tensor:
        """Return ``(σ/v) I − (σ/v²) B Cov_r[z] Bᵀ``, ``[b, d, d]``, exactly symmetric.

        Up to ``SYMMETRIZE_MAX_DIM`` the rank-``q`` part is two GEMMs and the result is
        averaged with its transpose. Above, a transposed pass over ``[b, d, d]`` costs more
        than the GEMMs (measured: 29 ms per point at d = 1024), so the part is the Gram
        matrix ``E Eᵀ`` of ``E = (√σ/v) B V Λ^{1/2}`` from ``Cov_r[z] = V Λ Vᵀ`` (a ``q × q``
        eigendecomposition per point, roundoff-negative ``Λ`` clamped to 0), built block by
        block (:func:`_neg_gram`) so that it is symmetric bit for bit whatever order the GEMM
        accumulates in, and positive semi-definite up to roundoff.
        """
        basis, d = self.mix._basis, self.x.shape[1]
        cov = self.cov_coords()
        v = self.var.reshape(-1, 1, 1)
        sig = self.s.reshape(-1, 1, 1)
        if d <= SYMMETRIZE_MAX_DIM:
            low = basis @ (cov * (sig / v**2)) @ basis.T  # [b, d, d]
            jac = -0.5 * (low + low.mT)
        else:
            lam, vec = torch.linalg.eigh(cov)  # [b, q], [b, q, q]
            root = vec * (lam.clamp_min(0.0).sqrt()[:, None, :] * (sig.sqrt() / v))
            jac = _neg_gram(basis @ root)  # −E Eᵀ: [b, d, d], E = B V Λ^{1/2} √σ / v
        jac.diagonal(dim1=-2, dim2=-1).add_((sig / v).reshape(-1, 1))
        return jac


#: Block size of :func:`_neg_gram` (a block's transpose stays in cache).
GRAM_BLOCK = 128


def _neg_gram(fac: Tensor) -> Tensor:
    """Return ``−E Eᵀ`` for ``E = fac`` (``[b, d, q]``), ``[b, d, d]``, exactly symmetric.

    One GEMM per block at or above the diagonal; a block below is the transpose of its mirror
    (a GEMM need not round ``(i, j)`` and ``(j, i)`` alike — on some CPUs it does not), and a
    diagonal block is averaged with its own transpose. Half the flops of the full product,
    and no transposed pass over the whole ``d × d`` matrix.
    """
    b, d, _ = fac.shape
    out = fac.new_empty((b, d, d))
    starts = range(0, d, GRAM_BLOCK)
    for i in starts:
        rows = fac[:, i:i + GRAM_BLOCK]
        for j in starts:
            if j < i:
                continue
            block = torch.matmul(rows, fac[:, j:j + GRAM_BLOCK].mT).neg_()
            if j == i:
                block = 0.5 * (block + block.mT)
            out[:, i:i + GRAM_BLOCK, j:j + GRAM_BLOCK] = block
            if j > i:
                out[:, j:j + GRAM_BLOCK, i:i + GRAM_BLOCK] = block.mT
    return out


def triangle_table(coords: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Return the products ``z_k[rows] · z_k[cols]``, ``[K, len(rows)]``."""
    return coords[:, rows] * coords[:, cols]


def _triangle_tables(mix: IsotropicMixture) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(table, rows, cols)`` blocks of the upper-triangle product table."""
    rows, cols = mix._tri_rows, mix._tri_cols
    if mix._table is not None:
        yield mix._table, rows, cols
        return
    block = max(1, TABLE_BYTES // (8 * mix.num_components))
    for start in range(0, rows.numel(), block):
        r, c = rows[start : start + block], cols[start : start + block]
        yield triangle_table(mix._coords, r, c), r, c
