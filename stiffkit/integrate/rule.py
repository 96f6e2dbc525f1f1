"""The stiffness rule of DOPRI5 / DOP853 [HNW, ``dopri5.f``], run per sample.

After every accepted step the rule tests ``h·ρ̂ > threshold``: a positive test increments
the count ``iasti`` (and zeroes ``nonsti``), a negative one increments ``nonsti``, and six
negative tests in a row reset ``iasti`` to 0; when ``iasti`` reaches 15 the problem "seems
to become stiff". :class:`StiffnessRule` holds the threshold and counts;
:meth:`~StiffnessRule.apply` returns the per-sample counters and flags as a
:class:`StiffnessFlags`.

The thresholds are fractions of the methods' real stability boundaries: DOPRI5's 3.25 of
its 3.3066, and for torchdiffeq's "dopri8" (Prince–Dormand RK8(7)13M, boundary 5.1666) the
fraction 6.1 / 6.3937 that DOP853 uses of its own boundary.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_int, check_real, flat_norm, secant_ratio
from stiffkit.tableaux import ButcherTableau, get_tableau, real_stability_interval

if TYPE_CHECKING:
    from stiffkit.integrate.rk import RKStep

__all__ = [
    "DOPRI5_THRESHOLD",
    "DOPRI8_THRESHOLD",
    "HNW_COUNT",
    "HNW_RESET_AFTER",
    "ON_STIFF",
    "StiffnessDetected",
    "StiffnessFlags",
    "StiffnessRule",
    "stiffness_threshold",
]

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
        check_real(self.threshold, "threshold", lo=0, lo_open=True)
        for name in ("count", "reset_after", "check_every"):
            check_int(getattr(self, name), name)

    def start(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the counters ``(iasti, nonsti)`` before the first step, ``[batch]`` each."""
        return np.zeros(batch, dtype=np.int64), np.zeros(batch, dtype=np.int64)

    def advance(self, counts: tuple[np.ndarray, np.ndarray], n: int,
                h_rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the counters after accepted step `n` (0-based) with ``h·ρ̂`` = `h_rho`.

        The online form of :meth:`apply` (an integrator calls it once per accepted step):
        `counts` is ``(iasti, nonsti)`` from :meth:`start` or the previous call, `h_rho`
        ``[batch]``; NaN entries are no test. The rule fires where ``iasti ≥ count``.
        """
        ia, ns = counts
        with np.errstate(invalid="ignore"):
            positive = h_rho > self.threshold
        tested = ~np.isnan(h_rho) & (np.full(ia.shape, (n + 1) % self.check_every == 0)
                                     | (ia > 0))
        pos, neg = tested & positive, tested & ~positive
        ia = np.where(pos, ia + 1, ia)
        ns = np.where(pos, 0, np.where(neg, ns + 1, ns))
        ia = np.where(neg & (ns == self.reset_after), 0, ia)
        return ia, ns

    def apply(self, h_rho: np.ndarray | Sequence[Sequence[float]]) -> StiffnessFlags:
        """Run the counter over `h_rho` per sample.

        Parameters
        ----------
        h_rho : array_like, [N, batch]
            ``h·ρ̂`` after each accepted step, steps in order. A NaN entry (a stage pair at
            roundoff level: no information) is no test at all — it neither counts towards
            stiffness nor resets the count.

        Returns
        -------
        StiffnessFlags
        """
        values = np.asarray(h_rho, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"`h_rho` must have shape [N, batch], got {values.shape}.")
        N, B = values.shape
        iasti = np.zeros((N, B), dtype=np.int64)
        nonsti = np.zeros((N, B), dtype=np.int64)
        counts = self.start(B)
        for n in range(N):
            counts = self.advance(counts, n, values[n])
            iasti[n], nonsti[n] = counts
        stiff = iasti >= self.count
        fired = stiff.any(axis=0)
        onset = np.where(fired, stiff.argmax(axis=0), -1)
        return StiffnessFlags(iasti, nonsti, stiff, onset)


#: What :func:`solve_adaptive` does when the stiffness rule fires.
ON_STIFF = ("warn", "raise", "ignore")
#: DOPRI5's threshold 3.25 as a fraction of its real stability boundary 3.3066; other
#: tableaux use this fraction of their own boundary.
_THRESHOLD_FRACTION = DOPRI5_THRESHOLD / 3.3066


class StiffnessDetected(RuntimeError):
    """:func:`solve_adaptive` (``on_stiff="raise"``) stopped: the problem has become stiff."""


def stiffness_threshold(tableau: ButcherTableau | str) -> float:
    """Return the default threshold on ``h·ρ̂`` of `tableau`'s stiffness rule.

    DOPRI5's 3.25 for the DOPRI5 tableaux [HNW, dopri5.f]; for any other tableau the same
    fraction (0.983) of its real stability boundary.
    """
    tab = get_tableau(tableau)
    if tab.name in ("dopri5", "dopri5_shampine"):
        return DOPRI5_THRESHOLD
    return _THRESHOLD_FRACTION * real_stability_interval(tab)


class _StiffnessWatch:
    """Hairer's test after every accepted step; says so (warn / raise) when the rule fires."""

    def __init__(self, tab: ButcherTableau, pair: int | None, rule: StiffnessRule | None,
                 on_stiff: str, batch: int) -> None:
        self.pair = pair
        self.rule = rule if rule is not None else StiffnessRule(stiffness_threshold(tab))
        self.on_stiff, self.name = on_stiff, tab.name
        self.counts = self.rule.start(batch)
        self.onset: float | None = None

    @property
    def active(self) -> bool:
        return self.pair is not None and self.on_stiff != "ignore"

    def after_step(self, n: int, t: float, h: float, step: RKStep, k_new: Tensor) -> None:
        """Update the counters with ``h·ρ̂`` of accepted step `n`, which ended at `t`."""
        g, k = step.g[self.pair], step.k[self.pair]
        scale = torch.maximum(flat_norm(g), flat_norm(step.x))
        rho = secant_ratio(k_new - k, step.x - g, None, scale=scale)
        h_rho = h * rho.detach().double().cpu().numpy()
        self.counts = self.rule.advance(self.counts, n, h_rho)
        fired = self.counts[0] >= self.rule.count
        if self.onset is None and bool(fired.any()):
            self.onset = t
            samples = np.flatnonzero(fired)
            message = (
                f"solve_adaptive: the problem seems to have become stiff at t = {t:.6g} "
                f"(h·ρ̂ > {self.rule.threshold:.4g} on {self.rule.count} accepted steps of "
                f"{self.name!r}, sample(s) {samples[:5].tolist()}): the step size is limited "
                "by stability, not accuracy — stiff: use an implicit method (e.g. scipy's "
                "solve_ivp with method='Radau', 'BDF' or 'LSODA')."
            )
            if self.on_stiff == "raise":
                raise StiffnessDetected(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
