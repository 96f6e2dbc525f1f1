"""Linear test problems ``x' = A x + c`` with prescribed spectra and exact solutions.

Each problem carries its spectrum and its exact solution (matrix exponential). Drifts are
``f(t, x)`` on ``x: [batch, n]``, computed in ``x``'s dtype and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.integrate
import scipy.linalg
import torch
from torch import Tensor

from stiffkit._utils import check_finite, check_int, check_real
from stiffkit.problems._inputs import array_input, state_input

__all__ = [
    "LinearProblem", "symmetric_linear", "symmetric_with_gap", "complex_pair_linear",
    "nonnormal_linear", "jordan_like_linear", "dahlquist",
]

ArrayLike = Sequence[float] | np.ndarray

#: Smallest non-dominant eigenvalue modulus in `symmetric_with_gap`, as a fraction of ``gap``.
GAP_SPREAD_FLOOR = 0.01


def _random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a Haar-distributed orthogonal ``[n, n]`` matrix (QR of a Gaussian, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    # Without the sign fix QR's convention biases the distribution (Mezzadri 2007, §5).
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


@dataclass(frozen=True, eq=False)
class LinearProblem:
    """Linear ODE ``x' = A x + c`` with optional known eigen-decomposition.

    Parameters
    ----------
    A : np.ndarray, shape [n, n]
        System matrix (stored as a read-only float64 copy).
    c : np.ndarray, shape [n], optional
        Constant forcing; ``None`` means zero.
    eigenvalues : np.ndarray, shape [n], optional
        Eigenvalues used to build ``A`` (complex128 for complex spectra).
    eigenvectors : np.ndarray, shape [n, n], optional
        Matching eigenvectors as columns, ``A @ V = V @ diag(eigenvalues)``.
    """

    A: np.ndarray
    c: np.ndarray | None = None
    eigenvalues: np.ndarray | None = None
    eigenvectors: np.ndarray | None = None
    _A_t: Tensor = field(init=False, repr=False)
    _c_t: Tensor | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        A = array_input(self.A, "A", (None, None))
        n = A.shape[0]
        if A.shape != (n, n):
            raise ValueError(f"`A` must be a square matrix, got shape {A.shape}.")
        c = None if self.c is None else array_input(self.c, "c", (n,))
        lam, vec = self.eigenvalues, self.eigenvectors
        lam = None if lam is None else array_input(lam, "eigenvalues", (n,), allow_complex=True)
        vec = None if vec is None else array_input(vec, "eigenvectors", (n, n), allow_complex=True)
        for name, value in [("A", A), ("c", c), ("eigenvalues", lam), ("eigenvectors", vec)]:
            object.__setattr__(self, name, value)
        # Torch copies made once; numpy arrays are read-only and torch warns on those.
        object.__setattr__(self, "_A_t", torch.tensor(A))
        object.__setattr__(self, "_c_t", None if c is None else torch.tensor(c))

    @property
    def dim(self) -> int:
        """Return the state dimension ``n``."""
        return self.A.shape[0]

    @property
    def eigenvector_cond(self) -> float | None:
        """Return ``np.linalg.cond(eigenvectors)`` (``None`` if no eigenvectors are stored)."""
        return None if self.eigenvectors is None else float(np.linalg.cond(self.eigenvectors))

    def f(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Evaluate the drift ``x @ Aᵀ + c``; ``t`` is ignored (autonomous), ``x: [batch, n]``."""
        state_input(x, self.dim)
        out = x @ self._A_t.to(dtype=x.dtype, device=x.device).T
        if self._c_t is not None:
            out = out + self._c_t.to(dtype=x.dtype, device=x.device)
        return out

    __call__ = f

    def jac(self, t: float | None = None, x: Any = None) -> np.ndarray:
        """Return the (constant) Jacobian ``A``, shape [n, n]."""
        return self.A

    def exact(self, t0: float, t1: float | Sequence[float] | np.ndarray | Tensor,
              x0: Tensor) -> Tensor:
        """Return the exact solution at ``t1`` starting from ``x0`` at ``t0``.

        Parameters
        ----------
        t0 : float
        t1 : float or 1-D sequence of floats, shape [m]
            Final time(s); may precede ``t0``.
        x0 : Tensor, shape [batch, n]

        Returns
        -------
        Tensor, shape [batch, n] (scalar ``t1``) or [m, batch, n]
            In ``x0``'s dtype and device; computed in float64 with ``scipy.linalg.expm``.
        """
        check_finite(state_input(x0, self.dim, "x0"), "x0")
        t0 = check_real(t0, "t0")
        try:
            times = np.asarray(t1.detach().cpu() if isinstance(t1, Tensor) else t1,
                               dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"`t1` must be a real time or a sequence of them, got {t1!r}.") \
                from err
        if times.ndim > 1 or times.size == 0 or not np.isfinite(times).all():
            raise ValueError("`t1` must be a finite scalar or non-empty 1-D sequence of times.")
        n = self.dim
        # Augmented exponential exp([[A, c], [0, 0]] dt) = [[e^{A dt}, φ₁(A dt) dt c], [0, 1]]:
        # handles singular A, where x* = -A⁻¹c does not exist.
        M = np.zeros((n + 1, n + 1))
        M[:n, :n] = self.A
        if self.c is not None:
            M[:n, n] = self.c
        X0 = x0.detach().cpu().numpy().astype(np.float64)  # [batch, n]
        outs = []
        for dt in np.atleast_1d(times) - t0:
            E = scipy.linalg.expm(M * dt)
            outs.append(X0 @ E[:n, :n].T + E[:n, n])  # [batch, n]
        out = np.stack(outs) if times.ndim == 1 else outs[0]
        return torch.as_tensor(out).to(dtype=x0.dtype, device=x0.device)


