"""EDM denoisers ``D(x, σ)`` of diffusers models trained with a DDPM-style (VP) schedule.

A discrete VP schedule ``ᾱ_t`` (``alphas_cumprod``, ``t = 0 … T−1``) noises as
``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε``. Dividing by ``√ᾱ_t`` gives EDM's variance-exploding state
``x = x_t / √ᾱ_t = x₀ + σ ε`` with

.. math:: σ(t) = \\sqrt{(1 − ᾱ_t)/ᾱ_t}, \\qquad √ᾱ_t = 1/\\sqrt{σ² + 1},

so the network sees ``x_t = x / √(σ² + 1)`` and the timestep ``t(σ)``, found by linear
interpolation of ``ln σ(t)`` between the schedule's integer timesteps (k-diffusion's
discrete-time wrappers do the same). From the three parametrisations:

* ε-prediction: ``x₀ = x − σ ε̂``;
* v-prediction, ``v = √ᾱ ε − √(1 − ᾱ) x₀``: substituting ``ε = (x_t − √ᾱ x₀)/√(1 − ᾱ)``
  gives ``x₀ = √ᾱ x_t − √(1 − ᾱ) v``, i.e. ``x₀ = x/(σ² + 1) − σ v̂ / √(σ² + 1)`` —
  EDM's ``c_skip``/``c_out`` with ``σ_data = 1``;
* x₀-prediction ("sample"): ``x₀ = F``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from stiffkit._utils import broadcast_per_sample

__all__ = ["DiffusersDenoiser", "denoiser_from_diffusers"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def unwrap_output(out: Any) -> Tensor:
    """Return the tensor of a model output: itself, its ``.sample`` or its first element."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"The model returned {type(out).__name__}, not a tensor (or an output "
                    "with `.sample`).")


class DiffusersDenoiser(nn.Module):
    """``D(x, σ)`` of a VP-trained diffusers model; build it with :func:`denoiser_from_diffusers`.

    Parameters
    ----------
    model : nn.Module or callable
        ``F(x_t, t)``, ``x_t: [batch, *dims]``, ``t: [batch]`` (a diffusers UNet).
    alphas_cumprod : Tensor, [T]
        The training schedule's ``ᾱ_t``, strictly decreasing in ``(0, 1)``.
    prediction_type : {"epsilon", "v_prediction", "sample"}
        What `model` predicts.
    math_attention : bool
        Run ``scaled_dot_product_attention`` with its math kernel (composite operations),
        through which double backward works, so the estimators' JVPs are exact; the fused
        CPU kernel has neither forward-mode AD nor double backward (then only finite
        differences remain). False keeps torch's kernel choice (faster sampling).

    Attributes
    ----------
    log_sigmas : Tensor, float64 [T]
        ``ln σ(t)`` at the integer timesteps (a buffer), increasing.
    sigma_min, sigma_max : float
        ``σ(0)`` and ``σ(T − 1)``, the range a sampling grid should keep to.
    """

    def __init__(self, model: Callable[[Tensor, Tensor], Any], alphas_cumprod: Tensor,
                 prediction_type: str = "epsilon", math_attention: bool = True) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"`model` must be callable F(x, t), got {type(model).__name__}.")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got "
                             f"{prediction_type!r}.")
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if abar.ndim != 1 or abar.shape[0] < 2:
            raise ValueError("`alphas_cumprod` must be a 1-D schedule of at least 2 timesteps, "
                             f"got shape {tuple(abar.shape)}.")
        if not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError("`alphas_cumprod` must lie in (0, 1): σ(t) = √((1 − ᾱ)/ᾱ) is "
                             "infinite at ᾱ = 0 (a zero-terminal-SNR schedule) and 0 at ᾱ = 1.")
        log_sigmas = 0.5 * torch.log((1 - abar) / abar)
        if not bool((log_sigmas[1:] > log_sigmas[:-1]).all()):
            raise ValueError("`alphas_cumprod` must be strictly decreasing (σ(t) increasing).")
        self.model = model
        self.prediction_type = prediction_type
        self.math_attention = bool(math_attention)
        self.register_buffer("log_sigmas", log_sigmas)

    @property
    def sigma_min(self) -> float:
        """The smallest level of the schedule, ``σ(0)``."""
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        """The largest level of the schedule, ``σ(T − 1)``."""
        return float(self.log_sigmas[-1].exp())

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Return the fractional timestep of each level, float64, `sigma`'s shape.

        ``ln σ`` is interpolated linearly between the integer timesteps; levels outside
        ``[sigma_min, sigma_max]`` are clamped to ``t = 0`` / ``T − 1``.
        """
        table = self.log_sigmas.to(device=sigma.device, dtype=torch.float64)
        log_s = torch.log(sigma.to(torch.float64)).clamp(table[0], table[-1])
        hi = torch.searchsorted(table, log_s.reshape(-1)).clamp(1, table.shape[0] - 1)
        lo = hi - 1
        w = (log_s.reshape(-1) - table[lo]) / (table[hi] - table[lo])
        return (lo.to(torch.float64) + w).reshape(sigma.shape)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Return ``σ(t)`` of fractional timesteps ``t ∈ [0, T − 1]`` (float64, `t`'s shape)."""
        table = self.log_sigmas.to(device=t.device)
        t = t.to(torch.float64).clamp(0, table.shape[0] - 1)
        lo = t.floor().long().clamp(max=table.shape[0] - 2)
        w = t - lo
        return torch.exp((1 - w) * table[lo] + w * table[lo + 1])

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Return ``D(x; σ)``.

        Parameters
        ----------
        x : Tensor, [batch, *dims]
            The EDM (variance-exploding) state.
        sigma : float or Tensor, [] or [batch]
            Positive level(s).

        Returns
        -------
        Tensor, [batch, *dims]
            In `x`'s dtype; the model runs in its own (its parameters') dtype.
        """
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.ndim not in (0, 1) or (s.ndim == 1 and s.shape[0] != x.shape[0]):
            raise ValueError(f"`sigma` must be 0-d or one level per sample [{x.shape[0]}], "
                             f"got shape {tuple(s.shape)}.")
        s_b = broadcast_per_sample(s, x)
        scale = 1 / (s_b**2 + 1).sqrt()  # √ᾱ(σ)
        dtype = _model_dtype(self.model, x.dtype)
        t = self.sigma_to_t(s.expand(x.shape[0])).to(dtype)
        with _attention_kernel(self.math_attention):
            out = unwrap_output(self.model((x * scale).to(dtype), t)).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - s_b * out
        if self.prediction_type == "v_prediction":
            return x * scale**2 - s_b * scale * out
        return out


def _attention_kernel(math: bool) -> contextlib.AbstractContextManager:
    """The math kernel of ``scaled_dot_product_attention`` if `math` (and torch has the switch)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no switch, keep the default kernel
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH]) if math else contextlib.nullcontext()


