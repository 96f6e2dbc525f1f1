"""DPM-Solver-2 in k-diffusion's form: a midpoint step at ``σ_mid = σ_next^r σ^{1−r}``.

``x_mid = x + (σ_mid − σ) f``, then ``x_next = x + (σ_next − σ)(f_mid/(2r) + (1 − 1/(2r)) f)``
(``r = 1/2``: the geometric midpoint ``√(σ σ_next)``). ERK-Guid's pair lives inside the step:
``(x, f)`` and ``(x_mid, f_mid)``, at two different σ (so ρ̂ also sees ∂f/∂σ); it applies
from the first step, at zero extra evaluations.

Stability: per step this is a 2-stage explicit Runge–Kutta method in σ with
``c₂ = θ_n = (σ_mid − σ_n)/(σ_{n+1} − σ_n)`` and weights ``(1 − 1/(2r), 1/(2r))``, so on
``dx/dσ = λx`` one step multiplies by ``R(z) = 1 + z + (θ_n/(2r)) z²`` with
``z = (σ_{n+1} − σ_n) λ``. Since ``θ_n ≥ r`` (concavity of ``q ↦ q^r``), the coefficient
``a = θ_n/(2r) ≥ 1/2 > 1/8`` keeps ``R ≥ −1``, and ``|R| ≤ 1`` exactly on
``[−1/a, 0]``: the boundary is ``2r/θ_n`` (``1/θ_n`` at ``r = 1/2``, between 1 and 2).
The tableau changes with the step, so the trajectory carries no tableau, only these
boundaries.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from stiffkit._utils import check_real
from stiffkit.diffusion.erk import ErkPair
from stiffkit.diffusion.samplers.drift import Drift
from stiffkit.diffusion.samplers.solvers import Solver, StepOut

__all__ = ["DPM2_R", "check_r", "check_dpm2_options", "midpoint_sigma", "dpm2_step",
           "dpm2_boundaries", "DPM2"]

#: DPM-Solver-2's intermediate point ``σ_mid = σ_{i+1}^r σ_i^{1−r}``.
DPM2_R = 0.5


def check_r(r: float) -> float:
    """Return `r` as a float, raising ``ValueError`` unless it is a real number, ``0 < r ≤ 1``."""
    check_real(r, "r")
    if not 0 < r <= 1:
        raise ValueError(f"`r` must lie in (0, 1], got {r}.")
    return float(r)


def check_dpm2_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return DPM-Solver-2's options ``{"r": ...}`` checked (:func:`check_r`)."""
    return {"r": check_r(options["r"])}


def midpoint_sigma(sigma: Tensor, sigma_next: Tensor, r: float = DPM2_R) -> Tensor:
    """Return ``σ_mid = σ^{1−r} σ_next^r``, evaluated as k-diffusion does.

    ``exp(lerp(log σ, log σ_next, r))``: the same number as the power form up to rounding,
    and bit for bit k-diffusion's ``sample_dpm_2`` midpoint, so that
    :func:`stiffkit.integrations.k_diffusion.sample_erk_dpm_2` with ``w_stiff = 0`` is
    that sampler exactly.
    """
    return sigma.log().lerp(sigma_next.log(), r).exp()


def dpm2_step(drift: Drift, x: Tensor, f: Tensor, sigma: Tensor, sigma_next: Tensor,
              carry: Any = None, *, r: float = DPM2_R) -> StepOut:
    """One DPM-Solver-2 step (one evaluation, at the midpoint), ``[batch, *dims]``.

    Returns
    -------
    StepOut
        ``x_next`` and the pair ``(x − x_mid, f − f_mid)`` with step size ``σ − σ_next``.
    """
    s_mid = midpoint_sigma(sigma, sigma_next, r)
    x_mid = x + (s_mid - sigma) * f
    f_mid = drift(s_mid, x_mid)
    x_next = x + (sigma_next - sigma) * ((1 / (2 * r)) * f_mid + (1 - 1 / (2 * r)) * f)
    return StepOut(x_next, ErkPair(x - x_mid, f - f_mid, sigma - sigma_next))


def dpm2_boundaries(sigmas: Tensor, *, r: float = DPM2_R) -> Tensor:
    """Return ``2r/θ_n`` for each step of the positive float64 grid `sigmas` ``[M + 1]``.

    Returns
    -------
    Tensor, [M], float64
    """
    s, s_next = sigmas[:-1], sigmas[1:]
    theta = (midpoint_sigma(s, s_next, r) - s) / (s_next - s)
    return 2 * r / theta


DPM2 = Solver("dpm2", dpm2_step, dpm2_boundaries, correction_sign=-1.0,
              options={"r": DPM2_R}, check_options=check_dpm2_options)
