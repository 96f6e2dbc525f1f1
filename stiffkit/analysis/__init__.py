"""Stiffness reports: :func:`analyze` on any trajectory, and a monitor for ``torchdiffeq``.

* :mod:`~stiffkit.analysis.analyze` — one row per step and sample: estimates, references,
  local errors and alignments;
* :mod:`~stiffkit.analysis.columns` — the report's column schema, shared with the monitor;
* :class:`StiffnessRule` — DOPRI5's stiffness rule, run per sample (it lives in
  :mod:`stiffkit.integrate.rule`, since :func:`stiffkit.solve_adaptive` runs it too);
* :mod:`~stiffkit.analysis.monitor` — :class:`StiffnessMonitor`, Hairer's estimate during a
  ``torchdiffeq.odeint`` solve at no extra evaluation (its torchdiffeq glue lives in the
  private ``stiffkit.analysis._torchdiffeq``).
"""

from stiffkit.analysis.analyze import analyze
from stiffkit.analysis.columns import COLUMNS
from stiffkit.analysis.monitor import StiffnessMonitor, odeint_monitored
from stiffkit.integrate.rule import StiffnessRule

__all__ = ["COLUMNS", "StiffnessMonitor", "StiffnessRule", "analyze", "odeint_monitored"]
