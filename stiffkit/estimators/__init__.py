"""Estimators of stiffness and of the local error, at the cost each one states.

* :mod:`~stiffkit.estimators.eigen` — Jacobian–vector products of a drift (forward mode,
  double backward, finite differences) and the dominant eigenpairs of ``∂f/∂x`` by power
  iteration, ARPACK or a dense Jacobian;
* :mod:`~stiffkit.estimators.pair` — Proposition 1's two-point estimate ρ̂, Hairer's
  stage-pair estimate and the stiffness indicator ``h·ρ̂ / boundary`` (no extra evaluations);
* :mod:`~stiffkit.estimators.lte` — the local truncation error against a converged reference
  step, and its alignment with eigenvectors.
"""

from stiffkit.estimators.eigen import (
    DominantEig,
    arpack_eig,
    dominant_eig,
    eig_dense,
    jacobian_dense,
    jvp_operator,
    power_iteration,
)
from stiffkit.estimators.lte import (
    alignment,
    eigen_coefficients,
    local_truncation_error,
    reference_step,
)
from stiffkit.estimators.pair import (
    PAIR_EPS,
    embedded_stiffness,
    hairer_stiffness,
    pair_directions,
    pair_stiffness,
    stage_pair,
    stiffness_indicator,
)

__all__ = [
    "PAIR_EPS",
    "DominantEig",
    "alignment",
    "arpack_eig",
    "dominant_eig",
    "eig_dense",
    "eigen_coefficients",
    "embedded_stiffness",
    "hairer_stiffness",
    "jacobian_dense",
    "jvp_operator",
    "local_truncation_error",
    "pair_directions",
    "pair_stiffness",
    "power_iteration",
    "reference_step",
    "stage_pair",
    "stiffness_indicator",
]
