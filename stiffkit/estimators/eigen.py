"""Estimate the dominant eigenpairs of a learned ODE's drift Jacobian ``J = ∂f/∂x``.

Reference estimators (DESIGN.md §3): a matrix-free Jacobian–vector product (JVP) operator
with three paths, power iteration and ARPACK (Arnoldi/Lanczos) over it, and a dense Jacobian
with LAPACK. States are batched, ``x: [batch, *dims]``; samples are independent, so ``J`` is
block-diagonal over the batch and every estimate is per sample, reducing over all non-batch
dims (``n = prod(dims)``).

Product counts: ``JVPOperator.num_products`` and ``EigResult.num_products`` (power
iteration) count *batched* products, one per sample each; ``EigSpectrum`` and
``DominantEig`` count the *total* single-sample products across the batch, so the methods
compare on one scale (dense charges ``n`` per sample: ``jacrev`` is ``n`` VJPs).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import Tensor

from stiffkit._utils import (
    broadcast_per_sample,
    check_finite,
    check_same_shape,
    check_tensor,
    flat_dot,
    flat_norm,
)

__all__ = ["JVPOperator", "EigResult", "EigSpectrum", "DominantEig", "jvp_operator",
           "power_iteration", "arpack_eig", "jacobian_dense", "eig_dense", "dominant_eig"]

Drift = Callable[[Any, Tensor], Tensor]
JVP_METHODS = ("auto", "forward", "vjp", "fd")
DOMINANT_METHODS = ("power", "arpack", "dense")
ARPACK_WHICH = ("LM", "SM", "LR", "SR")
#: scipy's spelling of `which`, by `symmetric`: eigsh says LA/SA for the real part.
_SCIPY_WHICH = {False: {w: w for w in ARPACK_WHICH},
                True: {"LM": "LM", "SM": "SM", "LR": "LA", "SR": "SA"}}
#: Seed of the local generator used when ``generator=None`` (never the global RNG).
DEFAULT_SEED = 0
#: Power-iteration defaults: products allowed, and stop once residual <= tol * |value|.
POWER_MAX_ITER = 200
POWER_TOL = 1e-6


def _check_output(y: Any, like: Tensor, name: str = "f") -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"`{name}` must return a torch.Tensor, got {type(y).__name__}.")
    if y.shape != like.shape:
        raise ValueError(f"`{name}` must return a tensor of the same shape as `x` "
                         f"{tuple(like.shape)}, got {tuple(y.shape)}.")
    return y


def _check_v0(v0: Any, x: Tensor) -> Tensor:
    check_tensor(v0, "v0")
    check_finite(v0, "v0")
    check_same_shape(v0, x, "v0", "x")
    return v0.to(x.dtype)


def _t_sample(t: Any, i: int, batch: int) -> Any:
    """Return sample ``i``'s time: slice a per-sample ``t: [batch]``, pass anything else."""
    return t[i : i + 1] if isinstance(t, Tensor) and t.ndim >= 1 and t.shape[0] == batch else t


