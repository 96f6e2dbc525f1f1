"""What the samplers say when a state becomes NaN / Inf or blows up: the step, σ and the cause.

A probability-flow ODE contracts towards the data, so a state whose largest entry exceeds
:data:`BLOWUP_FACTOR` times the initial states' (or 1, if larger) has blown up — a finite
1e64 is as wrong as a NaN. The driver checks both with one reduction per step and calls
:func:`_raise_non_finite` to explain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stiffkit.diffusion.erk import ErkGuid

__all__ = ["BLOWUP_FACTOR"]

#: A state beyond this many times the initial states' scale has blown up.
BLOWUP_FACTOR = 1e4


def _raise_non_finite(i: int, s: Tensor, s_next: Tensor, den: Tensor, x_next: Tensor,
                      uncorrected: Tensor | None, erk: ErkGuid, limit: float) -> None:
    """Raise for a state that became NaN / Inf or blew up past `limit` in step `i`, naming
    the step, σ and the cause."""
    where = f"step {i} (σ = {float(s):.6g} → {float(s_next):.6g})"
    finite = bool(torch.isfinite(x_next).all())
    what = (f"blew up (max |x| = {float(x_next.abs().max()):.3g}, over {BLOWUP_FACTOR:g} × "
            "the initial states' scale)" if finite else "became NaN or Inf")
    if not bool(torch.isfinite(den).all()):
        cause = f"the denoiser returned NaN or Inf at σ = {float(s):.6g}"
    elif uncorrected is not None and bool(uncorrected.abs().max() <= limit):
        cause = ("the ERK-Guid correction is too large: use a smaller `w_stiff` (or a larger "
                 "`w_con`)")
    else:
        cause = "the step's later denoiser evaluation returned NaN or Inf, or the state overflowed"
        if erk.corrects:
            cause += (f" (ERK-Guid is on with `w_stiff` = {erk.w_stiff:g}: a large `w_stiff` "
                      "can blow the state up over a few steps)")
    raise ValueError(f"The samples {what} in {where}: {cause}.")
