"""The probability-flow drift of a denoiser: ``f(x; σ) = (x − D(x; σ))/σ``.

The one home of the formula (k-diffusion's ``to_d``): the samplers' steps, the converged
reference solve and every drift handed to the ODE tools use :func:`to_d`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from stiffkit._utils import broadcast_per_sample, check_output
from stiffkit.diffusion.schedules import SigmaLike, as_sigma
from stiffkit.estimators.jvp import JVP_HINT

__all__ = ["Denoiser", "Drift", "to_d", "denoise", "pf_ode_drift"]

#: ``D(x, sigma) -> x̂₀``: state first (k-diffusion / EDM order).
Denoiser = Callable[[Tensor, Tensor], Tensor]
#: ``f(sigma, x) -> dx/dσ``: time first (torchdiffeq order).
Drift = Callable[[Tensor, Tensor], Tensor]


def to_d(x: Tensor, denoised: Tensor, sigma: Tensor) -> Tensor:
    """Return the probability-flow drift ``(x − D)/σ`` from a denoiser's output.

    Parameters
    ----------
    x, denoised : Tensor, [batch, *dims]
        The state and ``D(x; σ)``.
    sigma : Tensor, [] or [batch]
        The level, in the state's dtype (a per-sample level divides its own sample).

    Returns
    -------
    Tensor, [batch, *dims]
    """
    return (x - denoised) / broadcast_per_sample(sigma, x)


def denoise(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """Call ``denoiser(x, sigma)`` and check it returned a tensor of `x`'s shape and dtype.

    Raises
    ------
    TypeError, ValueError
        From :func:`stiffkit._utils.check_output`, naming ``denoiser``.
    """
    return check_output(denoiser(x, sigma), x, "denoiser", same_dtype=True)


def pf_ode_drift(denoiser: Denoiser) -> Drift:
    """Return the probability-flow drift ``f(σ, x) = (x − D(x; σ))/σ`` (torchdiffeq's order).

    Parameters
    ----------
    denoiser : callable
        ``D(x, sigma)`` with ``x: [batch, *dims]``.

    Returns
    -------
    callable
        ``f(sigma, x) -> [batch, *dims]``; ``sigma`` is a number, a 0-d tensor or one level
        per sample ``[batch]``, converted to the state's dtype and device
        (:func:`stiffkit.diffusion.schedules.as_sigma`) before the denoiser sees it. The
        output is not checked (this is the ODE tools' hot path). The denoiser's
        :data:`stiffkit.estimators.jvp.JVP_HINT` attribute, if any, is copied.
    """

    def drift(sigma: SigmaLike, x: Tensor) -> Tensor:
        s = as_sigma(sigma, x)
        return to_d(x, denoiser(x, s), s)

    hint = getattr(denoiser, JVP_HINT, None)  # (x − D)/σ is a gradient where D − x is one
    if hint is not None:
        setattr(drift, JVP_HINT, hint)
    return drift
