"""Estimators of stiffness and of the local error, at the cost each one states.

* :mod:`~stiffkit.estimators.jvp` — Jacobian–vector products of a drift (forward mode,
  double backward, finite differences) and its dense per-sample Jacobian;
* :mod:`~stiffkit.estimators.eigen` — the dominant eigenpairs of ``∂f/∂x`` by power
  iteration, ARPACK or a dense Jacobian, all returned as one
  :class:`~stiffkit.estimators.eigen.EigResult` whose ``num_products`` counts the
  Jacobian–vector products spent per sample;
* :mod:`~stiffkit.estimators.pair` — Proposition 1's two-point estimate ρ̂, Hairer's
  stage-pair estimate and the stiffness indicator ``h·ρ̂ / boundary`` (no extra evaluations);
* :mod:`~stiffkit.estimators.lte` — the local truncation error against a converged reference
  step, and its alignment with eigenvectors.
"""

from stiffkit.estimators.eigen import (
    EigResult,
    arpack_eig,
    dominant_eig,
    eig_dense,
    power_iteration,
)
from stiffkit.estimators.jvp import JVPOperator, jacobian_dense, jvp_operator
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
from stiffkit.estimators.spectrum import sorted_eig

__all__ = [
    "PAIR_EPS",
    "EigResult",
    "JVPOperator",
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
    "sorted_eig",
    "stage_pair",
    "stiffness_indicator",
]
