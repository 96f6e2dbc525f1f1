"""Estimate the dominant eigenpairs of a learned ODE's drift Jacobian ``J = ∂f/∂x``.

Reference estimators (docs/theory/proposition1.md) over the Jacobian–vector products of
:mod:`stiffkit.estimators.jvp`: power iteration, ARPACK (Arnoldi/Lanczos) and a dense
Jacobian with LAPACK, plus :func:`dominant_eig`, which picks one of them. States are
batched, ``x: [batch, *dims]``; samples are independent, so ``J`` is block-diagonal over the
batch and every estimate is per sample, reducing over all non-batch dims
(``n = prod(dims)``).

Every estimator returns an :class:`EigResult`. Its ``num_products`` counts the
Jacobian–vector products spent **per sample** (entry ``i``: the products ``J_i v`` of
sample ``i``), so the methods compare on one scale: power iteration spends one per
iteration, dense ``n`` (``n`` basis vectors), ARPACK what its Krylov iteration and the
residual checks needed on that sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import Tensor

from stiffkit._utils import (
    broadcast_per_sample,
    check_batch,
    check_callable,
    check_finite,
    check_generator,
    check_int,
    check_output,
    check_real,
    check_same_shape,
    check_tensor,
    flat_dot,
    flat_norm,
)
from stiffkit.estimators.jvp import (
    DEFAULT_SEED,
    JVPOperator,
    check_jvp_method,
    jacobian_dense,
    jvp_operator,
)
from stiffkit.estimators.spectrum import maybe_real, modulus_order, sorted_eig

__all__ = ["EigResult", "arpack_eig", "dominant_eig", "eig_dense", "power_iteration"]

Drift = Callable[[Any, Tensor], Tensor]
DOMINANT_METHODS = ("power", "arpack", "dense")
ARPACK_WHICH = ("LM", "SM", "LR", "SR")
#: scipy's spelling of `which`, by `symmetric`: eigsh says LA/SA for the real part.
_SCIPY_WHICH = {False: {w: w for w in ARPACK_WHICH},
                True: {"LM": "LM", "SM": "SM", "LR": "LA", "SR": "SA"}}
#: Power-iteration defaults: products allowed, and stop once residual <= tol * |value|.
POWER_MAX_ITER = 200
POWER_TOL = 1e-6


class EigResult(NamedTuple):
    """``k`` eigenpairs per sample, as every estimator of this module returns them.

    Attributes
    ----------
    values : Tensor ``[batch, k]``
        Eigenvalues in the estimator's order (``values[:, 0]`` dominant for power
        iteration, dense and ARPACK's default ``which="LM"``); complex only if some
        returned eigenvalue of the batch is genuinely non-real.
    vectors : Tensor ``[batch, k, *dims]``
        ``vectors[:, j]`` is the unit eigenvector of ``values[:, j]``.
    residuals : Tensor ``[batch, k]``
        ``‖J v − λ v‖`` of each pair.
    converged : Tensor ``[batch]`` of bool
        Whether the sample's estimate met its tolerance (dense: always).
    num_products : Tensor ``[batch]`` of int64 (CPU)
        Jacobian–vector products spent per sample: ``num_products[i]`` products ``J_i v``
        on sample ``i`` (a batched product counts one for every sample).
    method : str
        The estimator: "power", "arpack" or "dense".

    ``value``, ``vector`` and ``residual`` are the first pair (``values[:, 0]`` …).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    converged: Tensor
    num_products: Tensor
    method: str

    @property
    def value(self) -> Tensor:
        """First (dominant) eigenvalue per sample, ``[batch]``."""
        return self.values[:, 0]

    @property
    def vector(self) -> Tensor:
        """Its unit eigenvector, ``[batch, *dims]``."""
        return self.vectors[:, 0]

    @property
    def residual(self) -> Tensor:
        """Its residual ``‖J v − λ v‖``, ``[batch]``."""
        return self.residuals[:, 0]


def _counts(per_sample: list[int] | int, batch: int) -> Tensor:
    """Per-sample product counts as the ``[batch]`` int64 tensor of :class:`EigResult`."""
    if isinstance(per_sample, int):
        return torch.full((batch,), per_sample, dtype=torch.int64)
    return torch.tensor(per_sample, dtype=torch.int64)


def _check_v0(v0: Any, x: Tensor) -> Tensor:
    check_tensor(v0, "v0")
    check_finite(v0, "v0")
    check_same_shape(v0, x, "v0", "x")
    return v0.to(x.dtype)


def _t_sample(t: Any, i: int, batch: int) -> Any:
    """Return sample ``i``'s time: slice a per-sample ``t: [batch]``, pass anything else."""
    return t[i : i + 1] if isinstance(t, Tensor) and t.ndim >= 1 and t.shape[0] == batch else t