def symmetric_linear(eigenvalues: ArrayLike, *, c: ArrayLike | None = None,
                     seed: int = 0) -> LinearProblem:
    """Build ``A = Q diag(λ) Qᵀ`` with a random orthogonal ``Q`` (eigenvectors = columns of Q).

    Parameters
    ----------
    eigenvalues : array-like, shape [n]
        Real eigenvalues, kept in the given order.
    c : array-like, shape [n], optional
    seed : int
        Seed for ``np.random.default_rng`` (all constructors).
    """
    lam = array_input(eigenvalues, "eigenvalues", (None,))
    Q = _random_orthogonal(lam.size, np.random.default_rng(check_int(seed, "seed", 0)))
    A = (Q * lam) @ Q.T
    return LinearProblem(0.5 * (A + A.T), c, lam, Q)  # symmetrise away rounding


def symmetric_with_gap(n: int, lambda_max: float, gap: float, *, sign: int = -1, seed: int = 0,
                       c: ArrayLike | None = None) -> LinearProblem:
    """Build a symmetric ``A`` with one dominant eigenvalue and a spectral gap.

    The eigenvalues (sorted by decreasing modulus) are ``sign·lambda_max``, then
    ``sign·gap·lambda_max`` exactly (so ``|λ₂/λ₁| = gap``, the power-iteration ratio), then
    ``n − 2`` values drawn uniformly in ``sign·[GAP_SPREAD_FLOOR·gap, gap]·lambda_max``.
    The default ``sign = -1`` gives a stiff, decaying mode.

    Requires ``n >= 1``, ``lambda_max > 0``, ``0 < gap < 1`` and ``sign`` in ``{-1, 1}``.
    """
    n = check_int(n, "n")
    lambda_max = check_real(lambda_max, "lambda_max", lo=0, lo_open=True)
    gap = check_real(gap, "gap", lo=0, hi=1, lo_open=True, hi_open=True)
    if sign not in (-1, 1):
        raise ValueError(f"`sign` must be -1 or 1, got {sign!r}.")
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    rest = np.sort(rng.uniform(GAP_SPREAD_FLOOR * gap, gap, size=max(n - 2, 0)))[::-1]
    moduli = np.concatenate([[1.0, gap][: min(n, 2)], rest]) * lambda_max
    return symmetric_linear(sign * moduli, c=c, seed=seed)


