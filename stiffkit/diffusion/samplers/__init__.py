"""Probability-flow ODE samplers with ERK-Guid: Heun (EDM), Euler, DPM-Solver-2 and DEIS.

The ODE is ``dx/dσ = f(x; σ) = (x − D(x; σ))/σ`` (:mod:`~.drift`) with σ running down a
grid; :func:`sample` is the one driver (:mod:`~.driver`) and each solver is a small step
function in the registry (:mod:`~.solvers`). ERK-Guid (:mod:`stiffkit.diffusion.erk`) uses
the embedded pair each solver already has, at **zero extra evaluations**:

* ``heun`` (:mod:`~.heun`) — the previous step's Euler point ``(x_E, f(x_E; σ_i))`` and
  ``(x_i, f_i)``, both at σ_i (the EDM2 reference); no correction on the first step (no pair
  yet) nor on the final Euler step;
* ``dpm2`` (:mod:`~.dpm2`) — inside the step, ``(x_i, f_i)`` and the midpoint
  ``(x_mid, f(x_mid; σ_mid))`` (two different σ, so ρ̂ also sees ∂f/∂σ); applied from the
  first step;
* ``deis`` (:mod:`~.deis`; option ``variant``: the drift's polynomial in σ, ``"rhoab"``,
  or in the VP time, ``"tab"``) — across steps, ``(x_i, f_i)`` and ``(x_{i−1}, f_{i−1})``
  with the previous step's size; the correction is subtracted, as for Heun, although the
  reference code *adds* it (``correction_sign=+1``): adding is measured to be far worse on
  the tree (``figures/deis_sign.md``);
* ``euler`` (:mod:`~.euler`) — no pair, no ERK-Guid.

Every trajectory carries its solver's real stability boundary per step
(``Trajectory.stability_boundaries``), so :func:`stiffkit.analyze` reports an honest
stiffness indicator for each of them. :func:`reference_sample` (:mod:`~.reference`) is the
converged solve that endpoint errors are measured against.

Adding a solver: write its step and boundary functions (the protocols are in
:mod:`~.solvers`) and :func:`register_solver` a :class:`Solver`, declaring its options with
their defaults (``options={"c": 0.5}``) and, optionally, their check (``check_options``);
:func:`sample` then takes its name and ``solver_options={"c": ...}``, with no change to the
driver. An option the chosen solver does not declare is a ``ValueError`` naming it.
"""

from stiffkit.diffusion.samplers.deis import DEIS, DEIS_MAX_ORDER, deis_coefficients
from stiffkit.diffusion.samplers.dpm2 import DPM2, DPM2_R
from stiffkit.diffusion.samplers.drift import Denoiser, pf_ode_drift, to_d
from stiffkit.diffusion.samplers.driver import sample, sample_final
from stiffkit.diffusion.samplers.euler import EULER
from stiffkit.diffusion.samplers.heun import HEUN
from stiffkit.diffusion.samplers.reference import REFERENCE_STEPS, reference_sample
from stiffkit.diffusion.samplers.solvers import (
    Solver,
    StepOut,
    get_solver,
    list_solvers,
    register_solver,
)

for _solver in (HEUN, EULER, DPM2, DEIS):
    register_solver(_solver)

#: The built-in solvers (:func:`list_solvers` also lists registered ones).
SOLVERS = ("heun", "euler", "dpm2", "deis")
#: Sign of the ERK-Guid correction per solver with a pair: the reference implementation's,
#: except DEIS (−1 here, +1 upstream; :mod:`~stiffkit.diffusion.samplers.deis`).
DEFAULT_CORRECTION_SIGN = {
    name: get_solver(name).correction_sign for name in SOLVERS if get_solver(name).has_pair
}

__all__ = [
    "SOLVERS",
    "DEFAULT_CORRECTION_SIGN",
    "DPM2_R",
    "DEIS_MAX_ORDER",
    "REFERENCE_STEPS",
    "Denoiser",
    "Solver",
    "StepOut",
    "pf_ode_drift",
    "to_d",
    "sample",
    "sample_final",
    "reference_sample",
    "deis_coefficients",
    "register_solver",
    "get_solver",
    "list_solvers",
]
