"""Euler's method down the σ grid: ``x_next = x + (σ_next − σ) f``.

One evaluation per step and no embedded pair, so no ERK-Guid. It is also the final step of
every sampler whose grid ends at σ = 0 (the drift is singular there), which lands exactly
on ``D(x; σ)``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from stiffkit.diffusion.samplers.drift import Drift
from stiffkit.diffusion.samplers.solvers import Solver, StepOut, tableau_boundaries

__all__ = ["euler_step", "EULER"]


def euler_step(drift: Drift, x: Tensor, f: Tensor, sigma: Tensor, sigma_next: Tensor,
               carry: Any = None) -> StepOut:
    """One Euler step (no evaluation beyond the driver's ``f``), ``[batch, *dims]``."""
    return StepOut(x + (sigma_next - sigma) * f)


#: Its tableau is "euler"; real stability boundary 2.
EULER = Solver("euler", euler_step, tableau_boundaries("euler"), tableau="euler")
