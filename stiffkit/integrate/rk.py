"""Batched explicit Runge–Kutta steps in torch, and a fixed-grid integrator.

One generic step serves every tableau: stage i evaluates ``k_i = f(t + c_i h, g_i)`` at
``g_i = x + h Σ_{j<i} a_ij k_j``; the main and embedded solutions are
``x + h Σ b_i k_i`` and ``x + h Σ b̂_i k_i``. Inputs are never written in place, so the
step is differentiable with autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import (
    as_per_sample,
    broadcast_per_sample,
    check_batch,
    check_callable,
    check_finite,
    check_output,
    check_tensor,
)
from stiffkit.integrate.trajectory import Trajectory
from stiffkit.tableaux import ButcherTableau, get_tableau

__all__ = ["RKStep", "rk_step", "solve_fixed", "pair_stage_index"]

Drift = Callable[[Tensor, Tensor], Tensor]
TimeLike = float | Tensor


class RKStep(NamedTuple):
    """The result of one Runge–Kutta step (immutable).

    Attributes
    ----------
    x : Tensor, [batch, *dims]
        Main solution at ``t + h``.
    x_hat : Tensor or None, [batch, *dims]
        Embedded solution (None without ``b_hat``).
    error : Tensor or None, [batch, *dims]
        ``x − x_hat``, the classical local error estimate.
    k : tuple of Tensor, s × [batch, *dims]
        Stage derivatives ``k_i = f(t + c_i h, g_i)``.
    g : tuple of Tensor, s × [batch, *dims]
        Stage arguments ``g_i``.
    t : Tensor
        Start time (0-d or [batch]).
    h : Tensor
        Step size (0-d or [batch]).
    num_evals : int
        Evaluations of ``f`` made by this step (s, or s − 1 with a reused first stage).
    """

    x: Tensor
    x_hat: Tensor | None
    error: Tensor | None
    k: tuple[Tensor, ...]
    g: tuple[Tensor, ...]
    t: Tensor
    h: Tensor
    num_evals: int


def _combine(x: Tensor, h: Tensor, coeffs, ks) -> Tensor:
    """Return ``x + h Σ coeffs_j k_j``, skipping zero coefficients."""
    acc, owned = None, False
    for a, k in zip(coeffs, ks):
        if a:
            if acc is None:  # a coefficient 1 takes k itself (k * 1.0 == k bit for bit)
                acc, owned = (k, False) if a == 1 else (k * float(a), True)
            elif not owned:  # the in-place kernel's arithmetic, out of place
                acc, owned = torch.add(acc, k, alpha=float(a)), True
            else:
                # In place on our own temporary only (never on inputs); autograd-safe
                # because mul/add do not need their outputs for the backward pass.
                acc = acc.add_(k, alpha=float(a)) if not acc.requires_grad else acc + float(a) * k
    if acc is None:
        return x
    if h.ndim == 0:
        return torch.add(x, acc, alpha=float(h)) if not h.requires_grad else x + h * acc
    return x + broadcast_per_sample(h, x) * acc


def _stage_time(t: Tensor, c: float, h: Tensor) -> Tensor:
    """``t + c h`` (``t`` for c = 0, ``t + h`` for c = 1: the same values, fewer operations)."""
    return t if not c else (t + h if c == 1 else t + c * h)


class _Coefficients(NamedTuple):
    """A tableau's coefficients as Python floats (converted once per tableau)."""

    A: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    e: tuple[float, ...] | None  # error weights b − b̂
    embedded_stage: int | None  # stage whose argument is x̂ (b̂ is a row of A), if any


@functools.cache
def _coefficients(tableau: ButcherTableau) -> _Coefficients:
    def floats(row):
        return tuple(float(a) for a in row)

    return _Coefficients(
        A=tuple(floats(row[:i]) for i, row in enumerate(tableau.A)),
        b=floats(tableau.b),
        c=floats(tableau.c),
        e=floats(tableau.error_weights) if tableau.b_hat is not None else None,
        embedded_stage=_embedded_stage(tableau),
    )