def _model_dtype(model: Any, default: torch.dtype) -> torch.dtype:
    """The floating dtype of `model`'s parameters (`default` for a parameterless callable)."""
    params = model.parameters() if isinstance(model, nn.Module) else ()
    for p in params:
        if p.is_floating_point():
            return p.dtype
    return default


def denoiser_from_diffusers(unet: Callable[[Tensor, Tensor], Any], scheduler: Any, *,
                            prediction_type: str | None = None,
                            math_attention: bool = True) -> DiffusersDenoiser:
    """Return the EDM denoiser ``D(x, σ)`` of a diffusers model and its VP training schedule.

    Parameters
    ----------
    unet : nn.Module or callable
        ``unet(x_t, t)`` (e.g. ``UNet2DModel``; its ``.sample`` is taken), ``x_t: [batch,
        *dims]``.
    scheduler : diffusers scheduler
        One with ``alphas_cumprod`` ``[T]`` (``DDPMScheduler``, ``DDIMScheduler``,
        ``EulerDiscreteScheduler``, …); its ``config.prediction_type`` is used unless
        `prediction_type` is given.
    prediction_type : {"epsilon", "v_prediction", "sample"}, optional
        Override of the scheduler's.
    math_attention : bool
        See :class:`DiffusersDenoiser` (default True: exact JVPs through attention).

    Returns
    -------
    DiffusersDenoiser
        An ``nn.Module`` ``D(x: [batch, *dims], sigma: [] or [batch]) -> [batch, *dims]``:
        :func:`stiffkit.diffusion.sample`, :func:`stiffkit.analyze` and the
        eigen-estimators (through :func:`stiffkit.diffusion.pf_ode_drift`) run on it. Keep
        grids within ``[D.sigma_min, D.sigma_max]`` (and a final 0).

    Raises
    ------
    ValueError
        A scheduler without ``alphas_cumprod``, a schedule that is not a strictly
        decreasing ``ᾱ`` in (0, 1), an unknown prediction type.

    Notes
    -----
    Jacobian–vector products through a diffusers UNet with attention, torch 2.13 CPU:
    forward mode fails (the fused attention kernel has no forward-mode AD; with the math
    kernel, ``group_norm``'s forward-mode rule rejects the non-contiguous tangent the
    attention block hands on), and the estimators' ``jvp_method="auto"`` falls back by
    itself — to exact double backward with ``math_attention=True``, to finite differences
    without (the fused kernel's backward is not differentiable).
    """
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None:
        raise ValueError(f"`scheduler` ({type(scheduler).__name__}) has no `alphas_cumprod`: "
                         "give the DDPM-style scheduler the model was trained with.")
    if prediction_type is None:
        config = getattr(scheduler, "config", None)
        prediction_type = getattr(config, "prediction_type", "epsilon")
    return DiffusersDenoiser(unet, abar, prediction_type, math_attention)
