"""ERK-Guid samplers with k-diffusion's calling convention (without importing k-diffusion).

k-diffusion's samplers (and ComfyUI's, which follow them) are functions
``sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, ...)`` that call
``model(x, sigma * s_in, **extra_args)`` with σ as a ``[batch]`` tensor, start from an
already scaled ``x = σ_0 · noise`` and let the grid end with 0 (an Euler step onto the
denoiser there). :func:`sample_erk_heun` and :func:`sample_erk_dpm_2` are such functions:

* with ``w_stiff = 0`` they are k-diffusion's ``sample_heun`` / ``sample_dpm_2`` without
  churn (``s_churn = 0``), bit for bit — the same operations in the same order;
* with ``w_stiff > 0`` they add ERK-Guid at no extra model call, and equal
  :func:`stiffkit.diffusion.sample` on the same denoiser bit for bit (they run its driver).

Only the ODE path is offered: churn injects noise, which the embedded pair would read as
stiffness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from stiffkit._utils import check_tensor
from stiffkit.diffusion.erk import ErkGuid
from stiffkit.diffusion.samplers.dpm2 import DPM2_R
from stiffkit.diffusion.samplers.driver import sample_final

__all__ = ["sample_erk_heun", "sample_erk_dpm_2", "KModel"]

#: ``model(x, sigma, **extra_args) -> denoised`` with ``sigma`` a ``[batch]`` tensor.
KModel = Callable[..., Tensor]


def _denoiser(model: KModel, batch: int, like: Tensor,
              extra_args: Mapping[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """stiffkit's ``D(x, sigma)`` (σ 0-d) calling `model` as k-diffusion does (σ ``[batch]``)."""
    s_in = like.new_ones([batch])

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return model(x, sigma * s_in, **extra_args)

    return denoiser


def _callback(callback: Callable[[dict], Any] | None) -> Callable[[dict], None] | None:
    """Translate the driver's per-step dict into k-diffusion's keys (plus stiffkit's)."""
    if callback is None:
        return None

    def translate(info: dict) -> None:
        callback({"x": info["x"], "i": info["i"], "sigma": info["sigma"],
                  "sigma_hat": info["sigma"], "denoised": info["denoised"],
                  "sigma_next": info["sigma_next"], "erk_rho": info["rho"],
                  "erk_beta": info["beta"]})

    return translate


def _run(solver: str, model: KModel, x: Tensor, sigmas: Tensor, extra_args, callback, disable,
         w_stiff: float, w_con: float, options: dict[str, Any]) -> Tensor:
    if not callable(model):
        raise TypeError(f"`model` must be callable as model(x, sigma, **extra_args), got "
                        f"{type(model).__name__}.")
    check_tensor(x, "x", min_ndim=2)
    if extra_args is not None and not isinstance(extra_args, Mapping):
        raise TypeError(f"`extra_args` must be a mapping of keyword arguments, got "
                        f"{type(extra_args).__name__}.")
    sig = torch.as_tensor(sigmas)
    if sig.is_floating_point():
        sig = sig.to(device=x.device, dtype=x.dtype)  # k-diffusion multiplies in x's dtype
    denoiser = _denoiser(model, x.shape[0], x, dict(extra_args or {}))
    out, _ = sample_final(denoiser, x, sig, solver=solver, erk=ErkGuid(w_stiff, w_con),
                          solver_options=options, callback=_callback(callback),
                          progress=not disable)
    return out


@torch.no_grad()
def sample_erk_heun(model: KModel, x: Tensor, sigmas: Tensor, extra_args: Mapping | None = None,
                    callback: Callable[[dict], Any] | None = None, disable: bool | None = None,
                    w_stiff: float = 0.0, w_con: float = 0.0) -> Tensor:
    """EDM's Heun sampler with ERK-Guid, called as k-diffusion calls ``sample_heun``.

    Parameters
    ----------
    model : callable
        ``model(x, sigma, **extra_args) -> denoised`` with ``x [batch, *dims]`` and
        ``sigma [batch]`` (k-diffusion's denoiser wrappers, ComfyUI's models).
    x : Tensor, [batch, *dims]
        The start at ``sigmas[0]``, already scaled (``sigmas[0] * noise``).
    sigmas : Tensor, [N + 1]
        Strictly decreasing levels, positive except a possible final 0 (then the last step
        is Euler); cast to ``x``'s dtype.
    extra_args : mapping, optional
        Keyword arguments for every model call (conditioning, ...).
    callback : callable, optional
        Called once per step with a dict holding k-diffusion's keys ``x, i, sigma,
        sigma_hat, denoised`` (``sigma_hat = sigma``: no churn) and stiffkit's
        ``sigma_next, erk_rho, erk_beta``.
    disable : bool, optional
        True hides the progress bar (k-diffusion's meaning).
    w_stiff, w_con : float
        ERK-Guid's strength and gate (:class:`stiffkit.diffusion.ErkGuid`); 0 is plain
        ``sample_heun`` bit for bit.

    Returns
    -------
    Tensor, [batch, *dims]
        The sample, after ``2N − 1`` model calls on a grid ending at 0 (``2N`` otherwise).
    """
    return _run("heun", model, x, sigmas, extra_args, callback, disable, w_stiff, w_con, {})


@torch.no_grad()
def sample_erk_dpm_2(model: KModel, x: Tensor, sigmas: Tensor,
                     extra_args: Mapping | None = None,
                     callback: Callable[[dict], Any] | None = None, disable: bool | None = None,
                     w_stiff: float = 0.0, w_con: float = 0.0, r: float = DPM2_R) -> Tensor:
    """k-diffusion's DPM-Solver-2 sampler with ERK-Guid, called as ``sample_dpm_2`` is.

    Parameters are those of :func:`sample_erk_heun`, plus
    ``r`` — DPM-Solver-2's intermediate level ``σ_mid = σ^{1−r} σ_next^r``
    (k-diffusion: 1/2, where ``w_stiff = 0`` is its ``sample_dpm_2`` bit for bit).
    ERK-Guid's pair is the step's start and its midpoint.

    Returns
    -------
    Tensor, [batch, *dims]
        The sample (two model calls per step, one on a final step to 0).
    """
    return _run("dpm2", model, x, sigmas, extra_args, callback, disable, w_stiff, w_con,
                {"r": r})
