"""The torchdiffeq side of the stiffness monitor: which methods, their tableaux, the hooks.

torchdiffeq's adaptive Runge–Kutta solvers (0.2.5, ``rk_common.py``) call
``func.callback_step`` before every attempted step and ``func.callback_accept_step`` /
``func.callback_reject_step`` after it. Between them the solver evaluates stages 2 … s of
the step in order; stage 1 is the previous step's last (FSAL) stage, or the first
evaluation of the solve. :class:`Tracker` follows these evaluations and callbacks and
records, per accepted step, the stages the monitor needs; evaluations outside a step (the
initial-step probe of ``_select_initial_step``, the re-evaluation after a ``jump_t``) are
never mistaken for stages.

Supported methods are those with two evaluated stages at the same abscissa ``c = 1``:
``"dopri5"`` (stiffkit's ``"dopri5_shampine"``: DOPRI5 with Shampine's embedded weights)
and ``"dopri8"`` (Prince–Dormand RK8(7)13M with its FSAL stage, stiffkit's ``"dopri8"``).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import (
    check_batch,
    check_finite,
    check_real,
    check_tensor,
    flat_norm,
    secant_ratio,
)
from stiffkit.estimators.pair import stage_pair
from stiffkit.integrate.rule import DOPRI5_THRESHOLD, DOPRI8_THRESHOLD
from stiffkit.tableaux import ButcherTableau, get_tableau
from stiffkit.tableaux.stability import real_stability_interval

__all__ = ["SUPPORTED_METHODS", "MethodSpec", "Record", "Tracker", "check_method",
           "check_odeint_inputs", "checked_odeint"]

#: torchdiffeq methods the monitor supports (adaptive, with a same-abscissa stage pair).
SUPPORTED_METHODS = ("dopri5", "dopri8")
#: The stiffkit tableau of each supported torchdiffeq method, and its default threshold.
_TABLEAUX = {"dopri5": ("dopri5_shampine", DOPRI5_THRESHOLD),
             "dopri8": ("dopri8", DOPRI8_THRESHOLD)}

NOT_ADAPTIVE = (
    "The solver does not report accepted and rejected steps (fixed-grid solvers, "
    "'scipy_solver'): give torchdiffeq.odeint the monitor's `method` "
    f"({' or '.join(map(repr, SUPPORTED_METHODS))})."
)

_NO_PAIR = {
    "bosh3": "its only stage at c = 1 is the FSAL stage at the new solution",
    "fehlberg2": "its stage at c = 1 is the embedded solution and torchdiffeq never "
    "evaluates f at the propagated one",
    "adaptive_heun": "its stage at c = 1 is the Euler point and torchdiffeq never "
    "evaluates f at the propagated Heun solution",
}


@dataclass(frozen=True)
class MethodSpec:
    """What the monitor needs to know about one torchdiffeq method."""

    name: str
    tableau: ButcherTableau
    pair: tuple[int, int]  # 0-based stages (i, j), j = s − 1 (the new solution)
    boundary: float
    threshold: float

    @property
    def stage_evals(self) -> int:
        """Evaluations per attempted step (stage 1 is reused)."""
        return self.tableau.num_stages - 1


@functools.cache
def _method_spec(method: str) -> MethodSpec:
    # torchdiffeq's dopri5 uses Shampine's embedded weights; the main weights are DOPRI5's.
    name, threshold = _TABLEAUX[method]
    tab = get_tableau(name)
    pair = stage_pair(tab)
    if pair is None or pair[1] != tab.num_stages - 1 or not tab.fsal:
        raise RuntimeError(f"Tableau {name!r} has no FSAL stage pair at c = 1.")  # pragma: no cover
    return MethodSpec(method, tab, pair, real_stability_interval(tab), threshold)


def check_method(method: Any) -> MethodSpec:
    """Return the :class:`MethodSpec` of a supported `method`, or raise naming `method`."""
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string, got {type(method).__name__}.")
    if method in _NO_PAIR:
        raise ValueError(
            f"`method` {method!r} is not supported: {_NO_PAIR[method]}, so it has no two "
            "evaluated stages at the same abscissa and Hairer's estimate would need an extra "
            "evaluation (stiffkit.estimators.embedded_stiffness). Supported: "
            f"{', '.join(SUPPORTED_METHODS)}."
        )
    if method not in SUPPORTED_METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(map(repr, SUPPORTED_METHODS))} (torchdiffeq's "
            f"adaptive solvers with a same-abscissa stage pair), got {method!r}; fixed-grid "
            "solvers and 'scipy_solver' do not report their steps."
        )
    return _method_spec(method)


class Eval(NamedTuple):
    """One evaluation ``k = f(t, g)``: detached tensors, and a weak reference to the argument
    (torchdiffeq hands that same object to the next callback; a strong one would keep the
    solve's autograd graph alive after the solve)."""

    t: Tensor
    g: Tensor
    k: Tensor
    y: weakref.ref


class Record:
    """The accepted steps of one solve (a plain object: cheap attribute updates)."""

    def __init__(self) -> None:
        self.nfe = 0
        self.num_rejected = 0
        self.pending_rejects = 0
        self.direction = 0  # +1 / −1 once known
        self.y0: weakref.ref | None = None  # start of the last attempted step
        self.k1: Tensor | None = None  # its stage 1
        self.end: Eval | None = None  # x_{n+1}, f(x_{n+1}) of the last accepted step
        self.t: list[Tensor] = []  # per accepted step: start time (user's), |h|, ρ̂ [batch]
        self.h: list[Tensor] = []
        self.rho: list[Tensor] = []
        self.rejected: list[int] = []
        self.states: list[Tensor] = []  # keep != "scalars"
        self.drifts: list[Tensor] = []
        self.pair_g: list[Tensor] = []
        self.pair_k: list[Tensor] = []
        self.stage_g: list[Tensor] = []  # keep == "stages"
        self.stage_k: list[Tensor] = []


class Tracker:
    """Follow torchdiffeq's evaluations and step callbacks for one method; record the steps.

    The monitor forwards every evaluation to :meth:`observe` and every callback to
    :meth:`step`, :meth:`reject` or :meth:`accept`; ``record`` is the latest solve.
    """

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec
        i, j = spec.pair
        self.keep_last = j - i + 1  # evaluations of an attempt the pair needs
        self.record: Record | None = None
        self.in_step = False
        self.attempt: list[Eval] = []  # evaluations of the current attempt (trimmed)
        self.attempt_evals = 0
        # Evaluations outside any step since the last step: their count, and the last two
        # with their 1-based position (a solve starts with f(t0, y0), then maybe a probe).
        self.outside_evals = 0
        self.outside: list[tuple[int, Eval]] = []

    def observe(self, t: Tensor, y: Tensor, k: Tensor, *, all_stages: bool) -> None:
        """Record the evaluation ``k = f(t, y)`` (keep every stage if `all_stages`)."""
        # Detached: the record must not keep autograd graphs alive.
        ev = Eval(t.detach(), y.detach(), k.detach(), weakref.ref(y))
        if self.in_step:
            self.attempt_evals += 1
            self.attempt.append(ev)
            if not all_stages and len(self.attempt) > self.keep_last:
                del self.attempt[0]
        else:
            self.outside_evals += 1
            self.outside = [*self.outside[-1:], (self.outside_evals, ev)]

    def _match_outside(self, y0: Tensor) -> tuple[int, Eval] | None:
        """Return the latest evaluation outside a step at the state `y0`, or None."""
        for pos, ev in reversed(self.outside):
            if ev.y() is y0:
                return pos, ev
        for pos, ev in reversed(self.outside):  # in case a wrapper copied the state
            if ev.g.shape == y0.shape and torch.equal(ev.g, y0):
                return pos, ev
        return None

    def step(self, y0: Tensor) -> None:
        """``callback_step``: an attempt from the state `y0` begins."""
        rec = self.record
        # The steps of one solve follow each other with no evaluation in between, except
        # f at the new state after a jump_t; a new solve starts with f(t0, y0).
        jump = rec is not None and rec.end is not None and y0 is rec.end.y()
        new_solve = rec is None or (self.outside_evals > 0 and not jump)
        match = self._match_outside(y0) if self.outside_evals else None
        if self.outside_evals == 0 and (rec is None or self.in_step):
            # Fixed-grid solvers announce steps but evaluate nothing first and never
            # accept or reject.
            raise ValueError(NOT_ADAPTIVE)
        if new_solve:
            if match is None:
                raise RuntimeError(
                    "StiffnessMonitor could not find f(t0, y0) of the solve's first step: "
                    "pass the monitor itself to torchdiffeq.odeint as `func`."
                )
            rec = self.record = Record()
            rec.nfe = self.outside_evals - match[0] + 1  # f(t0, y0) and the probe after it
            rec.k1 = match[1].k
        else:
            rec.nfe += self.outside_evals
            if y0 is not rec.y0():  # the previous attempt was accepted: FSAL, or f after jump_t
                rec.k1 = match[1].k if match is not None else rec.end.k
        rec.y0 = weakref.ref(y0)
        self.outside_evals, self.outside = 0, []
        self.in_step, self.attempt, self.attempt_evals = True, [], 0

    def reject(self, method: str) -> None:
        """``callback_reject_step``: the attempt was rejected."""
        self._finish_attempt(method)
        self.record.num_rejected += 1
        self.record.pending_rejects += 1

    def accept(self, t0: Tensor, y0: Tensor, dt: Tensor, *, method: str, keep: str,
               flat: Callable[[Tensor], Tensor], eps: float | None) -> None:
        """``callback_accept_step``: record the attempt from ``(t0, y0)`` with step `dt`.

        ρ̂ is Hairer's estimate ``‖k_j − k_i‖ / ‖g_j − g_i‖`` on the stage pair, on the
        states as `flat` presents them (``[batch, *dims]``), with the guard `eps` of
        :func:`stiffkit.estimators.pair_stiffness` (None: NaN where the stages coincide to
        roundoff).
        """
        stages = self._finish_attempt(method)
        rec = self.record
        s = self.spec.tableau.num_stages
        i, j = self.spec.pair
        # `stages` holds the last evaluations of the attempt, i.e. stages … s − 1 (0-based).
        pi, pj = stages[i - s], stages[j - s]
        gi, gj = flat(pi.g), flat(pj.g)
        scale = torch.maximum(flat_norm(gi), flat_norm(gj)) if eps is None else None
        rho = secant_ratio(flat(pj.k) - flat(pi.k), gj - gi, eps, scale=scale)
        if rec.direction == 0:
            # Callbacks get the user's t0 but torchdiffeq's positive dt; the time of the last
            # stage (t0 ± dt) tells whether time runs backwards.
            rec.direction = -1 if float(pj.t) < float(t0) else 1
        rec.t.append(t0.detach())
        rec.h.append(dt.detach())  # after any step_t/jump_t clipping, unlike callback_step's dt
        rec.rho.append(rho)
        rec.rejected.append(rec.pending_rejects)
        rec.pending_rejects = 0
        if keep != "scalars":
            if not rec.states:
                rec.states.append(y0.detach())
            rec.states.append(pj.g)
            rec.drifts.append(rec.k1)
            rec.pair_g.append(pi.g)
            rec.pair_k.append(pi.k)
        if keep == "stages":
            rec.stage_g.append(torch.stack([y0.detach(), *(ev.g for ev in stages)]))
            rec.stage_k.append(torch.stack([rec.k1, *(ev.k for ev in stages)]))
        rec.end = pj

    def _finish_attempt(self, method: str) -> list[Eval]:
        if not self.in_step or self.record is None:
            raise RuntimeError("torchdiffeq reported the end of a step that never started.")
        self.in_step = False
        expected = self.spec.stage_evals
        if self.attempt_evals != expected:
            raise ValueError(
                f"StiffnessMonitor was built for `method`={method!r} ({expected} evaluations "
                f"per step) but the solver made {self.attempt_evals}: pass the same `method` to "
                "the monitor and to torchdiffeq.odeint."
            )
        self.record.nfe += self.attempt_evals
        stages, self.attempt = self.attempt, []
        return stages


def check_odeint_inputs(y0: Any, t: Any, rtol: Any, atol: Any, options: Any,
                         batched: bool) -> None:
    """Raise naming the argument for what ``torchdiffeq.odeint`` would reject by assertion (or
    accept silently, as ``rtol < 0``): `y0` and `t` floating, finite tensors (a non-empty
    batch, a 1-D strictly monotone `t`), tolerances ``>= 0`` and not both 0, `options` a
    mapping or None."""
    check_tensor(y0, "y0", min_ndim=1 if batched else 0)
    if batched:
        check_batch(y0, "y0")
    check_finite(y0, "y0")
    check_tensor(t, "t")
    if t.ndim != 1:
        raise ValueError(f"`t` must be 1-D, got shape {tuple(t.shape)}.")
    check_finite(t, "t")
    d = t[1:] - t[:-1]
    if d.numel() and not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("`t` must be strictly monotone (increasing or decreasing).")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        check_real(tol, name, lo=0)
    if rtol == 0 and atol == 0:
        raise ValueError("`rtol` and `atol` must not both be 0.")
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"`options` must be a mapping or None, got {type(options).__name__}.")


def checked_odeint(func: Callable[[Tensor, Tensor], Tensor], y0: Tensor, t: Tensor,
                   **kwargs: Any) -> Tensor:
    """Return ``torchdiffeq.odeint(func, y0, t, **kwargs)``, a failed solve (which torchdiffeq
    reports by ``AssertionError``) raised as ``RuntimeError`` saying what it means."""
    import torchdiffeq

    try:
        return torchdiffeq.odeint(func, y0, t, **kwargs)
    except AssertionError as err:
        raise RuntimeError(f"torchdiffeq.odeint failed ({err}): the drift returned NaN or Inf, "
                           "or the step size underflowed.") from err