def _random_fill(v0: Tensor, generator: torch.Generator | None) -> Tensor:
    """Replace all-zero samples of `v0` by normal draws (one whole-batch draw, so sample
    ``i``'s start does not depend on which other samples are zero)."""
    zero = flat_norm(v0) == 0
    if not bool(zero.any()):
        return v0
    if generator is None:
        generator = torch.Generator(device=v0.device).manual_seed(DEFAULT_SEED)
    draw = torch.randn(v0.shape, dtype=v0.dtype, device=v0.device, generator=generator)
    return torch.where(broadcast_per_sample(zero, v0), draw, v0)


def power_iteration(
    matvec: Callable[[Tensor], Tensor], v0: Tensor, *, max_iter: int = POWER_MAX_ITER,
    tol: float = POWER_TOL, generator: torch.Generator | None = None,
) -> EigResult:
    """Estimate the eigenvalue of largest modulus of a batched operator by power iteration.

    Each iteration spends one batched product ``w = J v`` (unit ``v``) and forms the
    Rayleigh quotient ``λ = ⟨v, w⟩`` and residual ``r = |w - λ v|``; a sample stops once
    ``r <= tol |λ|`` and keeps its values while the rest of the batch iterates. For a
    symmetric ``J`` some eigenvalue lies within ``r`` of ``λ`` (and within ``r²/gap``).
    A real ``J`` whose dominant eigenvalues are a complex pair has no real dominant
    eigenvector: the iteration does not converge, ``converged`` is False and ``r`` stays of
    the order of ``|Im λ|``; use ARPACK or the dense path there.

    Parameters
    ----------
    matvec : callable ``[batch, *dims] -> [batch, *dims]``
    v0 : Tensor ``[batch, *dims]``
        Warm start; all-zero samples are replaced by random draws from `generator`.
    max_iter : int
        Maximum number of (batched) products.
    tol : float
        Relative residual tolerance, ``>= 0``.
    generator : torch.Generator, optional
        Default: a local generator seeded with ``DEFAULT_SEED``; results are deterministic.

    Returns
    -------
    EigResult
        ``k = 1``; ``num_products`` is the number of iterations, the same for every sample
        (converged samples ride along in the batched product).
    """
    check_callable(matvec, "matvec")
    check_batch(v0, "v0")
    check_finite(v0, "v0")
    max_iter = check_int(max_iter, "max_iter")
    check_real(tol, "tol", lo=0)
    check_generator(generator)
    v = _random_fill(v0, generator)
    v = v / broadcast_per_sample(flat_norm(v), v)
    value = residual = v.new_zeros(v.shape[0])
    converged = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    w = torch.zeros_like(v)
    for num_iter in range(1, max_iter + 1):
        w_new = check_output(matvec(v), v, "matvec")
        check_finite(w_new, "matvec(v)")
        lam = flat_dot(v, w_new)
        res = flat_norm(w_new - broadcast_per_sample(lam, v) * v)
        active = ~converged  # converged samples keep their values
        value, residual = torch.where(active, lam, value), torch.where(active, res, residual)
        w = torch.where(broadcast_per_sample(active, v), w_new, w)
        converged = converged | (active & (res <= tol * lam.abs()))
        if bool(converged.all()) or num_iter == max_iter:
            break  # before updating v, so that v, value and residual belong together
        w_norm = flat_norm(w)
        step = broadcast_per_sample(~converged & (w_norm > 0), v)
        safe = broadcast_per_sample(torch.where(w_norm > 0, w_norm, torch.ones_like(w_norm)), v)
        v = torch.where(step, w / safe, v)
    return EigResult(value[:, None], v[:, None], residual[:, None], converged,
                     _counts(num_iter, v.shape[0]), "power")


