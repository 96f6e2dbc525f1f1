"""EDM's Heun sampler (Karras et al. 2022, Alg. 1 without churn), ERK-Guid's reference.

Each step is the trapezoidal RK2 ("heun_euler" in the tableau catalogue, stability
boundary 2): an Euler predictor ``x_E = x + (σ_next − σ) f`` and the average of the two
drifts. ERK-Guid's pair is the *previous* step's Euler point ``(x_E, f(x_E; σ_i))`` with
``(x_i, f_i)``, both at σ_i (the EDM2 reference), so the first step has none; the Euler
point is also recorded as the trajectory's same-time pair at σ_{i+1}. Zero extra
evaluations.
"""

from __future__ import annotations

from torch import Tensor

from stiffkit.diffusion.erk import ErkPair
from stiffkit.diffusion.samplers.drift import Drift
from stiffkit.diffusion.samplers.solvers import Solver, StepOut, tableau_boundaries

__all__ = ["heun_step", "HEUN"]


def heun_step(drift: Drift, x: Tensor, f: Tensor, sigma: Tensor, sigma_next: Tensor,
              carry: tuple[Tensor, Tensor] | None = None) -> StepOut:
    """One Heun step (one evaluation, at the Euler point); `carry` is the last Euler point.

    Returns
    -------
    StepOut
        ``x_next [batch, *dims]``; the pair ``(x − x_E', f − f_E')`` with the previous Euler
        point ``(x_E', f_E')`` (None on the first step); ``point = carry = (x_E, f_E)``.
    """
    x_e = x + (sigma_next - sigma) * f
    f_e = drift(sigma_next, x_e)
    x_next = x + (sigma_next - sigma) * (0.5 * f + 0.5 * f_e)
    pair = None if carry is None else ErkPair(x - carry[0], f - carry[1], sigma - sigma_next)
    return StepOut(x_next, pair, point=(x_e, f_e), carry=(x_e, f_e))


HEUN = Solver("heun", heun_step, tableau_boundaries("heun_euler"), tableau="heun_euler",
              correction_sign=-1.0, records_pair=True)
