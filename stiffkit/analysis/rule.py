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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from stiffkit._utils import check_int, check_real

__all__ = [
    "DOPRI5_THRESHOLD",
    "DOPRI8_THRESHOLD",
    "HNW_COUNT",
    "HNW_RESET_AFTER",
    "StiffnessFlags",
    "StiffnessRule",
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
        ia = np.zeros(B, dtype=np.int64)
        ns = np.zeros(B, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            positive = values > self.threshold
        known = ~np.isnan(values)
        for n in range(N):
            tested = known[n] & (np.full(B, (n + 1) % self.check_every == 0) | (ia > 0))
            pos, neg = tested & positive[n], tested & ~positive[n]
            ia = np.where(pos, ia + 1, ia)
            ns = np.where(pos, 0, np.where(neg, ns + 1, ns))
            ia = np.where(neg & (ns == self.reset_after), 0, ia)
            iasti[n], nonsti[n] = ia, ns
        stiff = iasti >= self.count
        fired = stiff.any(axis=0)
        onset = np.where(fired, stiff.argmax(axis=0), -1)
        return StiffnessFlags(iasti, nonsti, stiff, onset)
