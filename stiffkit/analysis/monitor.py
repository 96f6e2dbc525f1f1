"""A stiffness monitor for ``torchdiffeq.odeint``: Hairer's estimate at no extra cost.

Wrap the drift, pass the wrapper to ``torchdiffeq.odeint``, read a report afterwards::

    mon = stiffkit.StiffnessMonitor(f)                      # method="dopri5"
    ys = torchdiffeq.odeint(mon, x0, t, method="dopri5", rtol=1e-6, atol=1e-9)
    df = mon.frame()          # one row per accepted step and sample, like stiffkit.analyze
    traj = mon.trajectory()   # the accepted steps as a stiffkit.Trajectory
    mon.stiff_onset           # per sample: when DOPRI5's rule first fired (NaN: never)

How it works. The monitor records torchdiffeq's stage evaluations between its step
callbacks (:mod:`stiffkit.analysis._torchdiffeq`), so after an accepted step it holds two
stages at the same abscissa ``c = 1`` — DOPRI5's stage 6 and stage 7 (the new solution),
the 13th and 14th stage of torchdiffeq's 8th-order method — and forms Hairer's estimate
[HNW II.10, p. 21]

    ρ̂ = ‖k_j − k_i‖ / (‖g_j − g_i‖ + eps)   per sample (norms over all non-batch dims),

with ``g`` the stage arguments and ``k = f(g)``. The returned drift is ``f``'s own output
tensor, so the solution is bitwise that of plain ``odeint`` and no evaluation is added.

Stiffness flag. After every accepted step the rule of DOPRI5 [HNW, ``dopri5.f``] tests
``h·ρ̂ > 3.25`` and flags stiffness after 15 positive tests
(:class:`~stiffkit.integrate.rule.StiffnessRule`). The rule runs **per sample**: torchdiffeq
takes one step for the whole batch, but ρ̂ is a property of each sample, so each sample has
its own counters and onset time. Because the shared step is limited by the stiffest sample,
a sample whose own ρ̂ is small shows a small ``h·ρ̂`` even while the batch is
stability-limited; the onset of the batch is the earliest of the per-sample onsets.

Supported methods: ``"dopri5"`` (Dormand–Prince with Shampine's embedded weights, i.e.
stiffkit's ``"dopri5_shampine"``) and ``"dopri8"`` (Prince–Dormand RK8(7)13M, stiffkit's
``"dopri8"`` — *not* DOP853: its real stability boundary is 5.17, not 6.39, so its default
threshold is :data:`~stiffkit.integrate.rule.DOPRI8_THRESHOLD`, the fraction of the boundary
that DOP853's 6.1 is of 6.39). ``"bosh3"``, ``"fehlberg2"`` and ``"adaptive_heun"`` have no
two evaluated stages at the same abscissa (Bogacki–Shampine's only ``c = 1`` stage is the
new solution; in torchdiffeq's Fehlberg 1(2) and Heun–Euler the ``c = 1`` stage is the
embedded solution and ``f`` is never evaluated at the propagated one), so Hairer's estimate
would cost an extra evaluation (:func:`stiffkit.estimators.embedded_stiffness`); the monitor
refuses them, as it refuses fixed-grid solvers and ``scipy_solver``, which report no steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import check_output, check_real
from stiffkit.analysis._torchdiffeq import (
    NOT_ADAPTIVE,
    SUPPORTED_METHODS,
    Record,
    Tracker,
    check_method,
    check_odeint_inputs,
    checked_odeint,
)
from stiffkit.analysis.columns import conform
from stiffkit.integrate.rule import (
    DOPRI5_THRESHOLD,
    DOPRI8_THRESHOLD,
    StiffnessFlags,
    StiffnessRule,
)
from stiffkit.integrate.trajectory import Trajectory
from stiffkit.tableaux import ButcherTableau

__all__ = [
    "DOPRI5_THRESHOLD",
    "DOPRI8_THRESHOLD",
    "SUPPORTED_METHODS",
    "StiffnessFlags",
    "StiffnessMonitor",
    "StiffnessRule",
    "odeint_monitored",
]

_KEEP = ("scalars", "pairs", "stages")


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
        with threshold :data:`~stiffkit.integrate.rule.DOPRI8_THRESHOLD` for "dopri8".
    keep : {"pairs", "scalars", "stages"}
        What to keep per accepted step besides ``t, h, ρ̂``: "pairs" (default) the new
        state, its drift and the paired stage, enough for :meth:`trajectory`;
        "scalars" nothing (no :meth:`trajectory`; memory O(steps × batch)); "stages"
        every stage argument and value as well (``Trajectory.stage_g/stage_k``).
    batched : bool
        The state is ``[batch, *dims]`` (default). False: the whole state is one sample,
        reported as a batch of 1.
    eps : float or None
        Guard of ρ̂ as in :func:`stiffkit.estimators.pair_stiffness`: None (default) the
        scale-relative one (ρ̂ NaN, ``pair_resolved`` False, where the stages coincide to
        roundoff); a float the absolute ``‖Δk‖ / (‖Δg‖ + eps)``.

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
        eps: float | None = None,
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"`f` must be callable as f(t, x), got {type(f).__name__}.")
        spec = check_method(method)
        if rule is None:
            rule = StiffnessRule(threshold=spec.threshold)
        elif not isinstance(rule, StiffnessRule):
            raise TypeError(f"`rule` must be a StiffnessRule, got {type(rule).__name__}.")
        if keep not in _KEEP:
            raise ValueError(f"`keep` must be one of {', '.join(map(repr, _KEEP))}, got {keep!r}.")
        if not isinstance(batched, bool):
            raise TypeError(f"`batched` must be a bool, got {type(batched).__name__}.")
        if eps is not None:
            check_real(eps, "eps", lo=0)
        self.f = f  # an nn.Module becomes a submodule
        self.method, self.rule, self.keep, self.batched, self.eps = method, rule, keep, batched, eps
        self._spec = spec
        self._track = Tracker(spec)

    def reset(self) -> None:
        """Forget the recorded solve."""
        self._track = Tracker(self._spec)

    @property
    def _record(self) -> Record | None:
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
        k = check_output(self.f(t, y), y)
        self._track.observe(t, y, k, all_stages=self.keep == "stages")
        return k

    def _chain(self, name: str, *args: Any) -> None:
        callback = getattr(self.f, name, None)
        if callback is not None:
            callback(*args)

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq hook: a step from ``(t0, y0)`` is about to be attempted."""
        self._chain("callback_step", t0, y0, dt)
        self._track.step(y0)

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq hook: the attempted step was rejected."""
        self._chain("callback_reject_step", t0, y0, dt)
        self._track.reject(self.method)

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq hook: the attempted step was accepted; record it."""
        self._chain("callback_accept_step", t0, y0, dt)
        self._track.accept(t0, y0, dt, method=self.method, keep=self.keep, flat=self._flat,
                           eps=self.eps)

    # ------------------------------------------------------------------ results
    def _require_steps(self, what: str) -> Record:
        rec = self._record
        if rec is None or not rec.t:
            hint = ""
            if self._track.outside_evals:
                hint = f" `f` was evaluated but no step was reported. {NOT_ADAPTIVE}"
            raise ValueError(
                f"`{what}` needs a recorded solve: pass the monitor to torchdiffeq.odeint "
                f"first.{hint}"
            )
        return rec

    def _arrays(self, rec: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
            "pair_resolved": np.isfinite(rho.ravel()),
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
        ``tableau`` is the method's registered tableau (:attr:`tableau`), so
        :func:`stiffkit.analyze` on it reproduces the monitor's ``rho_hat`` and indicator
        (after a ``jump_t``, the next drift is the one re-evaluated there).
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
            tableau=self._spec.tableau,
            nfe=rec.nfe,
        )

    def extra_repr(self) -> str:
        return f"method={self.method!r}, keep={self.keep!r}, steps={self.num_steps}"


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

    Parameters
    ----------
    f : callable
        Drift ``f(t, x)``.
    y0 : Tensor, [batch, *dims] (any shape with ``batched=False``)
        Initial state.
    t : Tensor, [T]
        Output times.
    method, rtol, atol, options :
        Passed to ``torchdiffeq.odeint`` (`method` also to the monitor).
    rule, keep, batched :
        Passed to :class:`StiffnessMonitor`.

    Returns
    -------
    ys : Tensor, [T, *y0.shape]
        Exactly what ``torchdiffeq.odeint(f, y0, t, method=method, rtol=rtol, atol=atol,
        options=options)`` returns (same defaults).
    monitor : StiffnessMonitor
        The record of the solve.

    Raises
    ------
    TypeError, ValueError
        Naming the argument (``_torchdiffeq.check_odeint_inputs``, and the monitor's checks).
    RuntimeError
        If torchdiffeq's solve fails (step-size underflow: a NaN / Inf drift).
    """
    monitor = StiffnessMonitor(f, method=method, rule=rule, keep=keep, batched=batched)
    check_odeint_inputs(y0, t, rtol, atol, options, batched)
    ys = checked_odeint(monitor, y0, t, method=method, rtol=rtol, atol=atol, options=options)
    return ys, monitor

