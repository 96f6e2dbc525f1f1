"""torchdiffeq's dopri5 as a reference solver that never evaluates the drift outside its interval.

torchdiffeq's adaptive solvers pick a first step by probing the drift at ``t0 + h0`` and may
step past the final time and interpolate back. Either evaluates the drift beyond ``t1``: for
a diffusion drift integrated down to a small σ that means a negative σ (a crash, or a silent
garbage value). :func:`dopri5_within` gives torchdiffeq the interval itself as the first
trial step (rejected and shrunk as usual if too large) and ``t1`` as a step boundary
(``step_t``), so every evaluation lies in ``[min(t0, t1), max(t0, t1)]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["dopri5_within"]


def dopri5_within(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float,
    atol: float,
) -> Tensor:
    """Return torchdiffeq's dopri5 solution of ``dy/dt = f(t, y)`` at `t1`, in float64.

    Parameters
    ----------
    f : callable
        ``f(t, y)`` with ``t`` a 0-d float64 tensor and ``y`` float64 ``[batch, *dims]``.
    y0 : Tensor, [batch, *dims]
        The state at `t0` (cast to float64).
    t0, t1 : float
        The interval's ends, ``t0 != t1`` (either order).
    rtol, atol : float
        torchdiffeq's tolerances.

    Returns
    -------
    Tensor, [batch, *dims], float64
        The solution at `t1`; `f` was evaluated only at times between `t0` and `t1`.

    Raises
    ------
    RuntimeError
        If the solve fails (torchdiffeq's step-size underflow: a NaN / Inf drift, or
        tolerances that float64 cannot meet).
    """
    import torchdiffeq

    if t0 == t1:
        raise ValueError(f"the interval must have nonzero length, got t0 = t1 = {t0!r}.")
    ts = torch.tensor([t0, t1], dtype=torch.float64)
    options = {"first_step": abs(t1 - t0), "step_t": ts[1:]}
    try:
        return torchdiffeq.odeint(f, y0.to(torch.float64), ts, rtol=rtol, atol=atol,
                                  method="dopri5", options=options)[-1]
    except AssertionError as err:  # torchdiffeq reports a failed solve by assertion
        raise RuntimeError(
            f"torchdiffeq's dopri5 failed from t = {t0:g} to {t1:g} ({err}): the drift returned "
            "NaN or Inf, or the tolerances cannot be met in float64.") from err
