"""Test problems with known truth, for checking solvers and estimators.

* :mod:`~stiffkit.problems.linear` — ``x' = A x + c`` with prescribed spectra (symmetric, with a
  spectral gap, complex pairs, non-normal, Jordan-like, Dahlquist) and exact solutions;
* :mod:`~stiffkit.problems.nonlinear` — van der Pol and Robertson, with analytic Jacobians and
  Radau reference solutions.
"""

from stiffkit.problems.linear import (
    LinearProblem,
    complex_pair_linear,
    dahlquist,
    jordan_like_linear,
    nonnormal_linear,
    symmetric_linear,
    symmetric_with_gap,
)
from stiffkit.problems.nonlinear import NonlinearProblem, robertson, van_der_pol

__all__ = [
    "LinearProblem",
    "NonlinearProblem",
    "complex_pair_linear",
    "dahlquist",
    "jordan_like_linear",
    "nonnormal_linear",
    "robertson",
    "symmetric_linear",
    "symmetric_with_gap",
    "van_der_pol",
]