def arpack_eig(
    f: Drift, t: Any, x: Tensor, *, k: int = 1, symmetric: bool = False,
    tol: float | None = None, which: str = "LM", v0: Tensor | None = None,
    max_iter: int | None = None, generator: torch.Generator | None = None,
    jvp_method: str = "auto", ncv: int | None = None,
) -> EigResult:
    """Find `k` eigenpairs per sample with ARPACK (``eigsh`` if `symmetric`, else ``eigs``).

    Sample ``i``'s ``LinearOperator`` is the JVP of `f` on ``x[i:i+1]`` alone (float64
    numpy in/out, products in ``x.dtype``). Where ``n`` is too small for ARPACK (``k >= n``
    for eigsh, ``k >= n - 1`` for eigs) the ``n × n`` Jacobian is built from ``n`` products
    and solved by LAPACK. Residuals ``|J v - λ v|`` are recomputed with one more product per
    real eigenvector (two per complex one), included in ``num_products``.

    Parameters
    ----------
    f, t, x :
        As in :func:`~stiffkit.estimators.jvp.jvp_operator`; a per-sample ``t: [batch]``
        is sliced with `x`.
    k : int
        Eigenpairs per sample.
    symmetric : bool
        Use Lanczos (``eigsh``); only valid for symmetric Jacobians.
    tol : float, optional
        ARPACK relative tolerance, default ``sqrt(finfo(x.dtype).eps)``.
    which : {"LM", "SM", "LR", "SR"}
        Largest/smallest modulus or real part; outputs are ordered the same way.
    v0 : Tensor ``[batch, *dims]``, optional
        Start vectors; missing or all-zero samples are drawn from `generator`.
    max_iter : int, optional
        ARPACK restarts (scipy's ``maxiter``).
    generator : torch.Generator, optional
    jvp_method : str
        Passed to :func:`~stiffkit.estimators.jvp.jvp_operator`.
    ncv : int, optional
        Krylov basis size, in ``[k + 2, n]`` (scipy's default ``max(2k + 1, 20)`` when None).
        A clustered top of the spectrum (image denoisers: a near-multiple 1/σ) needs a
        larger one: 80 instead of 20 cut the products ~5× on the 32 × 32 digits (measured).

    Returns
    -------
    EigResult
        ``values: [batch, k]``. A sample whose ARPACK run did not converge has
        ``converged=False`` and NaN in place of the missing pairs.
    """
    check_batch(x, "x")
    check_finite(x, "x")
    check_jvp_method(jvp_method)
    check_generator(generator)
    if not isinstance(which, str) or which not in ARPACK_WHICH:
        raise ValueError(f"`which` must be one of {ARPACK_WHICH}, got {which!r}.")
    batch, dims = x.shape[0], x.shape[1:]
    n = math.prod(dims)
    k = check_int(k, "k")
    if k > n:
        raise ValueError(f"`k` must be an integer in [1, {n}], got {k!r}.")
    if max_iter is not None:
        max_iter = check_int(max_iter, "max_iter")
    if tol is not None:
        check_real(tol, "tol", lo=0)
    if ncv is not None and not k + 1 < check_int(ncv, "ncv") <= n:
        raise ValueError(f"`ncv` must be an integer in [{k + 2}, {n}], got {ncv!r}.")
    start = _random_fill(torch.zeros_like(x) if v0 is None else _check_v0(v0, x), generator)
    tol = math.sqrt(torch.finfo(x.dtype).eps) if tol is None else tol
    values = np.full((batch, k), np.nan, dtype=complex)
    vectors = np.full((batch, k, n), np.nan, dtype=complex)
    residuals = np.full((batch, k), np.nan)
    converged = np.ones(batch, dtype=bool)
    num_products = []
    for i in range(batch):
        op = jvp_operator(f, _t_sample(t, i, batch), x[i : i + 1], method=jvp_method)

        def matvec(v: np.ndarray, op: JVPOperator = op, i: int = i) -> np.ndarray:
            v_t = torch.as_tensor(np.ascontiguousarray(v.real).reshape(1, *dims)).to(x)
            out = op(v_t).reshape(-1).to(torch.float64).cpu().numpy()  # float64 in/out
            if not np.isfinite(out).all():
                raise ValueError(f"`f`: the Jacobian-vector product of sample {i} is NaN or Inf "
                                 "(is the drift finite near this state?).")
            return out + 1j * matvec(v.imag) if np.iscomplexobj(v) else out

        if k >= (n if symmetric else n - 1):  # too small for ARPACK: dense via n products
            jac = np.stack([matvec(e) for e in np.eye(n)], axis=1)
            lam, vec = np.linalg.eigh(0.5 * (jac + jac.T)) if symmetric else np.linalg.eig(jac)
        else:
            solver = sla.eigsh if symmetric else sla.eigs
            lin = sla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
            v0_i = start[i].reshape(-1).to(torch.float64).cpu().numpy()
            try:
                lam, vec = solver(lin, k=k, which=_SCIPY_WHICH[symmetric][which], tol=tol,
                                  maxiter=max_iter, v0=v0_i, ncv=ncv)
            except sla.ArpackNoConvergence as err:
                lam, vec, converged[i] = err.eigenvalues, err.eigenvectors, False
            except sla.ArpackError as err:  # e.g. a Jacobian that annihilates the start vector
                raise ValueError(
                    f"ARPACK failed on sample {i} ({err}); a zero or rank-deficient Jacobian "
                    "cannot start a Krylov iteration: use `eig_dense` (dominant_eig "
                    "method='dense') there.") from None
        for j, m in enumerate(modulus_order(np.asarray(lam, dtype=complex), which)[:k]):
            u = vec[:, m] / np.linalg.norm(vec[:, m])
            values[i, j], vectors[i, j] = lam[m], u
            residuals[i, j] = np.linalg.norm(matvec(u) - lam[m] * u)
        num_products.append(op.num_products)
    vals, vecs = maybe_real(torch.from_numpy(values), torch.from_numpy(vectors))
    dtype = torch.promote_types(x.dtype, torch.complex64) if vals.is_complex() else x.dtype
    return EigResult(
        vals.to(x.device, dtype), vecs.reshape(batch, k, *dims).to(x.device, dtype),
        torch.from_numpy(residuals).to(x), torch.from_numpy(converged).to(x.device),
        _counts(num_products, batch), "arpack",
    )