def rk_step(
    f: Drift,
    t: TimeLike,
    x: Tensor,
    h: TimeLike,
    tableau: ButcherTableau | str,
    *,
    k1: Tensor | None = None,
) -> RKStep:
    """Take one explicit Runge–Kutta step of ``dx/dt = f(t, x)``.

    Parameters
    ----------
    f : callable
        Drift ``f(t, x) -> dx/dt`` (torchdiffeq's argument order), batched over the
        first dimension of ``x``; ``t`` is passed as a tensor (0-d or [batch]).
    t : float or Tensor
        Start time, scalar or per sample ([batch]).
    x : Tensor, [batch, *dims]
        State at `t` (float32 or float64). Not modified.
    h : float or Tensor
        Step size, scalar or per sample; negative integrates backwards. Must be
        nonzero and finite.
    tableau : ButcherTableau or str
        The method, or its catalogue name.
    k1 : Tensor, optional
        ``f(t, x)`` if already known (FSAL reuse: the previous step's last stage);
        saves one evaluation.

    Returns
    -------
    RKStep
        Main and embedded solutions, error estimate, stages and stage arguments.

    Raises
    ------
    TypeError
        For a drift that is not callable, a state or `k1` that is not a floating tensor (or
        `k1` of another dtype), a non-numeric `t` or `h`.
    ValueError
        For an empty batch or a non-finite state, a zero or non-finite step, or a drift whose
        output does not have the state's shape and dtype.
    """
    tableau = get_tableau(tableau)
    check_callable(f, "f")
    check_batch(x, "x")
    check_finite(x, "x")
    t_ = as_per_sample(t, "t", batch=x.shape[0], dtype=x.dtype, device=x.device)
    h_ = as_per_sample(h, "h", batch=x.shape[0], dtype=x.dtype, device=x.device)
    if bool((h_ == 0).any()):
        raise ValueError("`h` must be nonzero.")
    if k1 is not None:
        check_tensor(k1, "k1")
        if k1.shape != x.shape:
            raise ValueError(
                f"`k1` must have the state's shape {tuple(x.shape)}, got {tuple(k1.shape)}."
            )
        if k1.dtype != x.dtype:
            raise TypeError(f"`k1` must have the state's dtype {x.dtype}, got {k1.dtype}.")

    return _step(f, t_, x, h_, tableau, k1)


def _step(f: Drift, t: Tensor, x: Tensor, h: Tensor, tableau: ButcherTableau,
          k1: Tensor | None, with_error: bool = True) -> RKStep:
    """:func:`rk_step` on validated inputs (``t``, ``h`` already tensors of x's dtype)."""
    co = _coefficients(tableau)
    ks: list[Tensor] = []
    gs: list[Tensor] = []
    num_evals = 0
    for i, (row, ci) in enumerate(zip(co.A, co.c)):
        g = _combine(x, h, row, ks)
        if i == 0 and k1 is not None:
            k = k1
        else:
            k = f(_stage_time(t, ci, h), g)
            num_evals += 1
            check_output(k, x, same_dtype=True)
        gs.append(g)
        ks.append(k)

    if tableau.fsal:
        x_new = gs[-1]  # identical to x + h Σ b_j k_j: the last row of A is b
    else:
        x_new = _combine(x, h, co.b, ks)
    x_hat = error = None
    if co.e is not None:
        # Reuse a stage argument when b̂ is a row of A (Heun/Euler: x̂ is the Euler point).
        same = co.embedded_stage
        x_hat = gs[same] if same is not None else _combine(x, h, _b_hat_floats(tableau), ks)
        if with_error:
            # The difference is formed from the error weights directly, which avoids the
            # cancellation of subtracting two nearly equal solutions.
            error = _combine(torch.zeros_like(x), h, co.e, ks)
    return RKStep(x_new, x_hat, error, tuple(ks), tuple(gs), t, h, num_evals)


