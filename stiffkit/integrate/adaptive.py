"""Adaptive integration with an embedded-error step-size controller.

The step is shared by the whole batch (as in torchdiffeq): the error of a step is, by default
(``norm="sample"``), the largest over samples of the per-sample RMS norm of
``(x − x̂) / (atol + rtol·max(|x₀|, |x₁|))`` [HNW II.4 (4.11)], so that every sample meets the
tolerance; ``norm="batch_rms"`` takes torchdiffeq's one RMS over the whole batch instead. A step
is accepted when that norm is ≤ 1. The next step is

* I control: ``h · SAFETY · err^(−1/q)``,
* PI control (Gustafsson; Hairer's DOPRI5 with β ≠ 0): ``h · SAFETY · err^(−α) · err_prev^β``
  with ``α = 0.85/q``, ``β = 0.2/q`` (for DOPRI5, q = 5: Hairer's β = 0.04 and
  exponent 0.2 − 0.75β),

where ``q = min(order, embedded_order) + 1``, clamped to ``[MIN_FACTOR, MAX_FACTOR]``
(no growth right after a rejection); the controller is :class:`~stiffkit.integrate.controller.
StepController`. Output times ``t_eval`` are hit exactly by shortening the step that would pass
them (no dense output).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import stiffkit.integrate.controller as ctl
from stiffkit._utils import (
    check_batch,
    check_callable,
    check_finite,
    check_int,
    check_output,
    check_positive,
    check_real,
)
from stiffkit.integrate.controller import ERR_PREV_FLOOR, StepController
from stiffkit.integrate.rk import Drift, RKStep, _combine, pair_stage_index, rk_step
from stiffkit.integrate.rule import (
    ON_STIFF,
    StiffnessDetected,
    StiffnessRule,
    _StiffnessWatch,
    stiffness_threshold,
)
from stiffkit.integrate.trajectory import Trajectory
from stiffkit.tableaux import ButcherTableau, get_tableau

__all__ = ["AdaptiveSolution", "NORMS", "StepHook", "StiffnessDetected", "solve_adaptive",
           "error_norm", "initial_step", "stiffness_threshold"]

#: Smallest relative tolerance, in units of the dtype's machine epsilon (scipy uses 100 too):
#: below it the embedded error estimate is roundoff and the step size collapses.
MIN_RTOL_ULPS = 100.0
#: Error norms of the step-size control: the largest per-sample RMS, or one RMS over the batch.
NORMS = ("sample", "batch_rms")
#: ``hook(n, t, h, step, k_new, err)`` after accepted step `n` (see :func:`solve_adaptive`).
StepHook = Callable[[int, float, float, RKStep, Tensor, Tensor], None]


@dataclass(frozen=True)
class _TorchdiffeqController:
    """torchdiffeq 0.2's ``_optimal_step_size``: ``SAFETY · err^(−1/q)`` clamped to ``[1, MAX]``
    after an accepted step (none shrinks), to ``[MIN, MAX]`` after a rejected one."""

    q: int

    def decide(self, err: float, err_prev: float, last_rejected: bool) -> ctl.ControllerDecision:
        err = err if math.isfinite(err) else math.inf
        factor = (ctl.MAX_FACTOR if err == 0 else ctl.MIN_FACTOR if err == math.inf
                  else ctl.SAFETY * err ** (-1.0 / self.q))
        low = 1.0 if err <= 1.0 else ctl.MIN_FACTOR
        return ctl.ControllerDecision(err <= 1.0, min(ctl.MAX_FACTOR, max(low, factor)), err_prev)


@dataclass(frozen=True, eq=False)
class AdaptiveSolution:
    """Result of :func:`solve_adaptive`.

    Attributes
    ----------
    t : Tensor, [M]
        Output times (``t_eval``, or the two ends of ``t_span``).
    x : Tensor, [M, batch, *dims]
        Solution at `t`.
    trajectory : Trajectory
        Every accepted step (states, drifts, embedded solutions, stage pairs, and
        ``diagnostics["error_norm"]``).
    num_accepted, num_rejected, nfe : int
        Step and evaluation counts (``nfe`` includes the initial-step probe).
    """

    t: Tensor
    x: Tensor
    trajectory: Trajectory
    num_accepted: int
    num_rejected: int
    nfe: int


def error_norm(error: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> Tensor:
    """Return the per-sample RMS of the scaled error, ``[batch, *dims] -> [batch]``.

    Differentiable, with gradient 0 (not NaN) where a sample's error is exactly 0; NaN stays NaN.
    """
    scale = atol + rtol * torch.maximum(x0.abs(), x1.abs())
    ratio = (error / scale).reshape(error.shape[0], -1)
    ms = ratio.pow(2).mean(dim=1)
    positive = ms > 0
    return torch.where(positive, torch.where(positive, ms, 1.0).sqrt(), ms)


def initial_step(
    f: Drift, t0: Tensor, x0: Tensor, f0: Tensor, direction: float, order: int, rtol: float,
    atol: float,
) -> float:
    """Hairer's starting step size [HNW II.4, p. 169]; costs one evaluation of `f`."""
    x0, f0 = x0.detach(), f0.detach()
    scale = atol + rtol * x0.abs()
    d0 = float((x0 / scale).pow(2).mean().sqrt())
    d1 = float((f0 / scale).pow(2).mean().sqrt())
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    x1 = x0 + direction * h0 * f0
    f1 = f(t0 + direction * h0, x1).detach()
    d2 = float(((f1 - f0) / scale).pow(2).mean().sqrt()) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1)


