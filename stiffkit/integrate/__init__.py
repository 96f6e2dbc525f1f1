"""Explicit Runge–Kutta integration in torch, batched over samples.

* :mod:`~stiffkit.integrate.rk` — one step (:func:`rk_step`, stages and embedded solution
  kept) and the fixed-grid solve :func:`solve_fixed`;
* :mod:`~stiffkit.integrate.adaptive` — :func:`solve_adaptive` with an embedded pair, its
  step size set by :mod:`~stiffkit.integrate.controller` (a pure function of the error norms);
* :mod:`~stiffkit.integrate.regularized` — :func:`regularized_solve`, the adaptive solve with
  the error and stiffness integrals of ERNODE / SRNODE (Pal et al. 2021) at no extra evaluation;
* :mod:`~stiffkit.integrate.rule` — DOPRI5's stiffness rule (:class:`StiffnessRule`), run
  per sample; :func:`solve_adaptive` runs it after every step, the torchdiffeq monitor on
  its record;
* :mod:`~stiffkit.integrate.trajectory` — :class:`Trajectory`, what every solver and sampler
  records and :func:`stiffkit.analyze` reads;
* :mod:`~stiffkit.integrate.convergence` — measured convergence orders;
* :mod:`~stiffkit.integrate.reference` — torchdiffeq's dopri5 as a reference that never
  evaluates the drift outside its interval.
"""

from stiffkit.integrate.adaptive import AdaptiveSolution, solve_adaptive
from stiffkit.integrate.convergence import convergence_study, fitted_order
from stiffkit.integrate.regularized import RegularizedSolution, regularized_solve
from stiffkit.integrate.rk import RKStep, pair_stage_index, rk_step, solve_fixed
from stiffkit.integrate.rule import StiffnessDetected, StiffnessRule
from stiffkit.integrate.trajectory import Trajectory

__all__ = [
    "AdaptiveSolution",
    "RKStep",
    "RegularizedSolution",
    "StiffnessDetected",
    "StiffnessRule",
    "Trajectory",
    "convergence_study",
    "fitted_order",
    "pair_stage_index",
    "regularized_solve",
    "rk_step",
    "solve_adaptive",
    "solve_fixed",
]