@functools.cache
def _b_hat_floats(tableau: ButcherTableau) -> tuple[float, ...]:
    """The embedded weights as floats (cached)."""
    return tuple(float(a) for a in tableau.b_hat)


@functools.cache
def _embedded_stage(tableau: ButcherTableau) -> int | None:
    """Index i with A[i] = b̂ exactly (then x̂ = g_i), or None."""
    if tableau.b_hat is None:
        return None
    for i, row in enumerate(tableau.A):
        if row == tableau.b_hat:
            return i
    return None


def pair_stage_index(tableau: ButcherTableau | str) -> int | None:
    """Return the stage paired with the new solution at the same time, or None.

    That is the last stage at abscissa ``c = 1`` whose argument is not the new solution
    itself (row of ``A`` ≠ ``b``): Heun's Euler point (stage 2), DOPRI5's stage 6,
    DOP853's stage 12, RK4's stage 4. Its ``(g, k)`` and ``(x_{n+1}, f(x_{n+1}))`` form
    a pair at the same time, i.e. Hairer's stage difference and ERK-Guid's pair.
    """
    tab = get_tableau(tableau)
    for i in reversed(range(tab.num_stages)):
        if abs(tab.c[i] - 1) <= tab.tol and any(
            abs(tab.A[i][j] - tab.b[j]) > tab.tol for j in range(tab.num_stages)
        ):
            return i
    return None


