"""An adaptive solve that also returns the solver's own regularisers (ERNODE / SRNODE).

Pal, Ma, Shah & Rackauckas (ICML 2021, "Opening the Blackbox") regularise neural-ODE
training with quantities an adaptive solver computes anyway, at no extra evaluation:

* the error integral ``R_E = Σ_j E_j·|h_j|`` (ERNODE), ``E_j`` the tolerance-normalised
  embedded error estimate of accepted step j — the per-sample RMS of
  ``(x − x̂) / (atol + rtol·max(|x_j|, |x_{j+1}|))``;
* the stiffness integral ``R_S = Σ_j ρ̂_j·|h_j|`` (SRNODE), ``ρ̂_j = ‖f(x_{j+1}) − k_i‖ /
  ‖x_{j+1} − g_i‖`` from the stage ``i`` that shares the new solution's abscissa
  (:func:`~stiffkit.integrate.rk.pair_stage_index`: DOPRI5 / Tsit5 stages 6/7, DOP853 12/13 —
  Hairer's stage-difference estimate), with ``f(x_{j+1})`` the next step's first stage.

:func:`regularized_solve` runs :func:`~stiffkit.integrate.adaptive.solve_adaptive`'s loop
with a per-accepted-step hook, so it makes exactly the evaluations of the plain solve, and
autograd differentiates both integrals (and the solution) through the steps; the step
sizes are chosen from detached floats, as in every adaptive solver.

The one embedded tableau of the catalogue without such a stage pair is Bogacki–Shampine
(its only stage at ``c = 1`` is the new solution itself). There ρ̂ comes from the embedded
pair, ``‖f(x_{j+1}) − f(x̂_{j+1})‖ / ‖x_{j+1} − x̂_{j+1}‖``, which costs one extra evaluation
per accepted step (counted in ``nfe``; pass ``stiffness=False`` to skip it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stiffkit._utils import check_finite, check_output, flat_norm, secant_ratio
from stiffkit.integrate.adaptive import NORMS, solve_adaptive
from stiffkit.integrate.rk import Drift, RKStep, pair_stage_index
from stiffkit.integrate.trajectory import Trajectory
from stiffkit.tableaux import ButcherTableau, get_tableau

__all__ = ["RegularizedSolution", "regularized_solve", "stiffness_source"]


@dataclass(frozen=True, eq=False)
class RegularizedSolution:
    """Result of :func:`regularized_solve` (N accepted steps, M output times).

    Attributes
    ----------
    t : Tensor, [M]
        The output times (`t_span`).
    x : Tensor, [M, batch, *dims]
        Solution at `t` (``torchdiffeq.odeint``'s layout), differentiable.
    error_integral : Tensor, [batch]
        ``R_E = Σ_j E_j·|h_j|`` (≥ 0), differentiable.
    stiffness_integral : Tensor, [batch]
        ``R_S = Σ_j ρ̂_j·|h_j|`` (≥ 0; unresolved pairs count 0), differentiable; zeros
        with ``stiffness=False``.
    step_t, step_h : Tensor, [N]
        Start time and signed size of every accepted step.
    error_norms : Tensor, [N, batch]
        ``E_j`` per sample.
    stiffness : Tensor, [N, batch]
        ``ρ̂_j`` per sample, 0 where the pair was unresolved (see `resolved`).
    resolved : Tensor of bool, [N, batch]
        Whether ``‖Δx‖`` of the pair exceeded roundoff of the states (else ρ̂ is unknown).
    nfe : int
        Evaluations of the drift, the initial-step probe included (the plain solve's count,
        plus one per accepted step for a tableau without a stage pair, see
        :func:`stiffness_source`).
    num_accepted, num_rejected : int
        Step counts.
    trajectory : Trajectory
        The solve's record (for :func:`stiffkit.analyze`).
    """

    t: Tensor
    x: Tensor
    error_integral: Tensor
    stiffness_integral: Tensor
    step_t: Tensor
    step_h: Tensor
    error_norms: Tensor
    stiffness: Tensor
    resolved: Tensor
    nfe: int
    num_accepted: int
    num_rejected: int
    trajectory: Trajectory


def stiffness_source(tableau: ButcherTableau | str) -> str:
    """Say where :func:`regularized_solve` takes ρ̂ from for `tableau`.

    Returns
    -------
    str
        ``"stage pair"`` (stage :func:`~stiffkit.integrate.rk.pair_stage_index` against the
        new solution; no extra evaluation) or ``"embedded pair"`` (the main against the
        embedded solution; one extra evaluation per accepted step).
    """
    return "stage pair" if pair_stage_index(get_tableau(tableau)) is not None else "embedded pair"


def _times(t_span: Sequence[float] | Tensor) -> list[float]:
    if isinstance(t_span, str):
        raise TypeError(f"`t_span` must be a sequence of times, got {t_span!r}.")
    try:
        ts = torch.as_tensor(t_span, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"`t_span` must be a sequence of times, got {t_span!r}.") from err
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"`t_span` must be a 1-D sequence of at least 2 times, got shape "
                         f"{tuple(ts.shape)}.")
    check_finite(ts, "t_span")
    d = ts[1:] - ts[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("`t_span` must be strictly monotone (increasing or decreasing).")
    return [float(v) for v in ts]


def regularized_solve(
    f: Drift,
    x0: Tensor,
    t_span: Sequence[float] | Tensor,
    tableau: ButcherTableau | str = "dopri5",
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    controller: str = "pi",
    norm: str = "sample",
    h0: float | None = None,
    max_steps: int = 100_000,
    stiffness: bool = True,
    on_stiff: str = "ignore",
) -> RegularizedSolution:
    """Solve ``dx/dt = f(t, x)`` adaptively and return ERNODE's and SRNODE's integrals.

    Parameters
    ----------
    f : callable
        Drift ``f(t, x)``, batched (e.g. a ``torch.nn.Module``); gradients flow to its
        parameters through the solution and both integrals.
    x0 : Tensor, [batch, *dims]
        Initial state at ``t_span[0]`` (float32 or float64; may require grad).
    t_span : sequence or Tensor, [M]
        Strictly monotone output times, ``M ≥ 2`` (as ``torchdiffeq.odeint``'s `t`); each is
        hit exactly.
    tableau : ButcherTableau or str
        An embedded pair of the catalogue (default DOPRI5).
    rtol, atol : float
        Tolerances (positive), also the scale of ``E_j``.
    controller, norm, h0, max_steps, on_stiff
        As :func:`~stiffkit.integrate.adaptive.solve_adaptive` (``on_stiff`` defaults to
        "ignore": a training loop does not want Hairer's warning). `norm` only steers the
        step size; ``E_j`` is always per sample.
    stiffness : bool
        Compute ``R_S``. Free for tableaux with a stage pair; for Bogacki–Shampine it costs
        one evaluation per accepted step (:func:`stiffness_source`).

    Returns
    -------
    RegularizedSolution

    Raises
    ------
    TypeError
        For a drift that is not callable, a state that is not a floating tensor, a `t_span`
        that is not numeric.
    ValueError
        Naming the argument: a `t_span` that is not 1-D, has fewer than 2 times, is
        non-finite or not strictly monotone; and every error of
        :func:`~stiffkit.integrate.adaptive.solve_adaptive` (non-finite `x0`, tolerances
        that are not positive, a tableau without ``b_hat``, ...).
    RuntimeError
        As :func:`~stiffkit.integrate.adaptive.solve_adaptive` (`max_steps`, underflow).
    """
    tab = get_tableau(tableau)
    if not isinstance(stiffness, bool):
        raise TypeError(f"`stiffness` must be a bool, got {type(stiffness).__name__}.")
    if norm not in NORMS:  # checked before the first evaluation, as solve_adaptive would
        raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
    times = _times(t_span)
    pair = pair_stage_index(tab)
    rec: dict[str, list] = {k: [] for k in ("t", "h", "err", "rho", "ok")}
    extra = [0]

    def hook(n: int, t: float, h: float, step: RKStep, k_new: Tensor, err: Tensor) -> None:
        rec["t"].append(float(step.t.reshape(-1)[0]))
        rec["h"].append(h)
        rec["err"].append(err)
        if not stiffness:
            return
        if pair is not None:
            x_b, f_b = step.g[pair], step.k[pair]
        else:
            x_b = step.x_hat
            f_b = check_output(f(torch.tensor(t, dtype=step.x.dtype, device=step.x.device), x_b),
                               x_b, same_dtype=True)
            extra[0] += 1
        scale = torch.maximum(flat_norm(x_b), flat_norm(step.x))
        rho = secant_ratio(k_new - f_b, step.x - x_b, None, scale=scale)
        ok = ~torch.isnan(rho)
        rec["rho"].append(torch.where(ok, rho, torch.zeros_like(rho)))
        rec["ok"].append(ok)

    sol = solve_adaptive(f, x0, (times[0], times[-1]), tab, rtol=rtol, atol=atol,
                         controller=controller, t_eval=times, h0=h0, max_steps=max_steps,
                         on_stiff=on_stiff, norm=norm, step_hook=hook)
    batch, dtype, device = x0.shape[0], x0.dtype, x0.device
    step_h = torch.tensor(rec["h"], dtype=dtype, device=device)
    errs = torch.stack(rec["err"])
    if stiffness:
        rho = torch.stack(rec["rho"])
        resolved = torch.stack(rec["ok"])
    else:
        rho = x0.new_zeros((len(rec["h"]), batch))
        resolved = torch.zeros((len(rec["h"]), batch), dtype=torch.bool, device=device)
    weights = step_h.abs().unsqueeze(1)
    return RegularizedSolution(
        t=torch.tensor(times, dtype=dtype, device=device),
        x=sol.x,
        error_integral=(errs * weights).sum(dim=0),
        stiffness_integral=(rho * weights).sum(dim=0),
        step_t=torch.tensor(rec["t"], dtype=dtype, device=device),
        step_h=step_h,
        error_norms=errs,
        stiffness=rho,
        resolved=resolved,
        nfe=sol.nfe + extra[0],
        num_accepted=sol.num_accepted,
        num_rejected=sol.num_rejected,
        trajectory=sol.trajectory,
    )
