"""Step-size control from an embedded error estimate: a small pure piece of the adaptive solve.

Given the error norm ``err`` of an attempted step (accept when ``err <= 1``), the next step
is ``h · factor`` with

* I control: ``factor = SAFETY · err^(−1/q)``,
* PI control (Gustafsson; Hairer's DOPRI5 with β ≠ 0):
  ``factor = SAFETY · err^(−α/q) · err_prev^(β/q)`` with ``α = 0.85``, ``β = 0.2`` (for DOPRI5,
  q = 5: Hairer's β = 0.04 and exponent 0.2 − 0.75β),

where ``q = min(order, embedded_order) + 1``, clamped to ``[MIN_FACTOR, MAX_FACTOR]``, with no
growth right after a rejection; a rejected step shrinks by the I-control factor (at most 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from stiffkit._utils import check_int

__all__ = ["StepController", "ControllerDecision", "CONTROLLERS"]

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0
PI_ALPHA = 0.85
PI_BETA = 0.2
#: Floor of the error norm in the exponentials (a zero error would give an infinite factor).
ERR_FLOOR = 1e-10
#: Initial and minimum remembered error of the PI controller.
ERR_PREV_FLOOR = 1e-4
#: Controllers :class:`StepController` knows.
CONTROLLERS = ("pi", "i")


class ControllerDecision(NamedTuple):
    """What the controller says about one attempted step.

    Attributes
    ----------
    accept : bool
        Whether the step is accepted (``err <= 1``).
    factor : float
        Multiply the step size by this for the next attempt.
    err_prev : float
        The remembered error to pass to the next call.
    """

    accept: bool
    factor: float
    err_prev: float


@dataclass(frozen=True)
class StepController:
    """A step-size controller for a method whose error estimate has order ``q − 1``.

    Parameters
    ----------
    q : int
        ``min(order, embedded_order) + 1`` of the embedded pair.
    kind : {"pi", "i"}
        PI (default of :func:`~stiffkit.integrate.solve_adaptive`) or I control.
    """

    q: int
    kind: str = "pi"

    def __post_init__(self) -> None:
        if self.kind not in CONTROLLERS:
            raise ValueError(f"`controller` must be 'pi' or 'i', got {self.kind!r}.")
        check_int(self.q, "q")

    def decide(self, err: float, err_prev: float, last_rejected: bool) -> ControllerDecision:
        """Accept or reject a step of error norm `err` and size the next one.

        Parameters
        ----------
        err : float
            Error norm of the attempted step (NaN counts as infinite).
        err_prev : float
            The remembered error (:data:`ERR_PREV_FLOOR` before the first step).
        last_rejected : bool
            Whether the previous attempt was rejected (then the step may not grow).

        Returns
        -------
        ControllerDecision
        """
        if not math.isfinite(err):
            err = math.inf
        q = self.q
        if err <= 1.0:
            if self.kind == "pi":
                factor = SAFETY * max(err, ERR_FLOOR) ** (-PI_ALPHA / q) * err_prev ** (PI_BETA / q)
            else:
                factor = SAFETY * max(err, ERR_FLOOR) ** (-1.0 / q)
            factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
            if last_rejected:
                factor = min(1.0, factor)
            return ControllerDecision(True, factor, max(err, ERR_PREV_FLOOR))
        factor = SAFETY * err ** (-1.0 / q) if math.isfinite(err) else MIN_FACTOR
        return ControllerDecision(False, min(1.0, max(MIN_FACTOR, factor)), err_prev)
