"""stiffkit: numerical analysis of stiffness in learned ODEs.

Butcher tableaux and their analysis (order conditions, stability), batched Runge–Kutta
steps and integrators in torch, analytic test problems, eigen-estimators of the drift
Jacobian, and the stiffness diagnostics behind ERK-Guid.
"""

from stiffkit import problems
from stiffkit.adaptive import AdaptiveSolution, solve_adaptive
from stiffkit.analysis import analyze, plot_estimate_vs_reference, plot_stiffness
from stiffkit.eigen import (
    DominantEig,
    arpack_eig,
    dominant_eig,
    eig_dense,
    jacobian_dense,
    jvp_operator,
    power_iteration,
)
from stiffkit.lte import alignment, eigen_coefficients, local_truncation_error, reference_step
from stiffkit.monitor import StiffnessMonitor, StiffnessRule, odeint_monitored
from stiffkit.order_conditions import computed_order, order_condition_residuals, rooted_trees
from stiffkit.rk import RKStep, pair_stage_index, rk_step, solve_fixed
from stiffkit.stability import (
    plot_stability_region,
    real_stability_interval,
    stability_function,
    stability_polynomial,
)
from stiffkit.stiffness import (
    PAIR_EPS,
    embedded_stiffness,
    hairer_stiffness,
    pair_directions,
    pair_stiffness,
    stage_pair,
    stiffness_indicator,
)
from stiffkit.summary import convergence_study, tableau_summary
from stiffkit.tableaux import ButcherTableau, get_tableau, list_tableaux, register_tableau
from stiffkit.trajectory import Trajectory

__version__ = "0.1.0"


def __getattr__(name: str):
    # `stiffkit.diffusion` (mixtures, learned models, samplers) is imported on first use.
    if name == "diffusion":
        import importlib

        return importlib.import_module("stiffkit.diffusion")
    raise AttributeError(f"module 'stiffkit' has no attribute {name!r}")


__all__ = [
    "diffusion",
    "PAIR_EPS",
    "AdaptiveSolution",
    "DominantEig",
    "StiffnessMonitor",
    "StiffnessRule",
    "odeint_monitored",
    "alignment",
    "analyze",
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
    "plot_estimate_vs_reference",
    "plot_stiffness",
    "power_iteration",
    "problems",
    "reference_step",
    "stage_pair",
    "stiffness_indicator",
    "ButcherTableau",
    "RKStep",
    "Trajectory",
    "computed_order",
    "convergence_study",
    "get_tableau",
    "list_tableaux",
    "order_condition_residuals",
    "pair_stage_index",
    "plot_stability_region",
    "real_stability_interval",
    "register_tableau",
    "rk_step",
    "rooted_trees",
    "solve_adaptive",
    "solve_fixed",
    "stability_function",
    "stability_polynomial",
    "tableau_summary",
]
