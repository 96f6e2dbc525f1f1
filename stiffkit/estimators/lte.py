"""Local truncation error of one step and its alignment with eigenvectors.

The LTE of a step from ``(t, x)`` is ``x_ref(t + h) − x_step``, where ``x_ref`` is the
exact flow from ``x`` (docs/theory/embedded_pairs.md, eq. (4)). The reference is exact for
linear problems (a matrix
exponential) and otherwise a converged solve of the same ODE: torchdiffeq ``dopri5`` at
tight tolerance, or many RK4 substeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import (
    check_batch,
    check_callable,
    check_finite,
    check_int,
    check_output,
    check_real,
    check_tensor,
    flat_cosine,
    flat_dot,
)
from stiffkit.integrate.reference import dopri5_within
from stiffkit.integrate.rk import RKStep, rk_step, solve_fixed

__all__ = [
    "LTE",
    "REFERENCE_ATOL",
    "REFERENCE_METHODS",
    "REFERENCE_RTOL",
    "alignment",
    "check_reference_method",
    "eigen_coefficients",
    "local_truncation_error",
    "reference_step",
]

#: Tolerances of the torchdiffeq reference solve (float64).
REFERENCE_RTOL = 1e-10
REFERENCE_ATOL = 1e-12
#: RK4 substeps of the fixed-step reference.
REFERENCE_SUBSTEPS = 64


class LTE(NamedTuple):
    """Local truncation error of one step.

    Attributes
    ----------
    lte : Tensor, [batch, *dims]
        ``x_ref − x_step``.
    x_ref : Tensor, [batch, *dims]
        Accurate solution at ``t + h``.
    step : RKStep
        The step that was measured.
    """

    lte: Tensor
    x_ref: Tensor
    step: RKStep


def reference_step(
    f: Callable[[Tensor, Tensor], Tensor],
    t: float | Tensor,
    x: Tensor,
    h: float | Tensor,
    *,
    method: str = "dopri5",
    matrix: Tensor | np.ndarray | None = None,
    rtol: float = REFERENCE_RTOL,
    atol: float = REFERENCE_ATOL,
    substeps: int = REFERENCE_SUBSTEPS,
) -> Tensor:
    """Return an accurate solution of ``dx/dt = f(t, x)`` at ``t + h`` from `x`.

    Parameters
    ----------
    f : callable
        Drift ``f(t, x)``.
    t, h : float or 0-d Tensor
        Start time and step (shared by the batch).
    x : Tensor, [batch, *dims]
        Start state.
    method : {"dopri5", "rk4", "exact"}
        torchdiffeq's dopri5 at (`rtol`, `atol`) in float64; `substeps` RK4 steps; or the
        exact flow ``expm(h·matrix)`` of an autonomous linear drift ``f = matrix·x``.
    matrix : array, [n, n], optional
        The linear drift's matrix (``method="exact"``; n = prod(dims)).

    Raises
    ------
    TypeError
        If `f` is not callable or `x` not a floating tensor.
    ValueError
        Naming the argument: an empty batch, non-finite `x`, a `t` or `h` that is not a
        finite real scalar, ``h = 0``, an unknown `method`, a missing or malformed `matrix`,
        non-positive tolerances, a `substeps` that is not a positive integer.
    """
    check_callable(f, "f")
    check_batch(x, "x")
    check_finite(x, "x")
    check_reference_method(method, "method")
    t0 = check_real(t, "t")
    if not _is_scalar(h):
        raise ValueError(f"`h` must be one step for the whole batch (a scalar), got shape "
                         f"{tuple(h.shape)}.")
    hh = check_real(h, "h")
    if hh == 0:
        raise ValueError("`h` must be nonzero and finite.")
    x64 = x.detach().to(torch.float64)
    if method == "exact":
        if matrix is None:
            raise ValueError("`matrix` is required with method='exact'.")
        M = _real_matrix(matrix)
        flat = x64.reshape(x.shape[0], -1)
        if M.shape != (flat.shape[1], flat.shape[1]):
            raise ValueError(
                f"`matrix` must have shape {(flat.shape[1],) * 2}, got {tuple(M.shape)}."
            )
        out = flat @ torch.linalg.matrix_exp(hh * M).T
        return out.reshape(x.shape).to(x.dtype)

    def f64(tt, y):
        y = y.to(x.dtype)
        return check_output(f(tt, y), y).to(torch.float64)

    if method == "dopri5":
        for name, tol in (("rtol", rtol), ("atol", atol)):
            check_real(tol, name, lo=0, lo_open=True)
        out = dopri5_within(f64, x64, t0, t0 + hh, rtol=rtol, atol=atol)
    else:
        substeps = check_int(substeps, "substeps")
        grid = torch.linspace(t0, t0 + hh, substeps + 1, dtype=torch.float64)
        out = solve_fixed(f64, x64, grid, "rk4").states[-1]
    return out.to(x.dtype)


#: The references of :func:`reference_step`.
REFERENCE_METHODS = ("dopri5", "rk4", "exact")


def check_reference_method(method, name: str = "reference") -> str:
    """Return `method`, raising ``ValueError`` (naming the argument `name`) unless it is one of
    :data:`REFERENCE_METHODS`."""
    if not isinstance(method, str) or method not in REFERENCE_METHODS:
        raise ValueError(f"`{name}` must be 'dopri5', 'rk4' or 'exact', got {method!r}.")
    return method


def _is_scalar(v) -> bool:
    return not isinstance(v, Tensor | np.ndarray) or v.ndim == 0


def _real_matrix(matrix) -> Tensor:
    """`matrix` as a float64 tensor, raising unless it is a finite real array."""
    try:
        M = np.asarray(matrix.detach().cpu() if isinstance(matrix, Tensor) else matrix)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`matrix` must be a real array, got {type(matrix).__name__}.") from err
    if M.dtype.kind not in "iuf":
        raise ValueError(f"`matrix` must be a real array, got dtype {M.dtype}.")
    M = torch.as_tensor(M.astype(np.float64))
    check_finite(M, "matrix")
    return M


def local_truncation_error(
    f: Callable[[Tensor, Tensor], Tensor],
    t: float | Tensor,
    x: Tensor,
    h: float | Tensor,
    tableau,
    *,
    reference: str = "dopri5",
    matrix=None,
    **reference_kwargs,
) -> LTE:
    """Take one step of `tableau` from ``(t, x)`` and measure its LTE against a reference.

    See :func:`reference_step` for `reference` (``"dopri5"``, ``"rk4"``, ``"exact"``).
    """
    check_reference_method(reference, "reference")
    step = rk_step(f, t, x, h, tableau)
    x_ref = reference_step(f, t, x, h, method=reference, matrix=matrix, **reference_kwargs)
    return LTE(x_ref - step.x, x_ref, step)


def eigen_coefficients(v: Tensor, eigenvectors: Tensor) -> Tensor:
    """Return ``⟨v, v_k⟩`` per sample and eigenvector, ``[batch, K]``.

    Parameters
    ----------
    v : Tensor, [batch, *dims]
    eigenvectors : Tensor, [batch, K, *dims] (or [K, *dims] shared by the batch)
        Real, unit-norm eigenvectors (e.g. ``eig_dense(...).vectors``).
    """
    check_tensor(v, "v")
    if isinstance(eigenvectors, Tensor) and eigenvectors.is_complex():
        raise ValueError("`eigenvectors` must be real (project on real eigenvectors only).")
    check_tensor(eigenvectors, "eigenvectors", min_ndim=v.ndim)
    if eigenvectors.ndim == v.ndim:  # shared by the batch
        eigenvectors = eigenvectors.expand(v.shape[0], *eigenvectors.shape)
    if eigenvectors.shape[0] != v.shape[0] or eigenvectors.shape[2:] != v.shape[1:]:
        raise ValueError(
            f"`eigenvectors` must have shape [batch, K, *dims] = [{v.shape[0]}, K, "
            f"{', '.join(map(str, v.shape[1:]))}], got {tuple(eigenvectors.shape)}."
        )
    if eigenvectors.is_complex():
        raise ValueError("`eigenvectors` must be real (project on real eigenvectors only).")
    K = eigenvectors.shape[1]
    return torch.stack([flat_dot(v, eigenvectors[:, k].to(v.dtype)) for k in range(K)], dim=1)


def alignment(v1: Tensor, **vectors: Tensor) -> dict[str, Tensor]:
    """Return ``|cos(vector, v₁)|`` per sample for each named vector (0 for zero vectors).

    The sign of an eigenvector is arbitrary, hence the absolute value. A sample where the
    vector or ``v₁`` holds NaN or Inf has no alignment: NaN (never a silent 0).
    Example: ``alignment(v1, lte=lte, dx=dx, df=df)``.

    Raises
    ------
    TypeError
        If `v1` or a vector is not a real floating tensor.
    ValueError
        If a vector's shape differs from `v1`'s.
    """
    check_tensor(v1, "v1")
    v1_ok = _finite_rows(v1)
    out = {}
    for name, vec in vectors.items():
        check_tensor(vec, name)
        if vec.shape != v1.shape:
            raise ValueError(
                f"`{name}` must have the shape of `v1` {tuple(v1.shape)}, got {tuple(vec.shape)}."
            )
        cos = flat_cosine(vec, v1.to(vec.dtype)).abs()
        out[name] = torch.where(v1_ok & _finite_rows(vec), cos, torch.full_like(cos, torch.nan))
    return out


def _finite_rows(v: Tensor) -> Tensor:
    """Whether each sample of ``v: [batch, *dims]`` is finite, ``[batch]``."""
    return torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)