def eig_dense(f: Drift, t: Any, x: Tensor, *, symmetric: bool = False) -> EigResult:
    """Return all ``n`` eigenpairs per sample, sorted by decreasing modulus.

    The Jacobian comes from :func:`~stiffkit.estimators.jvp.jacobian_dense` (``n``
    products per sample) and is diagonalised by :func:`sorted_eig`.

    Parameters
    ----------
    f, t, x :
        As in :func:`~stiffkit.estimators.jvp.jvp_operator`, ``x: [batch, *dims]``.
    symmetric : bool
        ``eigh`` on ``(J + Jᵀ)/2``, else ``eig`` (see :func:`sorted_eig`).

    Returns
    -------
    EigResult
        ``values: [batch, n]``, ``vectors: [batch, n, *dims]`` (``vectors[:, 0]`` dominant,
        ``vectors[:, 1]`` second, ...), ``num_products = n`` for every sample.
    """
    jac = jacobian_dense(f, t, x)  # [batch, n, n]
    check_finite(jac, "f: the Jacobian at x")
    batch, n = jac.shape[0], jac.shape[1]
    values, vecs = sorted_eig(jac, symmetric=symmetric)  # columns = eigenvectors
    residuals = torch.linalg.vector_norm(jac.to(vecs.dtype) @ vecs - vecs * values[:, None], dim=1)
    vectors = vecs.transpose(1, 2).reshape(batch, n, *x.shape[1:])
    return EigResult(values, vectors, residuals,
                     torch.ones(batch, dtype=torch.bool, device=x.device), _counts(n, batch),
                     "dense")


def dominant_eig(
    f: Drift, t: Any, x: Tensor, method: str = "power", *, symmetric: bool = False,
    generator: torch.Generator | None = None, v0: Tensor | None = None,
    max_iter: int | None = None, tol: float | None = None, jvp_method: str = "auto",
    ncv: int | None = None,
) -> EigResult:
    """Estimate the eigenvalue of largest modulus of ``∂f/∂x`` and its eigenvector, per sample.

    Parameters
    ----------
    f, t, x :
        As in :func:`~stiffkit.estimators.jvp.jvp_operator`, ``x: [batch, *dims]``.
    method : {"power", "arpack", "dense"}
        :func:`power_iteration` on the JVP operator (real values only; see its note on
        complex pairs), :func:`arpack_eig` with ``k=1``, or :func:`eig_dense`.
    symmetric : bool
        Use ``eigsh``/``eigh`` (arpack, dense); power iteration ignores it.
    generator, v0, max_iter, tol, jvp_method :
        Passed to power iteration or ARPACK (None: their defaults); dense ignores them.
    ncv : int, optional
        ARPACK's Krylov basis size (:func:`arpack_eig`); the other methods ignore it.

    Returns
    -------
    EigResult
        ``k = 1``: ``value: [batch]`` (real unless some dominant eigenvalue is genuinely
        complex), ``vector: [batch, *dims]``, ``residual: [batch]``.
    """
    check_batch(x, "x")
    if not isinstance(method, str) or method not in DOMINANT_METHODS:
        raise ValueError(f"`method` must be one of {DOMINANT_METHODS}, got {method!r}.")
    # The settings of the other estimators are checked even where `method` ignores them.
    check_jvp_method(jvp_method)
    check_generator(generator)
    if max_iter is not None:
        check_int(max_iter, "max_iter")
    if tol is not None:
        check_real(tol, "tol", lo=0)
    if method == "power":
        op = jvp_operator(f, t, x, method=jvp_method)
        return power_iteration(op, torch.zeros_like(x) if v0 is None else _check_v0(v0, x),
                               max_iter=POWER_MAX_ITER if max_iter is None else max_iter,
                               tol=POWER_TOL if tol is None else tol, generator=generator)
    if method == "arpack":
        spec = arpack_eig(f, t, x, k=1, symmetric=symmetric, tol=tol, v0=v0, max_iter=max_iter,
                          generator=generator, jvp_method=jvp_method, ncv=ncv)
    else:
        spec = eig_dense(f, t, x, symmetric=symmetric)
    values, vectors = maybe_real(spec.values[:, :1], spec.vectors[:, :1])
    return EigResult(values, vectors, spec.residuals[:, :1], spec.converged, spec.num_products,
                     method)
