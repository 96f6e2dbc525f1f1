"""stiffkit: numerical analysis of stiffness in learned ODEs.

The names here are the ones a notebook reaches for first; everything else lives in its
subpackage:

* :mod:`stiffkit.tableaux` — Butcher tableaux, order conditions, stability;
* :mod:`stiffkit.integrate` — batched Runge–Kutta steps, fixed-grid and adaptive solves;
* :mod:`stiffkit.estimators` — JVPs, eigen-estimators, pair and Hairer estimates, LTE;
* :mod:`stiffkit.analysis` — :func:`analyze` and the ``torchdiffeq`` stiffness monitor;
* :mod:`stiffkit.problems` — test problems with known truth;
* :mod:`stiffkit.plotting` — figures (the only module that imports matplotlib);
* :mod:`stiffkit.diffusion` — exact mixtures, learned denoisers, ERK-Guid samplers, metrics;
* :mod:`stiffkit.paper` — the toy world and the settings of the paper's experiments.
"""

import importlib

from stiffkit import problems
from stiffkit.analysis import StiffnessMonitor, analyze, odeint_monitored
from stiffkit.estimators import (
    arpack_eig,
    dominant_eig,
    eig_dense,
    hairer_stiffness,
    jacobian_dense,
    jvp_operator,
    local_truncation_error,
    pair_stiffness,
    power_iteration,
    reference_step,
    stiffness_indicator,
)
from stiffkit.integrate import (
    Trajectory,
    regularized_solve,
    rk_step,
    solve_adaptive,
    solve_fixed,
)
from stiffkit.tableaux import (
    ButcherTableau,
    get_tableau,
    list_tableaux,
    real_stability_interval,
    register_tableau,
    tableau_summary,
)

__version__ = "0.1.0"

#: Subpackages imported on first use (they pull in matplotlib or the diffusion world).
_LAZY = ("diffusion", "paper", "plotting")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"stiffkit.{name}")
    raise AttributeError(f"module 'stiffkit' has no attribute {name!r}")


__all__ = [
    "ButcherTableau",
    "StiffnessMonitor",
    "Trajectory",
    "analyze",
    "arpack_eig",
    "diffusion",
    "dominant_eig",
    "eig_dense",
    "get_tableau",
    "hairer_stiffness",
    "jacobian_dense",
    "jvp_operator",
    "list_tableaux",
    "local_truncation_error",
    "odeint_monitored",
    "pair_stiffness",
    "paper",
    "plotting",
    "power_iteration",
    "problems",
    "real_stability_interval",
    "reference_step",
    "register_tableau",
    "regularized_solve",
    "rk_step",
    "solve_adaptive",
    "solve_fixed",
    "stiffness_indicator",
    "tableau_summary",
]