def solve_adaptive(
    f: Drift,
    x0: Tensor,
    t_span: Sequence[float] | Tensor,
    tableau: ButcherTableau | str = "dopri5",
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    controller: str = "pi",
    t_eval: Sequence[float] | Tensor | None = None,
    h0: float | None = None,
    max_steps: int = 100_000,
    use_aux_error: bool = False,
    on_stiff: str = "warn",
    stiffness_rule: StiffnessRule | None = None,
    norm: str = "sample",
    step_hook: StepHook | None = None,
) -> AdaptiveSolution:
    """Integrate ``dx/dt = f(t, x)`` over `t_span` with error-controlled steps.

    Parameters
    ----------
    f : callable
        Drift ``f(t, x)``, batched.
    x0 : Tensor, [batch, *dims]
        Initial state at ``t_span[0]``.
    t_span : (t0, t1)
        Integration interval; ``t1 < t0`` integrates backwards.
    tableau : ButcherTableau or str
        An embedded pair (must have ``b_hat``).
    rtol, atol : float
        Relative and absolute tolerances (positive).
    controller : {"pi", "i", "torchdiffeq"}
        Step-size controller: :class:`~stiffkit.integrate.controller.StepController`'s PI or I
        control, or torchdiffeq's I control, under which accepted steps never shrink (with
        ``norm="batch_rms"`` the number of evaluations of torchdiffeq's dopri5).
    t_eval : sequence, optional
        Times at which to report the solution (within `t_span`, monotone).
    h0 : float, optional
        First step size magnitude (Hairer's heuristic when omitted).
    max_steps : int
        Raise ``RuntimeError`` after this many attempted steps.
    use_aux_error : bool
        For DOP853: combine the order-5 and order-3 estimates as Hairer does
        (``e5² / sqrt(e5² + 0.01·e3²)``).
    on_stiff : {"warn", "raise", "ignore"}
        After every accepted step, Hairer's stiffness test runs on the step's same-time stage
        pair (no extra evaluation; tableaux without one, e.g. Bogacki–Shampine, are not
        tested): ``h·ρ̂`` above the threshold on `stiffness_rule`'s count of steps means the
        step size is limited by stability. "warn" (default) warns once and goes on,
        "raise" stops with :class:`StiffnessDetected` as DOPRI5 does, "ignore" skips the
        test.
    stiffness_rule : StiffnessRule, optional
        The rule; default DOPRI5's counts with
        :func:`~stiffkit.integrate.rule.stiffness_threshold` of `tableau`.
    norm : {"sample", "batch_rms"}
        Step-size control's error norm. "sample" (default): the largest per-sample RMS, so
        every sample meets the tolerance whatever else shares its batch. "batch_rms":
        torchdiffeq's one RMS over the whole batch, ``sqrt(mean_s err_s²)`` — fewer steps (with
        ``controller="torchdiffeq"``, torchdiffeq's dopri5 NFE), but a sample's error then
        depends on its batch-mates and may exceed the tolerance by up to ``sqrt(batch)``.
    step_hook : callable, optional
        Called as ``step_hook(n, t, h, step, k_new, err)`` after accepted step `n` (0-based):
        the end time `t`, the signed step size `h` (floats), the :class:`~stiffkit.integrate.
        rk.RKStep`, ``k_new = f(t, step.x)`` (the next step's first stage, already computed
        by every tableau, FSAL or not) and the per-sample error norm ``err`` ``[batch]``,
        tensors with their autograd graphs (:func:`~stiffkit.integrate.regularized.
        regularized_solve` sums regularisers from them). It costs no evaluation of `f`.

    Returns
    -------
    AdaptiveSolution

    Raises
    ------
    TypeError
        For a drift that is not callable, a state that is not a floating tensor, a `t_eval`
        that is not numeric.
    ValueError
        Naming the argument: an empty batch, a non-finite state, tolerances or `h0` that
        are not positive real numbers,
        a `t_span` that is not a pair of different finite ends, a `t_eval` that is empty,
        non-finite, not monotone or outside `t_span`, a `max_steps` that is not a positive
        integer, an unknown `controller`, `on_stiff` or `norm`.
    StiffnessDetected
        With ``on_stiff="raise"``, when the stiffness rule fires.
    RuntimeError
        At `max_steps` attempted steps (saying so if the problem was found stiff), or when
        the step size underflows.
    """
    tab = get_tableau(tableau)
    if tab.b_hat is None or tab.embedded_order is None:
        raise ValueError(f"`tableau` must be an embedded pair; {tab.name!r} has no `b_hat`.")
    check_callable(f, "f")
    check_batch(x0, "x0")
    check_finite(x0, "x0")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        check_real(tol, name)
        check_positive(tol, name)
    rtol, atol = float(rtol), float(atol)
    max_steps = check_int(max_steps, "max_steps")
    min_rtol = MIN_RTOL_ULPS * torch.finfo(x0.dtype).eps
    if rtol < min_rtol:
        warnings.warn(f"`rtol` = {rtol:g} is below {MIN_RTOL_ULPS:g} ulps of {x0.dtype} "
                      f"(the error estimate is roundoff there); using rtol = {min_rtol:.3g}.",
                      RuntimeWarning, stacklevel=2)
        rtol = min_rtol
    if not isinstance(controller, str) or controller.lower() not in ("pi", "i", "torchdiffeq"):
        raise ValueError(f"`controller` must be 'pi', 'i' or 'torchdiffeq', got {controller!r}.")
    if use_aux_error and tab.b_hat_aux is None:
        raise ValueError(f"`use_aux_error` needs `b_hat_aux`; {tab.name!r} has none.")
    if isinstance(t_span, str) or not hasattr(t_span, "__len__") or len(t_span) != 2:
        raise ValueError(f"`t_span` must be a pair (t0, t1), got {t_span!r}.")
    t0, t1 = (check_real(v, "t_span") for v in t_span)
    if t0 == t1:
        raise ValueError("`t_span` must have two different ends.")
    direction = 1.0 if t1 > t0 else -1.0
    if t_eval is None:
        outs = [t0, t1]
    else:
        try:
            evals = torch.as_tensor(t_eval, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`t_eval` must be a sequence of times, got {t_eval!r}.") from err
        if evals.ndim != 1 or evals.shape[0] == 0:
            raise ValueError(f"`t_eval` must be a non-empty 1-D sequence of times, got shape "
                             f"{tuple(evals.shape)}.")
        check_finite(evals, "t_eval")
        outs = [float(v) for v in evals]
        if any(direction * (b - a) <= 0 for a, b in zip(outs, outs[1:])):
            raise ValueError("`t_eval` must be strictly monotone in the direction of `t_span`.")
        if any(direction * (v - t0) < 0 or direction * (v - t1) > 0 for v in outs):
            raise ValueError("`t_eval` must lie within `t_span`.")
    if h0 is not None:
        check_real(h0, "h0")
        check_positive(h0, "h0")
    if on_stiff not in ON_STIFF:
        raise ValueError(f"`on_stiff` must be one of {ON_STIFF}, got {on_stiff!r}.")
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
    if step_hook is not None:
        check_callable(step_hook, "step_hook")
    if stiffness_rule is not None and not isinstance(stiffness_rule, StiffnessRule):
        raise TypeError(f"`stiffness_rule` must be a StiffnessRule, got "
                        f"{type(stiffness_rule).__name__}.")

    q = min(tab.order, tab.embedded_order) + 1
    control = (_TorchdiffeqController(q) if controller.lower() == "torchdiffeq"
               else StepController(q, controller.lower()))
    pair = pair_stage_index(tab)
    watch = _StiffnessWatch(tab, pair, stiffness_rule, on_stiff, x0.shape[0])
    aux_w = None
    if use_aux_error:
        aux_w = [bi - ai for bi, ai in zip(tab.b, tab.b_hat_aux)]

    def as_t(v: float) -> Tensor:
        return torch.tensor(v, dtype=x0.dtype, device=x0.device)

    x, t = x0, t0
    k1 = f(as_t(t), x)
    nfe = 1
    if not bool(torch.isfinite(check_output(k1, x0, same_dtype=True)).all()):
        raise ValueError(f"`f` returned NaN or Inf at the initial state (t = {t0:g}).")
    if h0 is None:
        h = initial_step(f, as_t(t), x, k1, direction, q - 1, rtol, atol)
        nfe += 1
    else:
        h = float(h0)

    out_t, out_x = [], []
    next_out = 0
    if direction * (outs[0] - t0) == 0:
        out_t.append(t0)
        out_x.append(x0)
        next_out = 1
    rec: dict[str, list] = {k: [] for k in ("t", "x", "f", "xh", "pg", "pk", "err")}
    rec["t"].append(t0)
    rec["x"].append(x0)
    err_prev = ERR_PREV_FLOOR
    accepted = rejected = 0
    last_rejected = last_nonfinite = False

    while next_out < len(outs):
        if accepted + rejected >= max_steps:
            stiff = ("" if watch.onset is None else
                     f" The problem became stiff at t = {watch.onset:.6g}: use an implicit method.")
            raise RuntimeError(
                f"solve_adaptive: `max_steps` = {max_steps} reached at t = {t:.6g}.{stiff}")
        target = outs[next_out]
        h = min(h, abs(target - t))
        if h <= 16 * math.ulp(max(abs(t), 1.0)):
            if last_nonfinite:
                raise RuntimeError(
                    f"solve_adaptive: `f` returned NaN or Inf at every step size down to "
                    f"h = {h:.3g} from t = {t:.6g} (the state there is finite): the drift is "
                    "undefined near this state.")
            raise RuntimeError(f"solve_adaptive: step size underflow at t = {t:.6g}.")
        step: RKStep = rk_step(f, as_t(t), x, direction * h, tab, k1=k1)
        nfe += step.num_evals
        err = error_norm(step.error, x, step.x, rtol, atol)
        if aux_w is not None:
            aux_error = _combine(torch.zeros_like(x), step.h, aux_w, step.k)
            e3 = error_norm(aux_error, x, step.x, rtol, atol)
            denom = torch.sqrt(err**2 + 0.01 * e3**2)
            err = torch.where(denom > 0, err**2 / denom.clamp_min(1e-300), err)
        err_d = err.detach()
        err_max = float(err_d.max() if norm == "sample" else err_d.pow(2).mean().sqrt())
        last_nonfinite = not math.isfinite(err_max)
        decision = control.decide(err_max, err_prev, last_rejected)
        if decision.accept:
            err_prev = decision.err_prev
            # Land exactly on the output time when the step was clipped to reach it.
            t_new = target if h == abs(target - t) else t + direction * h
            rec["f"].append(step.k[0])
            rec["xh"].append(step.x_hat)
            if pair is not None:
                rec["pg"].append(step.g[pair])
                rec["pk"].append(step.k[pair])
            rec["err"].append(err)
            x, t = step.x, t_new
            rec["t"].append(t)
            rec["x"].append(x)
            k1 = step.k[-1] if tab.fsal else f(as_t(t), x)
            if not tab.fsal:
                nfe += 1
            if watch.active:
                watch.after_step(accepted, t, h, step, k1)
            if step_hook is not None:
                step_hook(accepted, t, direction * h, step, k1, err)
            accepted += 1
            last_rejected = False
            if t == target:
                out_t.append(t)
                out_x.append(x)
                next_out += 1
            h = h * decision.factor
        else:
            h = h * decision.factor
            rejected += 1
            last_rejected = True

    def stack(items):
        return torch.stack(items) if items else None

    trajectory = Trajectory(
        times=torch.tensor(rec["t"], dtype=x0.dtype, device=x0.device),
        states=torch.stack(rec["x"]),
        drifts=stack(rec["f"]) if rec["f"] else x0.new_zeros((0, *x0.shape)),
        final_drift=k1,
        embedded=stack(rec["xh"]),
        pair_states=stack(rec["pg"]),
        pair_drifts=stack(rec["pk"]),
        f=f,
        tableau=tab,
        diagnostics={"error_norm": torch.stack(rec["err"])} if rec["err"] else {},
        nfe=nfe,
    )
    return AdaptiveSolution(
        t=torch.tensor(out_t, dtype=x0.dtype, device=x0.device),
        x=torch.stack(out_x),
        trajectory=trajectory,
        num_accepted=accepted,
        num_rejected=rejected,
        nfe=nfe,
    )