class JVPOperator:
    """Batched Jacobian–vector product ``v ↦ J v``; build it with :func:`jvp_operator`.

    ``x`` is detached on construction, so no product feeds gradients into the caller's
    graph, and products are returned detached: the operator is a numerical probe, not a
    differentiable layer (this also stops power iteration from growing a graph through
    ``f``'s parameters). The "vjp" path caches one graph of ``f`` at ``x`` and checks it
    once with a random adjoint test, raising ``RuntimeError`` if double backward silently
    drops terms (which "auto" answers by falling back to "fd").

    Attributes
    ----------
    method : str
        Path in use: "forward", "vjp" or "fd" ("auto" until the first product resolves it).
    num_products : int
        Batched products computed so far (each is one product per sample).
    shape, dtype :
        Shape ``[batch, *dims]`` and dtype of ``x``, ``v`` and ``J v``.
    """

    def __init__(self, f: Drift, t: Any, x: Tensor, method: str, fd_eps: float | None):
        self.f, self.t, self.x = f, t, x.detach()
        self.method, self.num_products = method, 0
        self.shape, self.dtype = self.x.shape, self.x.dtype
        self.fd_eps = fd_eps if fd_eps is not None else torch.finfo(x.dtype).eps ** (1 / 3)
        self._vjp_graph: tuple[Tensor, Tensor] | None = None

    def __call__(self, v: Tensor) -> Tensor:
        check_tensor(v, "v")
        check_same_shape(v, self.x, "v", "x")
        if v.dtype != self.dtype:
            raise TypeError(f"`v` must have the dtype of `x` ({self.dtype}), got {v.dtype}.")
        jv = self._auto(v) if self.method == "auto" else getattr(self, f"_{self.method}")(v)
        self.num_products += 1
        return _check_output(jv, self.x).detach()

    def _auto(self, v: Tensor) -> Tensor:
        # Some kernels (custom autograd.Functions, some attention ops) lack forward-mode AD,
        # and some also block double backward; fall back in order of accuracy and cost.
        for path in ("forward", "vjp"):
            try:
                jv = getattr(self, f"_{path}")(v)
            except (RuntimeError, NotImplementedError):
                continue
            self.method = path
            return jv
        self.method = "fd"
        return self._fd(v)

    def _forward(self, v: Tensor) -> Tensor:
        _, jv = torch.func.jvp(lambda y: _check_output(self.f(self.t, y), y), (self.x,), (v,))
        return jv

    def _vjp(self, v: Tensor) -> Tensor:
        # Double-backward trick: g(u) = Jᵀu is linear in u, so J v = ∂⟨g(u), v⟩/∂u.
        # enable_grad: this path needs autograd even when the caller runs under no_grad.
        with torch.enable_grad():
            if self._vjp_graph is None:
                x = self.x.clone().requires_grad_(True)
                y = _check_output(self.f(self.t, x), x)
                u = torch.zeros_like(y, requires_grad=True)
                (g,) = torch.autograd.grad(y, x, u, create_graph=True)
                _adjoint_test(x, y, g, u)
                self._vjp_graph = (g, u)
            g, u = self._vjp_graph
            (jv,) = torch.autograd.grad(g, u, v, retain_graph=True)
        return jv

    def _fd(self, v: Tensor) -> Tensor:
        # Central differences with the step h_i = fd_eps * (1 + |x_i|) / |v_i| per sample.
        # The error is O(h² |f'''| |v|³) truncation plus O(eps |f| / h) roundoff, balanced
        # by fd_eps = eps^(1/3): relative error ~ eps^(2/3) (4e-11 float64, 3e-5 float32).
        v_norm = flat_norm(v)
        safe = torch.where(v_norm > 0, v_norm, torch.ones_like(v_norm))
        h = broadcast_per_sample(self.fd_eps * (1 + flat_norm(self.x)) / safe, v)
        f_plus = _check_output(self.f(self.t, self.x + h * v), self.x)
        f_minus = _check_output(self.f(self.t, self.x - h * v), self.x)
        return (f_plus - f_minus) / (2 * h)


def _adjoint_test(x: Tensor, y: Tensor, g: Tensor, u: Tensor) -> None:
    # A backward that is not itself differentiable (@once_differentiable, a detached or
    # non-torch kernel) can drop its terms from g *silently*; check once, per sample, that
    # ⟨w, J p⟩ = ⟨Jᵀw, p⟩ for random p, w (one extra JVP and VJP, not counted).
    gen = torch.Generator(device=x.device).manual_seed(DEFAULT_SEED)
    p, w = (torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=gen) for _ in "pw")
    (jp,) = torch.autograd.grad(g, u, p, retain_graph=True)
    (jtw,) = torch.autograd.grad(y, x, w, retain_graph=True)
    scale = flat_norm(w) * flat_norm(jp) + flat_norm(jtw) * flat_norm(p)
    if bool(((flat_dot(w, jp) - flat_dot(jtw, p)).abs()
             > math.sqrt(torch.finfo(x.dtype).eps) * scale).any()):
        raise RuntimeError("`f`: double backward does not reproduce the Jacobian (a backward "
                           "that is not differentiable, e.g. @once_differentiable); use 'fd'.")


