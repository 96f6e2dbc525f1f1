"""Test problems with known truth: linear ODEs with prescribed spectra, and classic stiff ODEs.

Linear problems ``x' = A x + c`` carry their spectrum and exact solution (matrix exponential);
nonlinear ones (van der Pol, Robertson) an analytic Jacobian and a Radau reference solution.
Drifts are ``f(t, x)`` on ``x: [batch, n]``, computed in ``x``'s dtype and device (DESIGN §2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.integrate
import scipy.linalg
import torch
from torch import Tensor

from stiffkit._utils import check_finite, check_int, check_tensor

__all__ = [
    "LinearProblem", "NonlinearProblem", "symmetric_linear", "symmetric_with_gap",
    "complex_pair_linear", "nonnormal_linear", "jordan_like_linear", "dahlquist",
    "van_der_pol", "robertson",
]

ArrayLike = Sequence[float] | np.ndarray

#: Smallest non-dominant eigenvalue modulus in `symmetric_with_gap`, as a fraction of ``gap``.
GAP_SPREAD_FLOOR = 0.01


def _array(v: Any, name: str, shape: tuple[int | None, ...], *, allow_complex: bool = False,
           allow_empty: bool = False) -> np.ndarray:
    """Return `v` as a finite, read-only float64/complex128 copy of ``shape`` (None: any)."""
    a = np.array(v)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"`{name}` must be numeric, got dtype {a.dtype}.")
    if np.iscomplexobj(a) and not allow_complex:
        raise ValueError(f"`{name}` must be real.")
    a = a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)
    if a.ndim != len(shape) or any(m is not None and m != k for m, k in zip(shape, a.shape)):
        want = "[" + ", ".join("*" if m is None else str(m) for m in shape) + "]"
        raise ValueError(f"`{name}` must have shape {want}, got {list(a.shape)}.")
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` contains NaN or Inf.")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"`{name}` must be non-empty.")
    a.setflags(write=False)
    return a


def _check_int(n: Any, name: str) -> int:
    """Return `n` as an int, raising unless it is an integer ``>= 1``."""
    return check_int(n, name)


def _check_state(x: Any, n: int, name: str = "x") -> Tensor:
    """Raise unless `x` is a floating tensor of shape ``[batch, n]``."""
    check_tensor(x, name, min_ndim=2)
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"`{name}` must have shape [batch, {n}], got {tuple(x.shape)}.")
    return x


def _real_scalar(v: Any, name: str) -> float:
    """Return `v` as a finite python float; complex or non-numeric input raises."""
    if isinstance(v, complex | np.complexfloating | bool):
        raise ValueError(f"`{name}` must be a real number, got {v!r}.")
    try:
        out = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a real number, got {v!r}.") from None
    check_finite(out, name)
    return out


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
        A = _array(self.A, "A", (None, None))
        n = A.shape[0]
        if A.shape != (n, n):
            raise ValueError(f"`A` must be a square matrix, got shape {A.shape}.")
        c = None if self.c is None else _array(self.c, "c", (n,))
        lam, vec = self.eigenvalues, self.eigenvectors
        lam = None if lam is None else _array(lam, "eigenvalues", (n,), allow_complex=True)
        vec = None if vec is None else _array(vec, "eigenvectors", (n, n), allow_complex=True)
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
        _check_state(x, self.dim)
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
        check_finite(_check_state(x0, self.dim, "x0"), "x0")
        t0 = _real_scalar(t0, "t0")
        times = np.asarray(t1.detach().cpu() if isinstance(t1, Tensor) else t1, dtype=np.float64)
        if times.ndim > 1 or not np.isfinite(times).all():
            raise ValueError("`t1` must be a finite scalar or 1-D sequence of times.")
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
    lam = _array(eigenvalues, "eigenvalues", (None,))
    Q = _random_orthogonal(lam.size, np.random.default_rng(seed))
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
    n = _check_int(n, "n")
    lambda_max = _real_scalar(lambda_max, "lambda_max")
    if lambda_max <= 0:
        raise ValueError("`lambda_max` must be positive.")
    gap = _real_scalar(gap, "gap")
    if not 0 < gap < 1:
        raise ValueError(f"`gap` must lie in (0, 1), got {gap}.")
    if sign not in (-1, 1):
        raise ValueError(f"`sign` must be -1 or 1, got {sign!r}.")
    rng = np.random.default_rng(seed)
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
    z = _array(pairs, "pairs", (None,), allow_complex=True, allow_empty=True) + 0j
    if np.any(z.imag == 0):
        raise ValueError("`pairs` must have non-zero imaginary parts (use `real` otherwise).")
    r = _array(real, "real", (None,), allow_empty=True)
    if z.size + r.size == 0:
        raise ValueError("`pairs` and `real` must not both be empty.")
    B = scipy.linalg.block_diag(*[[[a, -b], [b, a]] for a, b in zip(z.real, z.imag)], np.diag(r))
    w2 = np.array([[1, 1], [-1j, 1j]]) / np.sqrt(2)  # block eigenvectors for a + ib, a − ib
    W = scipy.linalg.block_diag(*[w2] * z.size, np.eye(r.size))
    lam = np.concatenate([np.stack([z, z.conj()], axis=1).ravel(), r])
    Q = _random_orthogonal(lam.size, np.random.default_rng(seed))
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
    lam = _array(eigenvalues, "eigenvalues", (None,))
    cond = _real_scalar(cond, "cond")
    if cond < 1:
        raise ValueError(f"`cond` must be >= 1, got {cond}.")
    n = lam.size
    if n == 1 and cond != 1:
        raise ValueError("`cond` must be 1 for a 1-dimensional problem.")
    rng = np.random.default_rng(seed)
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
    lam = _real_scalar(lam, "lam")
    coupling = _real_scalar(coupling, "coupling")
    n = _check_int(n, "n")
    A = lam * np.eye(n) + coupling * np.eye(n, k=1)
    return LinearProblem(A, None, np.full(n, lam))


def dahlquist(lam: float) -> LinearProblem:
    """Build the scalar test equation ``x' = λ x`` (real ``λ``), exact ``x0·exp(λ (t − t0))``.

    Complex ``λ = a + ib`` is represented as the real 2×2 block ``[[a, −b], [b, a]]`` acting on
    ``(Re x, Im x)``: use ``complex_pair_linear([λ])``.
    """
    if isinstance(lam, complex | np.complexfloating):
        raise ValueError("`lam` must be real; use `complex_pair_linear([lam])` for complex λ.")
    lam = _real_scalar(lam, "lam")
    return LinearProblem(np.array([[lam]]), None, np.array([lam]), np.eye(1))


@functools.lru_cache(maxsize=32)
def _reference(rhs: Callable[..., Any], jac: Callable[..., np.ndarray],
               params: tuple[tuple[str, float], ...], x0: tuple[float, ...], t0: float,
               t_eval: tuple[float, ...], rtol: float, atol: float) -> np.ndarray:
    """Solve with Radau and the analytic Jacobian; cached on hashable arguments."""
    p, te = dict(params), np.asarray(t_eval)
    if te[-1] == t0:  # solve_ivp needs a non-empty interval
        out = np.tile(np.asarray(x0), (te.size, 1))
    else:
        sol = scipy.integrate.solve_ivp(
            lambda t, y: np.array(rhs(*y, **p)), (t0, te[-1]), np.asarray(x0), method="Radau",
            t_eval=te, jac=lambda t, y: jac(*y, **p), rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference solve failed: {sol.message}")
        out = sol.y.T
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class NonlinearProblem:
    """Autonomous nonlinear ODE ``x' = f(x)`` with analytic Jacobian and reference solution.

    Parameters
    ----------
    name : str
    x0 : np.ndarray, shape [n]
    t_span : tuple of float
        Standard integration interval ``(t0, t_end)``.
    params : Mapping[str, float]
        Keyword parameters of `rhs` and `jac_numpy` (stored read-only).
    rhs : callable ``(x_1, ..., x_n, **params) -> (f_1, ..., f_n)``
        Componentwise drift in plain arithmetic: one formula serves torch columns ``[batch]``
        (`f`) and numpy scalars (`f_numpy`, scipy).
    jac_numpy : callable ``(x_1, ..., x_n, **params) -> ndarray [n, n]``
        Module-level functions, so that reference solutions cache across instances.
    """

    name: str
    x0: np.ndarray
    t_span: tuple[float, float]
    params: Mapping[str, float]
    rhs: Callable[..., Sequence[Any]] = field(repr=False)
    jac_numpy: Callable[..., np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "x0", _array(self.x0, "x0", (None,)))
        t0, t1 = _array(self.t_span, "t_span", (2,)).tolist()
        if not t1 > t0:
            raise ValueError(f"`t_span` must satisfy t_span[0] < t_span[1], got {self.t_span}.")
        object.__setattr__(self, "t_span", (t0, t1))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def dim(self) -> int:
        """Return the state dimension ``n``."""
        return self.x0.size

    def f(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Evaluate the drift on ``x: [batch, n]`` in its dtype/device (``t`` is ignored)."""
        return torch.stack(list(self.rhs(*_check_state(x, self.dim).unbind(1), **self.params)), 1)

    __call__ = f

    def f_numpy(self, t: float, y: np.ndarray) -> np.ndarray:
        """Evaluate the drift on a single float64 state ``y: [n]``, for scipy."""
        return np.array(self.rhs(*_array(y, "y", (self.dim,)), **self.params))

    def jac(self, t: float, x: np.ndarray | Tensor) -> np.ndarray:
        """Return the analytic Jacobian ``∂f/∂x`` at a single state ``x: [n]``, shape [n, n]."""
        x = x.detach().cpu().numpy() if isinstance(x, Tensor) else x
        return self.jac_numpy(*_array(x, "x", (self.dim,)), **self.params)

    def reference(self, t_eval: Sequence[float] | np.ndarray, *, rtol: float = 1e-10,
                  atol: float = 1e-12) -> np.ndarray:
        """Return a Radau solution from ``x0`` at ``t_span[0]``, shape [len(t_eval), n].

        `t_eval` must be non-decreasing within `t_span`; the solve stops at ``t_eval[-1]``.
        Results are cached on ``(problem, t_eval, rtol, atol)``; a fresh copy is returned.
        """
        te = _array(t_eval, "t_eval", (None,))
        t0, t1 = self.t_span
        if te.size == 0 or np.any(np.diff(te) < 0) or te[0] < t0 or te[-1] > t1:
            raise ValueError("`t_eval` must be non-empty, non-decreasing and within `t_span`.")
        if not (_real_scalar(rtol, "rtol") > 0 and _real_scalar(atol, "atol") > 0):
            raise ValueError("`rtol` and `atol` must be positive.")
        key = (tuple(sorted(self.params.items())), tuple(self.x0.tolist()), t0)
        return _reference(self.rhs, self.jac_numpy, *key, tuple(te.tolist()), float(rtol),
                          float(atol)).copy()


