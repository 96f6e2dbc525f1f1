"""Classic stiff nonlinear test problems: van der Pol and Robertson.

Each carries an analytic Jacobian and a Radau reference solution (scipy). Drifts are
``f(t, x)`` on ``x: [batch, n]``, computed in ``x``'s dtype and device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.integrate
import scipy.linalg
import torch
from torch import Tensor

from stiffkit._utils import check_real
from stiffkit.problems._inputs import array_input, state_input

__all__ = ["NonlinearProblem", "van_der_pol", "robertson"]


@functools.lru_cache(maxsize=32)
def _reference(rhs: Callable[..., Any], jac: Callable[..., np.ndarray],
               params: tuple[tuple[str, float], ...], x0: tuple[float, ...], t0: float,
               t_eval: tuple[float, ...], rtol: float, atol: float) -> np.ndarray:
    """Solve with Radau and the analytic Jacobian; cached on hashable arguments."""
    p, te = dict(params), np.asarray(t_eval)
    if te[-1] == t0:  # solve_ivp needs a non-empty interval
        out = np.tile(np.asarray(x0), (te.size, 1))
    else:
        sol = scipy.integrate.solve_ivp(
            lambda t, y: np.array(rhs(*y, **p)), (t0, te[-1]), np.asarray(x0), method="Radau",
            t_eval=te, jac=lambda t, y: jac(*y, **p), rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference solve failed: {sol.message}")
        out = sol.y.T
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class NonlinearProblem:
    """Autonomous nonlinear ODE ``x' = f(x)`` with analytic Jacobian and reference solution.

    Parameters
    ----------
    name : str
    x0 : np.ndarray, shape [n]
    t_span : tuple of float
        Standard integration interval ``(t0, t_end)``.
    params : Mapping[str, float]
        Keyword parameters of `rhs` and `jac_numpy` (stored read-only).
    rhs : callable ``(x_1, ..., x_n, **params) -> (f_1, ..., f_n)``
        Componentwise drift in plain arithmetic: one formula serves torch columns ``[batch]``
        (`f`) and numpy scalars (`f_numpy`, scipy).
    jac_numpy : callable ``(x_1, ..., x_n, **params) -> ndarray [n, n]``
        Module-level functions, so that reference solutions cache across instances.
    """

    name: str
    x0: np.ndarray
    t_span: tuple[float, float]
    params: Mapping[str, float]
    rhs: Callable[..., Sequence[Any]] = field(repr=False)
    jac_numpy: Callable[..., np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "x0", array_input(self.x0, "x0", (None,)))
        t0, t1 = array_input(self.t_span, "t_span", (2,)).tolist()
        if not t1 > t0:
            raise ValueError(f"`t_span` must satisfy t_span[0] < t_span[1], got {self.t_span}.")
        object.__setattr__(self, "t_span", (t0, t1))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def dim(self) -> int:
        """Return the state dimension ``n``."""
        return self.x0.size

    def f(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Evaluate the drift on ``x: [batch, n]`` in its dtype/device (``t`` is ignored)."""
        return torch.stack(list(self.rhs(*state_input(x, self.dim).unbind(1), **self.params)), 1)

    __call__ = f

    def f_numpy(self, t: float, y: np.ndarray) -> np.ndarray:
        """Evaluate the drift on a single float64 state ``y: [n]``, for scipy."""
        return np.array(self.rhs(*array_input(y, "y", (self.dim,)), **self.params))

    def jac(self, t: float, x: np.ndarray | Tensor) -> np.ndarray:
        """Return the analytic Jacobian ``∂f/∂x`` at a single state ``x: [n]``, shape [n, n]."""
        x = x.detach().cpu().numpy() if isinstance(x, Tensor) else x
        return self.jac_numpy(*array_input(x, "x", (self.dim,)), **self.params)

    def reference(self, t_eval: Sequence[float] | np.ndarray, *, rtol: float = 1e-10,
                  atol: float = 1e-12) -> np.ndarray:
        """Return a Radau solution from ``x0`` at ``t_span[0]``, shape [len(t_eval), n].

        `t_eval` must be non-decreasing within `t_span`; the solve stops at ``t_eval[-1]``.
        Results are cached on ``(problem, t_eval, rtol, atol)``; a fresh copy is returned.
        """
        te = array_input(t_eval, "t_eval", (None,))
        t0, t1 = self.t_span
        if te.size == 0 or np.any(np.diff(te) < 0) or te[0] < t0 or te[-1] > t1:
            raise ValueError("`t_eval` must be non-empty, non-decreasing and within `t_span`.")
        check_real(rtol, "rtol", lo=0, lo_open=True)
        check_real(atol, "atol", lo=0, lo_open=True)
        key = (tuple(sorted(self.params.items())), tuple(self.x0.tolist()), t0)
        return _reference(self.rhs, self.jac_numpy, *key, tuple(te.tolist()), float(rtol),
                          float(atol)).copy()


def _vdp_rhs(x1: Any, x2: Any, *, mu: float) -> tuple[Any, Any]:
    return x2, mu * (1 - x1**2) * x2 - x1


def _vdp_jac(x1: float, x2: float, *, mu: float) -> np.ndarray:
    return np.array([[0.0, 1.0], [-2 * mu * x1 * x2 - 1, mu * (1 - x1**2)]])


def van_der_pol(mu: float = 1000.0, x0: Sequence[float] = (2.0, 0.0),
                t_span: tuple[float, float] = (0.0, 3000.0)) -> NonlinearProblem:
    """Build van der Pol in standard form: ``x1' = x2``, ``x2' = μ(1 − x1²) x2 − x1``.

    For large ``μ`` the limit cycle has period ``≈ (3 − 2 ln 2) μ`` and the stiff Jacobian
    eigenvalue is ``≈ μ(1 − x1²)`` on the slow branches (Hairer & Wanner, Vol. II, §IV.1).
    """
    mu = check_real(mu, "mu", lo=0, lo_open=True)
    return NonlinearProblem("van_der_pol", array_input(x0, "x0", (2,)), t_span, {"mu": mu},
                            _vdp_rhs, _vdp_jac)


def _rober_rhs(y1: Any, y2: Any, y3: Any, *, k1: float, k2: float, k3: float) -> tuple:
    r1, r2, r3 = k1 * y1, k2 * y2**2, k3 * y2 * y3
    return -r1 + r3, r1 - r2 - r3, r2


def _rober_jac(y1: float, y2: float, y3: float, *, k1: float, k2: float, k3: float
               ) -> np.ndarray:
    return np.array([[-k1, k3 * y3, k3 * y2],
                     [k1, -2 * k2 * y2 - k3 * y3, -k3 * y2],
                     [0.0, 2 * k2 * y2, 0.0]])


def robertson(t_span: tuple[float, float] = (0.0, 1e5),
              x0: Sequence[float] = (1.0, 0.0, 0.0)) -> NonlinearProblem:
    """Build Robertson's chemical kinetics problem (Hairer & Wanner, Vol. II, §IV.1).

    ``y1' = −k1 y1 + k3 y2 y3``, ``y2' = k1 y1 − k2 y2² − k3 y2 y3``, ``y3' = k2 y2²`` with
    ``k1 = 0.04``, ``k2 = 3e7``, ``k3 = 1e4``; ``y1 + y2 + y3`` is conserved.
    """
    rates = {"k1": 0.04, "k2": 3e7, "k3": 1e4}
    return NonlinearProblem("robertson", array_input(x0, "x0", (3,)), t_span, rates,
                            _rober_rhs, _rober_jac)
