"""Dense spectra: the one |λ|-sorted eigendecomposition, and the orderings the estimators use."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["maybe_real", "modulus_order", "sorted_eig"]


def maybe_real(values: Tensor, vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Return real eigenpairs when every eigenvalue is real, else the complex ones unchanged."""
    # LAPACK/ARPACK return real eigenvalues of real matrices with an exactly zero imaginary
    # part (and real eigenvectors), so the exact test is the right one.
    if values.is_complex() and bool((values.imag == 0).all()):
        return values.real, vectors.real
    return values, vectors


def modulus_order(values: np.ndarray, which: str) -> np.ndarray:
    """Indices ordering `values` by `which` (ties: positive imaginary part first)."""
    key = {"LM": -np.abs(values), "SM": np.abs(values),
           "LR": -values.real, "SR": values.real}[which]
    return np.lexsort((-np.imag(values), key))


def sorted_eig(jac: Tensor, *, symmetric: bool = False) -> tuple[Tensor, Tensor]:
    """Diagonalise every block of ``jac`` and order the eigenpairs by decreasing ``|λ|``.

    The one home of stiffkit's |λ|-sorted eigendecomposition. The sort is stable, so ties
    keep LAPACK's order (within a conjugate pair: positive imaginary part first).

    Parameters
    ----------
    jac : Tensor ``[batch, n, n]``
        Per-sample Jacobians.
    symmetric : bool
        ``eigh`` on ``(J + Jᵀ)/2`` (removes the roundoff asymmetry of, e.g., the Jacobian
        of an autograd score); else ``eig``, real unless some eigenvalue of the batch is
        genuinely non-real.

    Returns
    -------
    values : Tensor ``[batch, n]``
        ``values[:, 0]`` has the largest modulus.
    vectors : Tensor ``[batch, n, n]``
        Unit eigenvectors as *columns*: ``vectors[:, :, j]`` belongs to ``values[:, j]``.
    """
    if not isinstance(jac, Tensor) or jac.ndim != 3 or jac.shape[1] != jac.shape[2]:
        got = tuple(jac.shape) if isinstance(jac, Tensor) else type(jac).__name__
        raise ValueError(f"`jac` must have shape [batch, n, n], got {got}.")
    if symmetric:
        values, vecs = torch.linalg.eigh(0.5 * (jac + jac.transpose(1, 2)))
    else:
        values, vecs = maybe_real(*torch.linalg.eig(jac))
    order = torch.sort(values.abs(), dim=1, descending=True, stable=True).indices
    return values.gather(1, order), vecs.gather(2, order.unsqueeze(1).expand_as(vecs))
