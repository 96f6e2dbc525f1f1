"""Guidance as one operation: ``D_w = D_g + w·(D − D_g)`` (EDM2 convention, w = 1 is off).

Classifier-free guidance (CFG) uses an unconditional model as the guide ``D_g``;
autoguidance (AG, Karras et al. 2024) a smaller or less-trained version of ``D``. Both are
:class:`Guided` with different guides, and ERK-Guid acts on whatever drift the guided
denoiser defines. The guided drift's Jacobian is ``J_w = J_g + w (J − J_g)``, so guidance with
``w > 1`` raises stiffness wherever the two models disagree in curvature.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stiffkit._utils import check_output, check_real
from stiffkit.diffusion.samplers.drift import Denoiser
from stiffkit.estimators.jvp import JVP_HINT

__all__ = ["Guided"]


class Guided(torch.nn.Module):
    """A guided denoiser ``D_w(x, σ) = D_g(x, σ) + w·(D(x, σ) − D_g(x, σ))``.

    Parameters
    ----------
    denoiser : callable
        The main denoiser ``D(x, sigma)``.
    guide : callable
        The guide ``D_g(x, sigma)`` (unconditional model for CFG, weaker model for AG).
    w : float
        Guidance weight; ``w = 1`` returns ``D`` without calling the guide, ``w = 0`` the
        guide alone.

    Attributes
    ----------
    num_calls : dict
        How many times ``denoiser`` and ``guide`` were called (network evaluations).

    Examples
    --------
    >>> cfg = Guided(main_model, unconditional_model, w=4.0)     # doctest: +SKIP
    >>> erk = stiffkit.diffusion.ErkGuid(w_stiff=1.0, w_con=0.5)  # doctest: +SKIP
    >>> traj = stiffkit.diffusion.sample(cfg, x_init, sigmas, erk=erk)  # doctest: +SKIP
    """

    def __init__(self, denoiser: Denoiser, guide: Denoiser, w: float) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"`denoiser` must be callable, got {type(denoiser).__name__}.")
        if not callable(guide):
            raise TypeError(f"`guide` must be callable, got {type(guide).__name__}.")
        w = check_real(w, "w")
        # Plain attributes (not submodule registration) keep callables that are not modules.
        object.__setattr__(self, "denoiser", denoiser)
        object.__setattr__(self, "guide", guide)
        self.w = float(w)
        self.num_calls = {"denoiser": 0, "guide": 0}
        hint = getattr(denoiser, JVP_HINT, None)  # a combination of two gradients is one
        if hint is not None and getattr(guide, JVP_HINT, None) == hint:
            setattr(self, JVP_HINT, hint)

    def extra_repr(self) -> str:
        return f"w={self.w}"

    def forward(self, x: Tensor, sigma) -> Tensor:
        """Return ``D_w(x, σ)``, the shape and dtype of ``x``."""
        if self.w == 1.0:
            self.num_calls["denoiser"] += 1
            return self.denoiser(x, sigma)
        if self.w == 0.0:
            self.num_calls["guide"] += 1
            return self.guide(x, sigma)
        d = self.denoiser(x, sigma)
        d_g = self.guide(x, sigma)
        self.num_calls["denoiser"] += 1
        self.num_calls["guide"] += 1
        check_output(d_g, d, "guide", same_dtype=True)  # the main denoiser's shape and dtype
        return d_g + self.w * (d - d_g)
