"""A stiffness monitor for ``torchdiffeq.odeint``: Hairer's estimate at no extra cost.

Wrap the drift, pass the wrapper to ``torchdiffeq.odeint``, read a report afterwards::

    mon = stiffkit.StiffnessMonitor(f)                      # method="dopri5"
    ys = torchdiffeq.odeint(mon, x0, t, method="dopri5", rtol=1e-6, atol=1e-9)
    df = mon.frame()          # one row per accepted step and sample, like stiffkit.analyze
    traj = mon.trajectory()   # the accepted steps as a stiffkit.Trajectory
    mon.stiff_onset           # per sample: when DOPRI5's rule first fired (NaN: never)

How it works. torchdiffeq's adaptive Runge–Kutta solvers call ``func.callback_step``
before every attempted step and ``func.callback_accept_step`` /
``func.callback_reject_step`` after it (torchdiffeq 0.2.5, ``rk_common.py``). Between
them the solver evaluates stages 2 … s of the step in order; stage 1 is the previous
step's last (FSAL) stage, or the first evaluation of the solve. The monitor records
these evaluations, so after an accepted step it holds two stages at the same abscissa
``c = 1`` — DOPRI5's stage 6 and stage 7 (the new solution), the 13th and 14th stage
of torchdiffeq's 8th-order method — and forms Hairer's estimate [HNW II.10, p. 21]

    ρ̂ = ‖k_j − k_i‖ / (‖g_j − g_i‖ + eps)   per sample (norms over all non-batch dims),

with ``g`` the stage arguments and ``k = f(g)``. The returned drift is ``f``'s own output
tensor, so the solution is bitwise that of plain ``odeint`` and no evaluation is added.
Evaluations outside a step (the initial-step probe of ``_select_initial_step``, the
re-evaluation after a ``jump_t``) are never mistaken for stages.

Stiffness flag. After every accepted step DOPRI5 [HNW, ``dopri5.f``] tests
``h·ρ̂ > 3.25``: a positive test increments ``iasti`` (and zeroes ``nonsti``), a negative
one increments ``nonsti``, and six negative tests in a row reset ``iasti`` to 0; when
``iasti`` reaches 15 the problem "seems to become stiff". :class:`StiffnessRule` holds the
threshold and counts. The rule runs **per sample**: torchdiffeq takes one step for the
whole batch, but ρ̂ is a property of each sample, so each sample has its own counters and
onset time. Because the shared step is limited by the stiffest sample, a sample whose own
ρ̂ is small shows a small ``h·ρ̂`` even while the batch is stability-limited; the onset of
the batch is the earliest of the per-sample onsets.

Supported methods: ``"dopri5"`` (Dormand–Prince with Shampine's embedded weights, i.e.
stiffkit's ``"dopri5_shampine"``) and ``"dopri8"`` (Prince–Dormand RK8(7)13M — *not*
DOP853: its real stability boundary is 5.17, not 6.39, so its default threshold is
:data:`DOPRI8_THRESHOLD`, the fraction of the boundary that DOP853's 6.1 is of 6.39).
``"bosh3"``, ``"fehlberg2"`` and ``"adaptive_heun"`` have no two evaluated stages at the
same abscissa (Bogacki–Shampine's only ``c = 1`` stage is the new solution; in
torchdiffeq's Fehlberg 1(2) and Heun–Euler the ``c = 1`` stage is the embedded solution
and ``f`` is never evaluated at the propagated one), so Hairer's estimate would cost an
extra evaluation (:func:`stiffkit.estimators.embedded_stiffness`); the monitor refuses them, as it
refuses fixed-grid solvers and ``scipy_solver``, which report no steps.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import flat_norm
from stiffkit.analysis.columns import conform
from stiffkit.estimators.pair import PAIR_EPS, stage_pair
from stiffkit.integrate.trajectory import Trajectory
from stiffkit.tableaux import ButcherTableau, get_tableau
from stiffkit.tableaux.stability import real_stability_interval

__all__ = [
    "StiffnessMonitor",
    "StiffnessRule",
    "StiffnessFlags",
    "odeint_monitored",
    "SUPPORTED_METHODS",
    "DOPRI5_THRESHOLD",
    "DOPRI8_THRESHOLD",
]

#: torchdiffeq methods the monitor supports (adaptive, with a same-abscissa stage pair).
SUPPORTED_METHODS = ("dopri5", "dopri8")

#: DOPRI5's stiffness threshold on ``h·ρ̂`` [HNW, dopri5.f]; its boundary is 3.3066.
DOPRI5_THRESHOLD = 3.25
#: Threshold for torchdiffeq's "dopri8", Prince–Dormand RK8(7)13M (boundary 5.1666): the
#: fraction 6.1 / 6.3937 of the boundary that DOP853 uses [HNW, dop853.f], to two digits.
#: DOP853's own 6.1 would lie above this method's boundary and almost never fire.
DOPRI8_THRESHOLD = 4.93

#: DOPRI5's counts [HNW, dopri5.f]: flag after 15 positive tests; 6 negative tests in a
#: row reset the count.
HNW_COUNT = 15
HNW_RESET_AFTER = 6

_KEEP = ("scalars", "pairs", "stages")

_NOT_ADAPTIVE = (
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


# ------------------------------------------------------------------------ the rule
class StiffnessFlags(NamedTuple):
    """The counters of :meth:`StiffnessRule.apply` after every step, ``[N, batch]`` each.

    Attributes
    ----------
    iasti : np.ndarray of int
        Positive tests counted since the last reset (HNW's ``IASTI``).
    nonsti : np.ndarray of int
        Negative tests in a row (HNW's ``NONSTI``).
    stiff : np.ndarray of bool
        ``iasti ≥ count``: the rule is firing.
    onset_step : np.ndarray of int, [batch]
        First step at which the rule fired, −1 where it never did.
    """

    iasti: np.ndarray
    nonsti: np.ndarray
    stiff: np.ndarray
    onset_step: np.ndarray


@dataclass(frozen=True)
class StiffnessRule:
    """Hairer's stiffness-detection counter of DOPRI5/DOP853 [HNW, dopri5.f].

    After accepted step n (1-based), if ``n`` is a multiple of `check_every` or the
    count is positive, test ``h·ρ̂ > threshold``: a positive test increments the count
    ``iasti`` and zeroes ``nonsti``; a negative one increments ``nonsti``, and when
    ``nonsti`` reaches `reset_after` the count is reset to 0. The rule fires while
    ``iasti ≥ count``.

    Parameters
    ----------
    threshold : float
        Bound on ``h·ρ̂`` (DOPRI5: 3.25, just below its boundary 3.3066).
    count : int
        Positive tests that flag stiffness (HNW: 15).
    reset_after : int
        Negative tests in a row that reset the count (HNW: 6).
    check_every : int
        Test every `check_every`-th step while the count is 0 (HNW's ``NSTIFF``,
        default 1000 in dopri5.f because there the test costs work; here it is free,
        so 1).
    """

    threshold: float = DOPRI5_THRESHOLD
    count: int = HNW_COUNT
    reset_after: int = HNW_RESET_AFTER
    check_every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"`threshold` must be a number, got {type(self.threshold).__name__}.")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"`threshold` must be positive and finite, got {self.threshold}.")
        for name in ("count", "reset_after", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")

    def apply(self, h_rho: np.ndarray | Sequence[Sequence[float]]) -> StiffnessFlags:
        """Run the counter over ``h_rho`` (``[N, batch]``, steps in order) per sample.

        NaN entries count as negative tests.
        """
        values = np.asarray(h_rho, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"`h_rho` must have shape [N, batch], got {values.shape}.")
        N, B = values.shape
        iasti = np.zeros((N, B), dtype=np.int64)
        nonsti = np.zeros((N, B), dtype=np.int64)
        ia = np.zeros(B, dtype=np.int64)
        ns = np.zeros(B, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            positive = values > self.threshold
        for n in range(N):
            tested = np.full(B, (n + 1) % self.check_every == 0) | (ia > 0)
            pos, neg = tested & positive[n], tested & ~positive[n]
            ia = np.where(pos, ia + 1, ia)
            ns = np.where(pos, 0, np.where(neg, ns + 1, ns))
            ia = np.where(neg & (ns == self.reset_after), 0, ia)
            iasti[n], nonsti[n] = ia, ns
        stiff = iasti >= self.count
        fired = stiff.any(axis=0)
        onset = np.where(fired, stiff.argmax(axis=0), -1)
        return StiffnessFlags(iasti, nonsti, stiff, onset)


# --------------------------------------------------------------------- the methods
@dataclass(frozen=True)
class _MethodSpec:
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


def _dopri8_tableau() -> ButcherTableau:
    """Return the coefficients of torchdiffeq's "dopri8" (read from torchdiffeq itself)."""
    from torchdiffeq._impl.dopri8 import Dopri8Solver

    tab = Dopri8Solver.tableau  # alpha = c[1:], beta = rows of A, c_sol = b, c_error = b − b̂
    return ButcherTableau(
        "torchdiffeq_dopri8",
        A=[[], *(row.tolist() for row in tab.beta)],
        b=tab.c_sol.tolist(),
        b_hat=(tab.c_sol - tab.c_error).tolist(),
        c=[0.0, *tab.alpha.tolist()],
        order=8,
        embedded_order=7,
        fsal=True,
        # Published as ~18-digit rationals, used in float64: consistent to ~1e-15.
        tol="1e-14",
        citation="Prince & Dormand (1981) RK8(7)13M, as in torchdiffeq's 'dopri8'",
    )


@functools.lru_cache(maxsize=None)
def _method_spec(method: str) -> _MethodSpec:
    if method == "dopri5":
        # torchdiffeq's dopri5 uses Shampine's embedded weights; the main weights are DOPRI5's.
        tab, threshold = get_tableau("dopri5_shampine"), DOPRI5_THRESHOLD
    else:
        tab, threshold = _dopri8_tableau(), DOPRI8_THRESHOLD
    pair = stage_pair(tab)
    assert pair is not None and pair[1] == tab.num_stages - 1 and tab.fsal
    return _MethodSpec(method, tab, pair, real_stability_interval(tab), threshold)


def _check_method(method: Any) -> _MethodSpec:
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string, got {type(method).__name__}.")
    if method in _NO_PAIR:
        raise ValueError(
            f"`method` {method!r} is not supported: {_NO_PAIR[method]}, so it has no two "
            "evaluated stages at the same abscissa and Hairer's estimate would need an extra "
            f"evaluation (stiffkit.estimators.embedded_stiffness). Supported: {', '.join(SUPPORTED_METHODS)}."
        )
    if method not in SUPPORTED_METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(map(repr, SUPPORTED_METHODS))} (torchdiffeq's "
            f"adaptive solvers with a same-abscissa stage pair), got {method!r}; fixed-grid "
            "solvers and 'scipy_solver' do not report their steps."
        )
    return _method_spec(method)


# --------------------------------------------------------------------- the monitor
class _Eval(NamedTuple):
    """One evaluation ``k = f(t, g)``: detached tensors, and a weak reference to the argument
    (torchdiffeq hands that same object to the next callback; a strong one would keep the
    solve's autograd graph alive after the solve)."""

    t: Tensor
    g: Tensor
    k: Tensor
    y: weakref.ref


class _Record:
    """The accepted steps of one solve (a plain object: cheap attribute updates)."""

    def __init__(self) -> None:
        self.nfe = 0
        self.num_rejected = 0
        self.pending_rejects = 0
        self.direction = 0  # +1 / −1 once known
        self.y0: weakref.ref | None = None  # start of the last attempted step
        self.k1: Tensor | None = None  # its stage 1
        self.end: _Eval | None = None  # x_{n+1}, f(x_{n+1}) of the last accepted step
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


class _Tracker:
    """Follow torchdiffeq's evaluations and step callbacks; a plain object for speed."""

    def __init__(self) -> None:
        self.record: _Record | None = None
        self.in_step = False
        self.attempt: list[_Eval] = []  # evaluations of the current attempt (trimmed)
        self.attempt_evals = 0
        # Evaluations outside any step since the last step: their count, and the last two
        # with their 1-based position (a solve starts with f(t0, y0), then maybe a probe).
        self.outside_evals = 0
        self.outside: list[tuple[int, _Eval]] = []

    def match_outside(self, y0: Tensor) -> tuple[int, _Eval] | None:
        """Return the latest evaluation outside a step at the state `y0`, or None."""
        for pos, ev in reversed(self.outside):
            if ev.y() is y0:
                return pos, ev
        for pos, ev in reversed(self.outside):  # in case a wrapper copied the state
            if ev.g.shape == y0.shape and torch.equal(ev.g, y0):
                return pos, ev
        return None


class _Unbatched:
    """Present a drift on one unbatched state as a drift on a batch of such states."""

    def __init__(self, f: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.f = f

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.stack([self.f(t, xi) for xi in x])


class StiffnessMonitor(torch.nn.Module):
    """Wrap a drift so that ``torchdiffeq.odeint`` records Hairer's stiffness estimate.

    Pass the monitor to ``torchdiffeq.odeint`` in place of `f`, with the same `method`.
    It returns ``f``'s outputs untouched (the solution is bitwise unchanged) and adds no
    evaluation. A monitor describes the most recent solve: a solve that does not continue
    the recorded one replaces it. `f` is registered as a submodule when it is an
    ``nn.Module`` (so ``odeint_adjoint`` finds its parameters), and its own torchdiffeq
    callbacks, if any, are still called.

    Parameters
    ----------
    f : callable
        Drift ``f(t, x) -> dx/dt`` (torchdiffeq's order).
    method : {"dopri5", "dopri8"}
        The method given to ``odeint`` (checked on every step: another method raises).
    rule : StiffnessRule, optional
        The stiffness flag; default DOPRI5's (threshold 3.25, 15 steps, reset after 6),
        with threshold :data:`DOPRI8_THRESHOLD` for "dopri8".
    keep : {"pairs", "scalars", "stages"}
        What to keep per accepted step besides ``t, h, ρ̂``: "pairs" (default) the new
        state, its drift and the paired stage, enough for :meth:`trajectory`;
        "scalars" nothing (no :meth:`trajectory`; memory O(steps × batch)); "stages"
        every stage argument and value as well (``Trajectory.stage_g/stage_k``).
    batched : bool
        The state is ``[batch, *dims]`` (default). False: the whole state is one sample,
        reported as a batch of 1.
    eps : float
        Zero-denominator guard of ρ̂ (:data:`stiffkit.estimators.PAIR_EPS`).

    Examples
    --------
    >>> mon = StiffnessMonitor(f)                                   # doctest: +SKIP
    >>> ys = torchdiffeq.odeint(mon, x0, t, rtol=1e-6, atol=1e-8)   # doctest: +SKIP
    >>> mon.frame(), mon.trajectory(), mon.stiff_onset              # doctest: +SKIP
    """

    def __init__(
        self,
        f: Callable[[Tensor, Tensor], Tensor],
        *,
        method: str = "dopri5",
        rule: StiffnessRule | None = None,
        keep: str = "pairs",
        batched: bool = True,
        eps: float = PAIR_EPS,
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"`f` must be callable as f(t, x), got {type(f).__name__}.")
        spec = _check_method(method)
        if rule is None:
            rule = StiffnessRule(threshold=spec.threshold)
        elif not isinstance(rule, StiffnessRule):
            raise TypeError(f"`rule` must be a StiffnessRule, got {type(rule).__name__}.")
        if keep not in _KEEP:
            raise ValueError(f"`keep` must be one of {', '.join(map(repr, _KEEP))}, got {keep!r}.")
        if not isinstance(batched, bool):
            raise TypeError(f"`batched` must be a bool, got {type(batched).__name__}.")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 <= eps < math.inf):
            raise ValueError(f"`eps` must be a non-negative finite number, got {eps!r}.")
        self.f = f  # an nn.Module becomes a submodule
        self.method, self.rule, self.keep, self.batched, self.eps = method, rule, keep, batched, eps
        self._spec = spec
        i, j = spec.pair
        self._keep_last = j - i + 1  # evaluations of an attempt the pair needs
        self._track = _Tracker()

    def reset(self) -> None:
        """Forget the recorded solve."""
        self._track = _Tracker()

    @property
    def _record(self) -> _Record | None:
        return self._track.record

    @property
    def nfe(self) -> int:
        """Evaluations of `f` in the recorded solve (initial-step probe included)."""
        return 0 if self._record is None else self._record.nfe

    @property
    def num_steps(self) -> int:
        """Accepted steps of the recorded solve."""
        return 0 if self._record is None else len(self._record.t)

    @property
    def num_rejected(self) -> int:
        """Rejected steps of the recorded solve."""
        return 0 if self._record is None else self._record.num_rejected

    def _flat(self, x: Tensor) -> Tensor:
        return x if self.batched else x.reshape(1, -1)

    # ------------------------------------------------------------------ torchdiffeq
    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """Evaluate ``f(t, y)``, record it, and return ``f``'s output unchanged."""
        if not isinstance(y, Tensor):
            raise TypeError(
                "The state must be a tensor (tuple states are not supported), "
                f"got {type(y).__name__}."
            )
        if self.batched and y.ndim == 0:
            raise ValueError(
                "The state `y0` must be [batch, *dims]; pass `batched=False` for an "
                "unbatched state."
            )
        k = self.f(t, y)
        if not isinstance(k, Tensor) or k.shape != y.shape:
            got = tuple(k.shape) if isinstance(k, Tensor) else type(k).__name__
            raise ValueError(
                f"`f` must return a tensor of the state's shape {tuple(y.shape)}, got {got}."
            )
        # Detached: the record must not keep autograd graphs alive.
        ev = _Eval(t.detach(), y.detach(), k.detach(), weakref.ref(y))
        track = self._track
        if track.in_step:
            track.attempt_evals += 1
            track.attempt.append(ev)
            if self.keep != "stages" and len(track.attempt) > self._keep_last:
                del track.attempt[0]
        else:
            track.outside_evals += 1
            track.outside = [*track.outside[-1:], (track.outside_evals, ev)]
        return k

    def _chain(self, name: str, *args: Any) -> None:
        callback = getattr(self.f, name, None)
        if callback is not None:
            callback(*args)

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq hook: a step from ``(t0, y0)`` is about to be attempted."""
        self._chain("callback_step", t0, y0, dt)
        track, rec = self._track, self._track.record
        # The steps of one solve follow each other with no evaluation in between, except
        # f at the new state after a jump_t; a new solve starts with f(t0, y0).
        jump = rec is not None and rec.end is not None and y0 is rec.end.y()
        new_solve = rec is None or (track.outside_evals > 0 and not jump)
        match = track.match_outside(y0) if track.outside_evals else None
        if track.outside_evals == 0 and (rec is None or track.in_step):
            # Fixed-grid solvers announce steps but evaluate nothing first and never
            # accept or reject.
            raise ValueError(_NOT_ADAPTIVE)
        if new_solve:
            if match is None:
                raise RuntimeError(
                    "StiffnessMonitor could not find f(t0, y0) of the solve's first step: "
                    "pass the monitor itself to torchdiffeq.odeint as `func`."
                )
            rec = track.record = _Record()
            rec.nfe = track.outside_evals - match[0] + 1  # f(t0, y0) and the probe after it
            rec.k1 = match[1].k
        else:
            rec.nfe += track.outside_evals
            if y0 is not rec.y0():  # the previous attempt was accepted: FSAL, or f after jump_t
                rec.k1 = match[1].k if match is not None else rec.end.k
        rec.y0 = weakref.ref(y0)
        track.outside_evals, track.outside = 0, []
        track.in_step, track.attempt, track.attempt_evals = True, [], 0

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq hook: the attempted step was rejected."""
        self._chain("callback_reject_step", t0, y0, dt)
        self._finish_attempt()
        self._record.num_rejected += 1
        self._record.pending_rejects += 1

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq hook: the attempted step was accepted; record it."""
        self._chain("callback_accept_step", t0, y0, dt)
        stages = self._finish_attempt()
        rec = self._record
        s = self._spec.tableau.num_stages
        i, j = self._spec.pair
        # `stages` holds the last evaluations of the attempt, i.e. stages … s − 1 (0-based).
        pi, pj = stages[i - s], stages[j - s]
        flat = self._flat
        rho = _ratio(flat(pj.g), flat(pj.k), flat(pi.g), flat(pi.k), self.eps)
        if rec.direction == 0:
            # Callbacks get the user's t0 but torchdiffeq's positive dt; the time of the last
            # stage (t0 ± dt) tells whether time runs backwards.
            rec.direction = -1 if float(pj.t) < float(t0) else 1
        rec.t.append(t0.detach())
        rec.h.append(dt.detach())  # after any step_t/jump_t clipping, unlike callback_step's dt
        rec.rho.append(rho)
        rec.rejected.append(rec.pending_rejects)
        rec.pending_rejects = 0
        if self.keep != "scalars":
            if not rec.states:
                rec.states.append(y0.detach())
            rec.states.append(pj.g)
            rec.drifts.append(rec.k1)
            rec.pair_g.append(pi.g)
            rec.pair_k.append(pi.k)
        if self.keep == "stages":
            rec.stage_g.append(torch.stack([y0.detach(), *(ev.g for ev in stages)]))
            rec.stage_k.append(torch.stack([rec.k1, *(ev.k for ev in stages)]))
        rec.end = pj

    def _finish_attempt(self) -> list[_Eval]:
        track = self._track
        if not track.in_step or track.record is None:
            raise RuntimeError("torchdiffeq reported the end of a step that never started.")
        track.in_step = False
        expected = self._spec.stage_evals
        if track.attempt_evals != expected:
            raise ValueError(
                f"StiffnessMonitor was built for `method`={self.method!r} ({expected} evaluations "
                f"per step) but the solver made {track.attempt_evals}: pass the same `method` to "
                "the monitor and to torchdiffeq.odeint."
            )
        track.record.nfe += track.attempt_evals
        stages, track.attempt = track.attempt, []
        return stages

    # ------------------------------------------------------------------ results
    def _require_steps(self, what: str) -> _Record:
        rec = self._record
        if rec is None or not rec.t:
            hint = ""
            if self._track.outside_evals:
                hint = f" `f` was evaluated but no step was reported. {_NOT_ADAPTIVE}"
            raise ValueError(
                f"`{what}` needs a recorded solve: pass the monitor to torchdiffeq.odeint "
                f"first.{hint}"
            )
        return rec

    def _arrays(self, rec: _Record) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``t [N], h [N], t_next [N], rho [N, B]`` as float64 numpy arrays."""
        t = torch.stack(rec.t).double().cpu().numpy()
        h = torch.stack(rec.h).double().cpu().numpy()
        rho = torch.stack(rec.rho).double().cpu().numpy()
        return t, h, t + rec.direction * h, rho

    @property
    def tableau(self) -> ButcherTableau:
        """The coefficients torchdiffeq uses for the method, as a stiffkit tableau."""
        return self._spec.tableau

    @property
    def stability_boundary(self) -> float:
        """Real stability boundary of the method (denominator of the indicator)."""
        return self._spec.boundary

    @property
    def stiff_onset(self) -> Tensor:
        """Start time of the step at which the rule first fired, per sample (NaN: never).

        A float64 tensor ``[batch]`` (``[1]`` for an unbatched state): the ``x`` of
        DOPRI5's message "the problem seems to become stiff at x".
        """
        rec = self._require_steps("stiff_onset")
        t, h, _, rho = self._arrays(rec)
        onset = self.rule.apply(h[:, None] * rho).onset_step
        times = np.where(onset >= 0, t[onset.clip(min=0)], np.nan)
        return torch.as_tensor(times, dtype=torch.float64)

    def frame(self) -> pd.DataFrame:
        """Return one row per accepted step and sample, in :func:`stiffkit.analyze`'s columns.

        ``rho_hat`` is Hairer's estimate at ``t_next``; ``stiffness_indicator`` is ``h·ρ̂``
        over the method's real stability boundary; ``stiff`` is the rule firing
        (``iasti ≥ count``); the reference columns are NaN. Extra columns: ``t_next``,
        ``iasti`` and ``nonsti`` (the rule's counters after the step) and ``rejected``
        (rejected attempts just before the step). ``df.attrs`` records the method,
        tableau, boundary, rule, ``nfe`` and step counts.
        """
        rec = self._require_steps("frame")
        t, h, t_next, rho = self._arrays(rec)
        N, B = rho.shape
        h_rho = h[:, None] * rho
        flags = self.rule.apply(h_rho)
        df = pd.DataFrame({
            "step": np.repeat(np.arange(N), B),
            "sample": np.tile(np.arange(B), N),
            "t": np.repeat(t, B),
            "h": np.repeat(h, B),
            "rho_hat": rho.ravel(),
            "h_rho": h_rho.ravel(),
            "stiffness_indicator": h_rho.ravel() / self._spec.boundary,
            "stiff": flags.stiff.ravel(),
            "t_next": np.repeat(t_next, B),
            "iasti": flags.iasti.ravel(),
            "nonsti": flags.nonsti.ravel(),
            "rejected": np.repeat(np.asarray(rec.rejected), B),
        })
        out = conform(df)
        out.attrs.update(
            method=self.method, tableau=self._spec.tableau.name, reference=None,
            stability_boundary=self._spec.boundary, rule=self.rule, nfe=rec.nfe,
            num_steps=N, num_rejected=rec.num_rejected,
        )
        return out

    def trajectory(self) -> Trajectory:
        """Return the accepted steps as a :class:`stiffkit.Trajectory`.

        States at the step boundaries (the last is torchdiffeq's last internal step, which
        may pass the last output time), the drift at each step's start, the paired stage
        (DOPRI5: stage 6) as ``pair_states/pair_drifts``, the last drift as
        ``final_drift``, and with ``keep="stages"`` every stage. Times are float64.
        :func:`stiffkit.analyze` on it reproduces the monitor's ``rho_hat`` (after a
        ``jump_t``, the next drift is the one re-evaluated there).
        """
        rec = self._require_steps("trajectory")
        if self.keep == "scalars":
            raise ValueError(
                "`trajectory` needs the states: build the monitor with keep='pairs' or 'stages'."
            )
        t, _, t_next, _ = self._arrays(rec)
        times = torch.as_tensor(np.append(t, t_next[-1]), dtype=torch.float64)

        def stack(items: list[Tensor], at: int = 1) -> Tensor | None:
            if not items:
                return None
            out = torch.stack(items)
            return out if self.batched else out.unsqueeze(at)  # add the batch of one

        return Trajectory(
            times=times,
            states=stack(rec.states),
            drifts=stack(rec.drifts),
            final_drift=rec.end.k if self.batched else rec.end.k.unsqueeze(0),
            pair_states=stack(rec.pair_g),
            pair_drifts=stack(rec.pair_k),
            stage_g=stack(rec.stage_g, at=2),  # [N, s, batch, *dims]
            stage_k=stack(rec.stage_k, at=2),
            f=self.f if self.batched else _Unbatched(self.f),
            tableau=self._spec.tableau.name,
            nfe=rec.nfe,
        )

    def extra_repr(self) -> str:
        return f"method={self.method!r}, keep={self.keep!r}, steps={self.num_steps}"


def _ratio(x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor, eps: float) -> Tensor:
    """``‖f_a − f_b‖ / (‖x_a − x_b‖ + eps)`` exactly as :func:`stiffkit.pair_stiffness`
    computes it, without its input checks (which would sync the device every step)."""
    num = flat_norm(f_a - f_b)
    den = flat_norm(x_a - x_b) + eps
    return num / (den.clamp_min(1e-300) if eps == 0 else den)


def odeint_monitored(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: dict | None = None,
    rule: StiffnessRule | None = None,
    keep: str = "pairs",
    batched: bool = True,
) -> tuple[Tensor, StiffnessMonitor]:
    """Solve with ``torchdiffeq.odeint`` under a :class:`StiffnessMonitor`.

    Returns ``(ys, monitor)``: ``ys`` is exactly what ``torchdiffeq.odeint(f, y0, t,
    method=method, rtol=rtol, atol=atol, options=options)`` returns (same defaults).
    """
    import torchdiffeq

    monitor = StiffnessMonitor(f, method=method, rule=rule, keep=keep, batched=batched)
    ys = torchdiffeq.odeint(monitor, y0, t, method=method, rtol=rtol, atol=atol, options=options)
    return ys, monitor
