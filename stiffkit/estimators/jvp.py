"""Matrix-free Jacobian–vector products of a drift, and its dense per-sample Jacobian.

States are batched, ``x: [batch, *dims]``; samples are independent, so the Jacobian
``J = ∂f/∂x`` is block-diagonal over the batch and one *batched* product ``v ↦ J v`` is one
product per sample. :func:`jvp_operator` builds that product by forward-mode AD, double
backward or central finite differences (with an automatic fallback between them);
:func:`jacobian_dense` assembles the ``n × n`` blocks (``n = prod(dims)``) from ``n`` such
products. The eigen-estimators of :mod:`stiffkit.estimators.eigen` run on top of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from stiffkit._utils import (
    broadcast_per_sample,
    check_callable,
    check_finite,
    check_output,
    check_real,
    check_same_shape,
    check_tensor,
    flat_dot,
    flat_norm,
)

__all__ = ["DEFAULT_SEED", "DENSE_MAX_ENTRIES", "JVP_HINT", "JVP_METHODS", "JVPOperator",
           "check_jvp_method", "jacobian_dense", "jvp_operator"]

Drift = Callable[[Any, Tensor], Tensor]
JVP_METHODS = ("auto", "forward", "vjp", "fd")
#: Seed of the local generator used when ``generator=None`` (never the global RNG).
DEFAULT_SEED = 0
#: Attribute a drift may carry to name its cheapest exact path for "auto": ``"vjp"`` on a
#: drift that is itself an autograd gradient (an energy model's score: forward mode is then
#: forward-over-reverse). :func:`stiffkit.diffusion.pf_ode_drift` copies it from the
#: denoiser (:class:`stiffkit.diffusion.EnergyDenoiser` sets it).
JVP_HINT = "jvp_hint"
#: Most entries ``batch · n²`` :func:`jacobian_dense` builds (2³², 32 GiB in float64): beyond
#: it the ``n`` products and the result cannot be afforded, and it raises instead of running.
DENSE_MAX_ENTRIES = 2**32


class JVPOperator:
    """Batched Jacobian–vector product ``v ↦ J v``; build it with :func:`jvp_operator`.

    ``x`` is detached on construction, so no product feeds gradients into the caller's
    graph, and products are returned detached: the operator is a numerical probe, not a
    differentiable layer (this also stops power iteration from growing a graph through
    ``f``'s parameters). The "vjp" path caches one graph of ``f`` at ``x`` and checks it
    once with a random adjoint test, raising ``RuntimeError`` if double backward silently
    drops terms (which "auto" answers by falling back to "fd").

    With ``method="auto"`` the operator picks the fastest exact path for its drift: the
    first product is forward mode (falling back to double backward, then to finite
    differences, where a kernel lacks forward-mode AD), the next two are double backward
    (building and checking its graph, then one timed product); from the fourth product on
    it keeps the path whose timed product was faster (:attr:`auto_choice`; the
    ``auto_timings``). On a drift that is itself a gradient (an energy model's score)
    forward mode is forward-over-reverse and double backward is several times cheaper;
    on a plain network forward mode usually wins. A drift whose :data:`JVP_HINT` attribute
    is ``"vjp"`` skips the timing and takes double backward from the first product (forward
    mode, then finite differences, if that fails). Every path is exact, so values agree to
    roundoff whichever is picked; pass a fixed ``method`` for bitwise-reproducible products.

    Attributes
    ----------
    method : str
        Path of the latest product: "forward", "vjp" or "fd" ("auto" before the first).
    auto_choice : str or None
        The path "auto" settled on ("forward", "vjp" or "fd"), None while it is still
        timing (or for a fixed method).
    auto_timings : dict of str to float
        Seconds of the timed product of each exact path ("auto" only).
    num_products : int
        Jacobian–vector products spent per sample so far: every call is one batched
        product, i.e. one product ``J_i v_i`` for each sample ``i``.
    shape, dtype :
        Shape ``[batch, *dims]`` and dtype of ``x``, ``v`` and ``J v``.
    """

    def __init__(self, f: Drift, t: Any, x: Tensor, method: str, fd_eps: float | None,
                 probe: bool = True):
        self.f, self.t, self.x = f, t, x.detach()
        self.method, self.num_products = method, 0
        self._auto = method == "auto"
        self._probe = probe
        self.auto_choice: str | None = None
        self.auto_timings: dict[str, float] = {}
        self.shape, self.dtype = self.x.shape, self.x.dtype
        self.fd_eps = fd_eps if fd_eps is not None else torch.finfo(x.dtype).eps ** (1 / 3)
        self._vjp_graph: tuple[Tensor, Tensor] | None = None

    def __call__(self, v: Tensor) -> Tensor:
        """Return ``J v`` for ``v: [batch, *dims]`` of the dtype of ``x`` (detached)."""
        check_tensor(v, "v")
        check_same_shape(v, self.x, "v", "x")
        if v.dtype != self.dtype:
            raise TypeError(f"`v` must have the dtype of `x` ({self.dtype}), got {v.dtype}.")
        if self._auto and self.auto_choice is None:
            jv = self._auto_product(v)
        else:
            if self._auto:
                self.method = self.auto_choice
            jv = getattr(self, f"_{self.method}")(v)
        self.num_products += 1
        return check_output(jv, self.x).detach()

    def _auto_product(self, v: Tensor) -> Tensor:
        """One product of "auto" while it is still choosing (see the class docstring)."""
        if self.num_products == 0:
            # Some kernels (custom autograd.Functions, some attention ops) lack forward-mode
            # AD, and some also block double backward; fall back in order of accuracy.
            if getattr(self.f, JVP_HINT, None) == "vjp":  # a gradient drift: no timing
                try:
                    jv = self._vjp(v)
                except (RuntimeError, NotImplementedError):
                    self._vjp_graph = None
                else:
                    self.method = self.auto_choice = "vjp"
                    return jv
                self._probe = False  # forward mode next, without comparing
            for path in ("forward", "vjp"):
                try:
                    start = time.perf_counter()
                    jv = getattr(self, f"_{path}")(v)
                except (RuntimeError, NotImplementedError):
                    continue
                self.method = path
                if path == "vjp" or not self._probe:  # nothing left to compare
                    self.auto_choice = path
                else:
                    self.auto_timings["forward"] = time.perf_counter() - start
                return jv
            self.method = self.auto_choice = "fd"
            return self._fd(v)
        start = time.perf_counter()
        try:
            jv = self._vjp(v)  # the 2nd product builds and checks the graph, the 3rd is timed
        except (RuntimeError, NotImplementedError):
            self.method = self.auto_choice = "forward"
            self._vjp_graph = None
            return self._forward(v)
        self.method = "vjp"
        if self.num_products >= 2:
            self.auto_timings["vjp"] = time.perf_counter() - start
            faster = self.auto_timings["vjp"] < self.auto_timings["forward"]
            self.auto_choice = "vjp" if faster else "forward"
            if not faster:
                self._vjp_graph = None  # free the stored graph
        return jv

    def _forward(self, v: Tensor) -> Tensor:
        _, jv = torch.func.jvp(lambda y: check_output(self.f(self.t, y), y), (self.x,), (v,))
        return jv

    def _vjp(self, v: Tensor) -> Tensor:
        # Double-backward trick: g(u) = Jᵀu is linear in u, so J v = ∂⟨g(u), v⟩/∂u.
        # enable_grad: this path needs autograd even when the caller runs under no_grad.
        with torch.enable_grad():
            if self._vjp_graph is None:
                x = self.x.clone().requires_grad_(True)
                y = check_output(self.f(self.t, x), x)
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
        f_plus = check_output(self.f(self.t, self.x + h * v), self.x)
        f_minus = check_output(self.f(self.t, self.x - h * v), self.x)
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


def check_jvp_method(method: Any, name: str = "jvp_method") -> str:
    """Return `method`, raising ``ValueError`` (naming the argument `name`) unless it is one
    of :data:`JVP_METHODS`."""
    if not isinstance(method, str) or method not in JVP_METHODS:
        raise ValueError(f"`{name}` must be one of {JVP_METHODS}, got {method!r}.")
    return method


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
        "fd": central finite differences. "auto": the fastest exact path for this drift,
        timed on the first products (forward mode, then double backward; fd only where
        neither works) and kept from the fourth product on (``op.auto_choice``; see
        :class:`JVPOperator`), or double backward from the first product for a drift whose
        :data:`JVP_HINT` attribute is ``"vjp"``.
    fd_eps : float, optional
        Relative step of "fd", default ``cbrt(finfo(x.dtype).eps)``.

    Returns
    -------
    JVPOperator
        Callable ``op(v: [batch, *dims]) -> J v: [batch, *dims]``.

    Raises
    ------
    TypeError
        If `f` is not callable or `x` not a floating tensor.
    ValueError
        For a non-finite `x`, an unknown `method` or a non-positive `fd_eps`.
    """
    check_callable(f, "f")
    check_tensor(x, "x")
    check_finite(x, "x")
    check_jvp_method(method, "method")
    if fd_eps is not None:
        check_real(fd_eps, "fd_eps", lo=0, lo_open=True)
    return JVPOperator(f, t, x, method, fd_eps)


def jacobian_dense(f: Drift, t: Any, x: Tensor, *, jvp_method: str = "auto") -> Tensor:
    """Return the per-sample Jacobian of `f` at `x`.

    Samples are independent, so column j of every sample's Jacobian is one *batched*
    Jacobian–vector product with the j-th basis vector: ``n`` products per sample in all
    (through :func:`jvp_operator`, with its fallbacks), no ``vmap`` — so drifts with
    data-dependent checks (input validation, chunking) work. ``x`` is detached first.

    Parameters
    ----------
    f, t :
        As in :func:`jvp_operator`.
    x : Tensor ``[batch, *dims]``
        Linearisation point, ``n = prod(dims)``.
    jvp_method : {"auto", "forward", "vjp", "fd"}
        As in :func:`jvp_operator`, except that "auto" takes the first path that works
        (forward mode, else double backward, else fd; double backward first for a drift
        whose :data:`JVP_HINT` is ``"vjp"``) for every column, without timing.

    Returns
    -------
    Tensor ``[batch, n, n]``
        ``jac[i, r, c] = ∂f_r/∂x_c`` of sample ``i`` (rows: outputs, columns: inputs).

    Raises
    ------
    ValueError
        For a non-finite `x`, an unknown `jvp_method`, or a Jacobian of more than
        :data:`DENSE_MAX_ENTRIES` entries.
    """
    check_tensor(x, "x")
    check_finite(x, "x")
    check_jvp_method(jvp_method)
    batch, n = x.shape[0], int(math.prod(x.shape[1:]))
    if batch * n * n > DENSE_MAX_ENTRIES:
        raise ValueError(
            f"`x` of shape {tuple(x.shape)} has n = {n} dimensions: its dense Jacobian would hold "
            f"{batch} × {n}² entries (more than {DENSE_MAX_ENTRIES:.0e}) from {n} products per "
            "sample; use a matrix-free estimate (dominant_eig method='power' or 'arpack').")
    # "auto" keeps the first path that works here (forward mode where it exists): every
    # column from the same path, and n products of a small n do not repay a timing probe.
    op = JVPOperator(f, t, x, jvp_method, None, probe=False)
    cols = []
    for j in range(n):
        e = torch.zeros(batch, n, dtype=x.dtype, device=x.device)
        e[:, j] = 1.0
        cols.append(op(e.reshape(x.shape)).reshape(batch, n))
    return torch.stack(cols, dim=2)  # [batch, n (rows), n (columns)]