def solve_fixed(
    f: Drift,
    x0: Tensor,
    t: Tensor,
    tableau: ButcherTableau | str = "rk4",
    *,
    record_stages: bool = False,
    callback: Callable[[int, RKStep], None] | None = None,
    record: bool = True,
) -> Trajectory | tuple[Tensor, int]:
    """Integrate ``dx/dt = f(t, x)`` on a given time grid and record the trajectory.

    Parameters
    ----------
    f : callable
        Drift ``f(t, x)``.
    x0 : Tensor, [batch, *dims]
        Initial state at ``t[0]``.
    t : Tensor or sequence, [N + 1]
        Strictly monotone time grid (increasing or decreasing).
    tableau : ButcherTableau or str
        The method (FSAL tableaux reuse their last stage: s − 1 evaluations per step).
    record_stages : bool
        Also keep every stage and stage argument (``stage_k``, ``stage_g``).
    callback : callable, optional
        Called as ``callback(n, step)`` after step n.
    record : bool
        False: keep nothing along the way and return only the end point — the same steps
        (bitwise the same ``x_N`` as ``trajectory.states[-1]``) without the bookkeeping, for
        callers who want the solution only; `record_stages` must then be False.

    Returns
    -------
    Trajectory
        States at every grid point, the drift at each step's start, embedded
        solutions (pairs), the same-time stage pair, and the evaluation count.
    (x_N, nfe) : tuple of Tensor ``[batch, *dims]`` and int
        With ``record=False``: the state at ``t[-1]`` and the evaluations spent.

    Raises
    ------
    TypeError
        For a drift or callback that is not callable, a state that is not a floating tensor,
        a grid that is not real numbers.
    ValueError
        For an empty batch, a non-finite state or grid, a grid that is not strictly monotone
        with at least 2 points, a solution that became NaN or Inf, or ``record=False`` with
        ``record_stages=True``.
    """
    tableau = get_tableau(tableau)
    check_callable(f, "f")
    if not isinstance(record, bool):
        raise TypeError(f"`record` must be a bool, got {type(record).__name__}.")
    if not record and record_stages:
        raise ValueError("`record_stages=True` needs `record=True` (nothing is kept otherwise).")
    if callback is not None:
        check_callable(callback, "callback")
    check_batch(x0, "x0")
    check_finite(x0, "x0")
    if isinstance(t, Tensor) and t.is_complex():
        raise TypeError("`t` must be a real time grid, got a complex tensor.")
    try:
        grid = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"`t` must be a 1-D sequence or tensor of times, got {t!r}.") from err
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(
            f"`t` must be a 1-D grid with at least 2 points, got shape {tuple(grid.shape)}.")
    check_finite(grid, "t")
    d = grid[1:] - grid[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("`t` must be strictly monotone (increasing or decreasing).")
    if not record:
        return _solve_final(f, x0, grid, d, tableau, callback)
    pair = pair_stage_index(tableau)
    states, drifts, embedded, pair_g, pair_k, all_k, all_g = [x0], [], [], [], [], [], []
    x, k1, nfe = x0, None, 0
    # Inputs validated once above: the steps skip rk_step's per-call checks (host syncs).
    for n in range(grid.shape[0] - 1):
        step = _step(f, grid[n], x, d[n], tableau, k1, with_error=callback is not None)
        nfe += step.num_evals
        drifts.append(step.k[0])
        if step.x_hat is not None:
            embedded.append(step.x_hat)
        if pair is not None:
            pair_g.append(step.g[pair])
            pair_k.append(step.k[pair])
        if record_stages:
            all_k.append(torch.stack(step.k))
            all_g.append(torch.stack(step.g))
        x = step.x
        states.append(x)
        k1 = step.k[-1] if tableau.fsal else None
        if callback is not None:
            callback(n, step)

    def stack(items):
        return torch.stack(items) if items else None

    all_states = torch.stack(states)
    finite = torch.isfinite(all_states.reshape(all_states.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        _raise_non_finite(int((~finite).nonzero()[0, 0]), grid, tableau)
    return Trajectory(
        times=grid,
        states=all_states,
        drifts=torch.stack(drifts),
        final_drift=k1,
        embedded=stack(embedded),
        pair_states=stack(pair_g),
        pair_drifts=stack(pair_k),
        stage_k=stack(all_k),
        stage_g=stack(all_g),
        f=f,
        tableau=tableau,
        nfe=nfe,
    )


def _solve_final(f: Drift, x: Tensor, grid: Tensor, d: Tensor, tableau: ButcherTableau,
                 callback: Callable[[int, RKStep], None] | None) -> tuple[Tensor, int]:
    """:func:`solve_fixed`'s ``record=False`` loop: :func:`_step`'s arithmetic (``x_N`` bitwise
    the recording path's), nothing kept (no error estimate, embedded solution or lists)."""
    co = _coefficients(tableau)
    k1, nfe = None, 0
    for n, (t, h) in enumerate(zip(grid[:-1].unbind(), d.unbind())):  # 0-d views, as recorded
        if callback is not None:  # it reads the whole step
            step = _step(f, t, x, h, tableau, k1)
            nfe, x, k1 = nfe + step.num_evals, step.x, (step.k[-1] if tableau.fsal else None)
            callback(n, step)
            continue
        ks: list[Tensor] = []
        for i, (row, ci) in enumerate(zip(co.A, co.c)):
            g = _combine(x, h, row, ks)
            if i == 0 and k1 is not None:
                ks.append(k1)
                continue
            ks.append(check_output(f(_stage_time(t, ci, h), g), x, same_dtype=True))
            nfe += 1
        k1 = ks[-1] if tableau.fsal else None
        x = g if tableau.fsal else _combine(x, h, co.b, ks)
    if not bool(torch.isfinite(x).all()):
        _raise_non_finite(grid.shape[0] - 1, grid, tableau, False)
    return x, nfe


def _raise_non_finite(n: int, grid: Tensor, tableau: ButcherTableau, first: bool = True) -> None:
    where = f"at grid point {n} (t = {float(grid[n]):.6g}), after step {n - 1}" if first else \
        f"by the end of the grid (t = {float(grid[n]):.6g})"
    raise ValueError(f"The solution became NaN or Inf {where}: the step size is probably outside "
                     f"{tableau.name!r}'s stability region for this drift (see "
                     "stiffkit.real_stability_interval).")