def complex_pair_linear(pairs: Sequence[complex] | np.ndarray, *, real: ArrayLike = (),
                        seed: int = 0, c: ArrayLike | None = None) -> LinearProblem:
    """Build a real normal ``A`` with eigenvalues ``a ± ib`` for each ``a + ib`` in `pairs`.

    ``A = Q blockdiag([[a, −b], [b, a]], ..., real) Qᵀ`` with a random orthogonal ``Q``. The
    block ``[[a, −b], [b, a]]`` is multiplication by ``a + ib`` on ``(Re z, Im z)``, so the
    complex Dahlquist equation ``z' = λz`` is ``complex_pair_linear([λ])`` up to the rotation
    ``Q``. Eigenvalues are stored as ``[a₁+ib₁, a₁−ib₁, ..., real...]`` (complex128).

    Parameters
    ----------
    pairs : array-like of complex, shape [k]
        One member of each conjugate pair; every imaginary part must be non-zero.
    real : array-like, shape [m]
        Additional real eigenvalues; ``n = 2k + m``.
    """
    z = array_input(pairs, "pairs", (None,), allow_complex=True, allow_empty=True) + 0j
    if np.any(z.imag == 0):
        raise ValueError("`pairs` must have non-zero imaginary parts (use `real` otherwise).")
    r = array_input(real, "real", (None,), allow_empty=True)
    if z.size + r.size == 0:
        raise ValueError("`pairs` and `real` must not both be empty.")
    B = scipy.linalg.block_diag(*[[[a, -b], [b, a]] for a, b in zip(z.real, z.imag)], np.diag(r))
    w2 = np.array([[1, 1], [-1j, 1j]]) / np.sqrt(2)  # block eigenvectors for a + ib, a − ib
    W = scipy.linalg.block_diag(*[w2] * z.size, np.eye(r.size))
    lam = np.concatenate([np.stack([z, z.conj()], axis=1).ravel(), r])
    Q = _random_orthogonal(lam.size, np.random.default_rng(check_int(seed, "seed", 0)))
    return LinearProblem(Q @ B @ Q.T, c, lam, Q @ W)


def nonnormal_linear(eigenvalues: ArrayLike, cond: float, *, seed: int = 0,
                     c: ArrayLike | None = None) -> LinearProblem:
    """Build ``A = V diag(λ) V⁻¹`` with eigenvector matrix of 2-norm condition number `cond`.

    ``V = U diag(s) Wᵀ`` with random orthogonal ``U, W`` and singular values ``s``
    log-spaced from 1 to `cond`, so ``cond(V) = cond`` up to rounding. The columns of ``V``
    are *not* normalised (normalising would change the condition number); ``V`` is stored as
    ``eigenvectors`` and ``eigenvector_cond`` reports ``np.linalg.cond(V)``. ``V⁻¹`` is formed
    analytically as ``W diag(1/s) Uᵀ``.

    Parameters
    ----------
    eigenvalues : array-like, shape [n]
        Real eigenvalues.
    cond : float
        ``>= 1``; must be 1 when ``n = 1``.
    """
    lam = array_input(eigenvalues, "eigenvalues", (None,))
    cond = check_real(cond, "cond", lo=1)
    n = lam.size
    if n == 1 and cond != 1:
        raise ValueError("`cond` must be 1 for a 1-dimensional problem.")
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    U, W = _random_orthogonal(n, rng), _random_orthogonal(n, rng)
    s = np.logspace(0.0, np.log10(cond), n)
    V, V_inv = (U * s) @ W.T, (W / s) @ U.T
    return LinearProblem((V * lam) @ V_inv, c, lam, V)


def jordan_like_linear(lam: float, coupling: float, n: int) -> LinearProblem:
    """Build the upper-bidiagonal ``A = λ I + coupling · (superdiagonal ones)``, ``[n, n]``.

    A single defective eigenvalue ``λ`` of multiplicity ``n`` (a Jordan block scaled by
    `coupling`): a classic strongly non-normal matrix, with ``‖A‖₂ ≈ |λ| + |coupling|`` far
    above the spectral radius ``|λ|`` when ``|coupling| ≫ |λ|``. No eigenvectors are stored.
    """
    lam = check_real(lam, "lam")
    coupling = check_real(coupling, "coupling")
    n = check_int(n, "n")
    A = lam * np.eye(n) + coupling * np.eye(n, k=1)
    return LinearProblem(A, None, np.full(n, lam))


def dahlquist(lam: float) -> LinearProblem:
    """Build the scalar test equation ``x' = λ x`` (real ``λ``), exact ``x0·exp(λ (t − t0))``.

    Complex ``λ = a + ib`` is represented as the real 2×2 block ``[[a, −b], [b, a]]`` acting on
    ``(Re x, Im x)``: use ``complex_pair_linear([λ])``.
    """
    if isinstance(lam, complex | np.complexfloating):
        raise ValueError("`lam` must be real; use `complex_pair_linear([lam])` for complex λ.")
    lam = check_real(lam, "lam")
    return LinearProblem(np.array([[lam]]), None, np.array([lam]), np.eye(1))