def jvp_operator(
    f: Drift, t: Any, x: Tensor, *, method: str = "auto", fd_eps: float | None = None
) -> JVPOperator:
    """Return the batched operator ``v ↦ J v``, ``J = ∂f/∂x (t, x)`` per sample.

    Parameters
    ----------
    f : callable ``f(t, x) -> [batch, *dims]``
        The drift, torchdiffeq argument order.
    t : float or Tensor (0-d or ``[batch]``)
        Passed through to `f` unchanged.
    x : Tensor ``[batch, *dims]``
        Linearisation point; detached (see :class:`JVPOperator`).
    method : {"auto", "forward", "vjp", "fd"}
        "forward": ``torch.func.jvp``. "vjp": double backward (needs no forward-mode AD).
        "fd": central finite differences. "auto": tries forward on the first product, then
        vjp, then fd, and records the path that worked in ``op.method``.
    fd_eps : float, optional
        Relative step of "fd", default ``cbrt(finfo(x.dtype).eps)``.

    Returns
    -------
    JVPOperator
        Callable ``op(v: [batch, *dims]) -> J v: [batch, *dims]``.
    """
    check_tensor(x, "x")
    check_finite(x, "x")
    if method not in JVP_METHODS:
        raise ValueError(f"`method` must be one of {JVP_METHODS}, got {method!r}.")
    if fd_eps is not None and not (math.isfinite(fd_eps) and fd_eps > 0):
        raise ValueError(f"`fd_eps` must be finite and positive, got {fd_eps}.")
    return JVPOperator(f, t, x, method, fd_eps)