def _vdp_rhs(x1: Any, x2: Any, *, mu: float) -> tuple[Any, Any]:
    return x2, mu * (1 - x1**2) * x2 - x1


def _vdp_jac(x1: float, x2: float, *, mu: float) -> np.ndarray:
    return np.array([[0.0, 1.0], [-2 * mu * x1 * x2 - 1, mu * (1 - x1**2)]])


def van_der_pol(mu: float = 1000.0, x0: Sequence[float] = (2.0, 0.0),
                t_span: tuple[float, float] = (0.0, 3000.0)) -> NonlinearProblem:
    """Build van der Pol in standard form: ``x1' = x2``, ``x2' = μ(1 − x1²) x2 − x1``.

    For large ``μ`` the limit cycle has period ``≈ (3 − 2 ln 2) μ`` and the stiff Jacobian
    eigenvalue is ``≈ μ(1 − x1²)`` on the slow branches (Hairer & Wanner, Vol. II, §IV.1).
    """
    mu = _real_scalar(mu, "mu")
    if mu <= 0:
        raise ValueError("`mu` must be positive.")
    return NonlinearProblem("van_der_pol", _array(x0, "x0", (2,)), t_span, {"mu": mu},
                            _vdp_rhs, _vdp_jac)


def _rober_rhs(y1: Any, y2: Any, y3: Any, *, k1: float, k2: float, k3: float) -> tuple:
    r1, r2, r3 = k1 * y1, k2 * y2**2, k3 * y2 * y3
    return -r1 + r3, r1 - r2 - r3, r2


def _rober_jac(y1: float, y2: float, y3: float, *, k1: float, k2: float, k3: float
               ) -> np.ndarray:
    return np.array([[-k1, k3 * y3, k3 * y2],
                     [k1, -2 * k2 * y2 - k3 * y3, -k3 * y2],
                     [0.0, 2 * k2 * y2, 0.0]])


def robertson(t_span: tuple[float, float] = (0.0, 1e5),
              x0: Sequence[float] = (1.0, 0.0, 0.0)) -> NonlinearProblem:
    """Build Robertson's chemical kinetics problem (Hairer & Wanner, Vol. II, §IV.1).

    ``y1' = −k1 y1 + k3 y2 y3``, ``y2' = k1 y1 − k2 y2² − k3 y2 y3``, ``y3' = k2 y2²`` with
    ``k1 = 0.04``, ``k2 = 3e7``, ``k3 = 1e4``; ``y1 + y2 + y3`` is conserved.
    """
    rates = {"k1": 0.04, "k2": 3e7, "k3": 1e4}
    return NonlinearProblem("robertson", _array(x0, "x0", (3,)), t_span, rates,
                            _rober_rhs, _rober_jac)