class EigResult(NamedTuple):
    """Per-sample eigenpair from :func:`power_iteration`."""

    value: Tensor  # [batch]
    vector: Tensor  # [batch, *dims], unit norm
    residual: Tensor  # [batch], |J vector - value vector|
    num_products: int  # batched products (= num_iter)
    num_iter: int
    converged: Tensor  # [batch] bool


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
    """
    check_tensor(v0, "v0")
    check_finite(v0, "v0")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive int, got {max_iter!r}.")
    if not tol >= 0:
        raise ValueError(f"`tol` must be non-negative, got {tol}.")
    v = _random_fill(v0, generator)
    v = v / broadcast_per_sample(flat_norm(v), v)
    value = residual = v.new_zeros(v.shape[0])
    converged = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    w = torch.zeros_like(v)
    for num_iter in range(1, max_iter + 1):
        w_new = _check_output(matvec(v), v, "matvec")
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
    return EigResult(value, v, residual, num_iter, num_iter, converged)


class EigSpectrum(NamedTuple):
    """Several eigenpairs per sample, from :func:`eig_dense` (all n) or :func:`arpack_eig` (k)."""

    values: Tensor  # [batch, k], complex only if some eigenvalue is non-real
    vectors: Tensor  # [batch, k, *dims]: vectors[:, j] is the unit eigenvector of values[:, j]
    residuals: Tensor  # [batch, k]
    num_products: int  # total single-sample products
    converged: Tensor  # [batch] bool


def _maybe_real(values: Tensor, vectors: Tensor) -> tuple[Tensor, Tensor]:
    # LAPACK/ARPACK return real eigenvalues of real matrices with an exactly zero imaginary
    # part (and real eigenvectors), so the exact test is the right one.
    if values.is_complex() and bool((values.imag == 0).all()):
        return values.real, vectors.real
    return values, vectors


def _order(values: np.ndarray, which: str) -> np.ndarray:
    """Indices ordering `values` by `which` (ties: positive imaginary part first)."""
    key = {"LM": -np.abs(values), "SM": np.abs(values),
           "LR": -values.real, "SR": values.real}[which]
    return np.lexsort((-np.imag(values), key))


def arpack_eig(
    f: Drift, t: Any, x: Tensor, *, k: int = 1, symmetric: bool = False,
    tol: float | None = None, which: str = "LM", v0: Tensor | None = None,
    max_iter: int | None = None, generator: torch.Generator | None = None,
    jvp_method: str = "auto",
) -> EigSpectrum:
    """Find `k` eigenpairs per sample with ARPACK (``eigsh`` if `symmetric`, else ``eigs``).

    Sample ``i``'s ``LinearOperator`` is the JVP of `f` on ``x[i:i+1]`` alone (float64
    numpy in/out, products in ``x.dtype``). Where ``n`` is too small for ARPACK (``k >= n``
    for eigsh, ``k >= n - 1`` for eigs) the ``n × n`` Jacobian is built from ``n`` products
    and solved by LAPACK. Residuals ``|J v - λ v|`` are recomputed with one more product per
    real eigenvector (two per complex one), included in ``num_products``.

    Parameters
    ----------
    f, t, x :
        As in :func:`jvp_operator`; a per-sample ``t: [batch]`` is sliced with `x`.
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
        Passed to :func:`jvp_operator`.

    Returns
    -------
    EigSpectrum
        A sample whose ARPACK run did not converge has ``converged=False`` and NaN in place
        of the missing pairs.
    """
    check_tensor(x, "x")
    check_finite(x, "x")
    if which not in ARPACK_WHICH:
        raise ValueError(f"`which` must be one of {ARPACK_WHICH}, got {which!r}.")
    batch, dims = x.shape[0], x.shape[1:]
    n = math.prod(dims)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"`k` must be an int in [1, {n}], got {k!r}.")
    start = _random_fill(torch.zeros_like(x) if v0 is None else _check_v0(v0, x), generator)
    tol = math.sqrt(torch.finfo(x.dtype).eps) if tol is None else tol
    values = np.full((batch, k), np.nan, dtype=complex)
    vectors = np.full((batch, k, n), np.nan, dtype=complex)
    residuals = np.full((batch, k), np.nan)
    converged = np.ones(batch, dtype=bool)
    num_products = 0
    for i in range(batch):
        op = jvp_operator(f, _t_sample(t, i, batch), x[i : i + 1], method=jvp_method)

        def matvec(v: np.ndarray, op: JVPOperator = op) -> np.ndarray:  # float64 in/out
            v_t = torch.as_tensor(np.ascontiguousarray(v.real).reshape(1, *dims)).to(x)
            out = op(v_t).reshape(-1).to(torch.float64).cpu().numpy()
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
                                  maxiter=max_iter, v0=v0_i)
            except sla.ArpackNoConvergence as err:
                lam, vec, converged[i] = err.eigenvalues, err.eigenvectors, False
        for j, m in enumerate(_order(np.asarray(lam, dtype=complex), which)[:k]):
            u = vec[:, m] / np.linalg.norm(vec[:, m])
            values[i, j], vectors[i, j] = lam[m], u
            residuals[i, j] = np.linalg.norm(matvec(u) - lam[m] * u)
        num_products += op.num_products
    vals, vecs = _maybe_real(torch.from_numpy(values), torch.from_numpy(vectors))
    dtype = torch.promote_types(x.dtype, torch.complex64) if vals.is_complex() else x.dtype
    return EigSpectrum(
        vals.to(x.device, dtype), vecs.reshape(batch, k, *dims).to(x.device, dtype),
        torch.from_numpy(residuals).to(x), num_products, torch.from_numpy(converged).to(x.device),
    )


def jacobian_dense(f: Drift, t: Any, x: Tensor, *, jvp_method: str = "auto") -> Tensor:
    """Return the per-sample Jacobian ``[batch, n, n]`` of `f` at ``x: [batch, *dims]``.

    Samples are independent, so column j of every sample's Jacobian is one *batched*
    Jacobian–vector product with the j-th basis vector: ``n`` batched products in all
    (through :func:`jvp_operator`, with its fallbacks), no ``vmap`` — so drifts with
    data-dependent checks (input validation, chunking) work. ``x`` is detached first.
    """
    check_tensor(x, "x")
    check_finite(x, "x")
    batch, n = x.shape[0], int(math.prod(x.shape[1:]))
    op = jvp_operator(f, t, x, method=jvp_method)
    cols = []
    for j in range(n):
        e = torch.zeros(batch, n, dtype=x.dtype, device=x.device)
        e[:, j] = 1.0
        cols.append(op(e.reshape(x.shape)).reshape(batch, n))
    return torch.stack(cols, dim=2)  # [batch, n (rows), n (columns)]


def eig_dense(f: Drift, t: Any, x: Tensor, *, symmetric: bool = False) -> EigSpectrum:
    """Return all ``n`` eigenpairs per sample, sorted by decreasing modulus.

    ``eigh`` on ``(J + Jᵀ)/2`` if `symmetric` (removes the roundoff asymmetry of, e.g., the
    Jacobian of an autograd score), else ``eig``. ``values: [batch, n]``, ``vectors:
    [batch, n, *dims]`` (``vectors[:, 0]`` dominant, ``vectors[:, 1]`` second, ...),
    ``num_products = n * batch``.
    """
    jac = jacobian_dense(f, t, x)  # [batch, n, n]
    batch, n = jac.shape[0], jac.shape[1]
    if symmetric:
        values, vecs = torch.linalg.eigh(0.5 * (jac + jac.transpose(1, 2)))
    else:
        values, vecs = _maybe_real(*torch.linalg.eig(jac))
    # Stable sort, so LAPACK's order within a conjugate pair (Im > 0 first) is kept.
    order = torch.sort(values.abs(), dim=1, descending=True, stable=True).indices
    values = values.gather(1, order)
    vecs = vecs.gather(2, order.unsqueeze(1).expand(batch, n, n))  # columns = eigenvectors
    residuals = torch.linalg.vector_norm(jac.to(vecs.dtype) @ vecs - vecs * values[:, None], dim=1)
    vectors = vecs.transpose(1, 2).reshape(batch, n, *x.shape[1:])
    return EigSpectrum(values, vectors, residuals, n * batch,
                       torch.ones(batch, dtype=torch.bool, device=x.device))


class DominantEig(NamedTuple):
    """Eigenpair of largest modulus per sample, from :func:`dominant_eig`."""

    value: Tensor  # [batch], real unless some dominant eigenvalue is genuinely complex
    vector: Tensor  # [batch, *dims], unit norm
    residual: Tensor  # [batch], |J vector - value vector|
    num_products: int  # total single-sample Jacobian products (dense: n per sample)
    method: str
    converged: Tensor  # [batch] bool


def dominant_eig(
    f: Drift, t: Any, x: Tensor, method: str = "power", *, symmetric: bool = False,
    generator: torch.Generator | None = None, v0: Tensor | None = None,
    max_iter: int | None = None, tol: float | None = None, jvp_method: str = "auto",
) -> DominantEig:
    """Estimate the eigenvalue of largest modulus of ``∂f/∂x`` and its eigenvector, per sample.

    Parameters
    ----------
    f, t, x :
        As in :func:`jvp_operator`.
    method : {"power", "arpack", "dense"}
        :func:`power_iteration` on the JVP operator (real values only; see its note on
        complex pairs), :func:`arpack_eig` with ``k=1``, or :func:`eig_dense`.
    symmetric : bool
        Use ``eigsh``/``eigh`` (arpack, dense); power iteration ignores it.
    generator, v0, max_iter, tol, jvp_method :
        Passed to power iteration or ARPACK (None: their defaults); dense ignores them.

    Returns
    -------
    DominantEig
    """
    check_tensor(x, "x")
    if method not in DOMINANT_METHODS:
        raise ValueError(f"`method` must be one of {DOMINANT_METHODS}, got {method!r}.")
    if method == "power":
        op = jvp_operator(f, t, x, method=jvp_method)
        res = power_iteration(op, torch.zeros_like(x) if v0 is None else _check_v0(v0, x),
                              max_iter=POWER_MAX_ITER if max_iter is None else max_iter,
                              tol=POWER_TOL if tol is None else tol, generator=generator)
        return DominantEig(res.value, res.vector, res.residual, res.num_products * x.shape[0],
                           method, res.converged)
    if method == "arpack":
        spec = arpack_eig(f, t, x, k=1, symmetric=symmetric, tol=tol, v0=v0, max_iter=max_iter,
                          generator=generator, jvp_method=jvp_method)
    else:
        spec = eig_dense(f, t, x, symmetric=symmetric)
    value, vector = _maybe_real(spec.values[:, 0], spec.vectors[:, 0])
    return DominantEig(value, vector, spec.residuals[:, 0], spec.num_products, method,
                       spec.converged)
