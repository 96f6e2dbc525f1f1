"""EDM's Heun sampler with ERK-Guid as a diffusers scheduler.

:class:`EDMERKHeunScheduler` takes the configuration and the preconditioning of diffusers'
``EDMEulerScheduler`` (``sigma_min``, ``sigma_max``, ``sigma_data``, ``rho``,
``prediction_type``; ``c_in``, ``c_skip``, ``c_out`` and ``c_noise = ¼ ln σ``) and the call
layout of its ``HeunDiscreteScheduler``: one timestep per model call, ``2N − 1`` of them on
an EDM grid of ``N`` positive levels and a final 0. Each step is the step of
:func:`stiffkit.diffusion.samplers.heun.heun_step` — an Euler predictor, one call at the
Euler point, the average of the two drifts — and the last step, onto σ = 0, is Euler.

ERK-Guid (:mod:`stiffkit.diffusion.erk`) reads the pair the sampler already has, the
previous step's Euler point ``(x_E, f_E)`` against the step's start ``(x_i, f_i)``, both at
σ_i; the scheduler keeps ``(x_E, f_E)`` between steps, so the correction costs no model call.
Every operation is the one :func:`stiffkit.diffusion.sample` performs, in the same order and
dtype, so the scheduler's samples equal ``sample(edm_denoiser(model, scheduler), x,
scheduler.sigma_grid, w_stiff=..., w_con=...)`` bit for bit (tests/integrations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from torch import Tensor

from stiffkit._utils import broadcast_per_sample, check_int, check_real
from stiffkit.diffusion.erk import ErkGuid, erk_guid_correction
from stiffkit.diffusion.samplers.heun import HEUN
from stiffkit.diffusion.schedules import check_sigmas, edm_sigmas
from stiffkit.integrations.diffusers.denoiser import unwrap_output

__all__ = ["EDMERKHeunScheduler", "EDMERKHeunSchedulerOutput", "edm_denoiser"]

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class EDMERKHeunSchedulerOutput(BaseOutput):
    """What :meth:`EDMERKHeunScheduler.step` returns.

    Attributes
    ----------
    prev_sample : Tensor, [batch, *dims]
        The state to hand to the next model call: the Euler point after a step's first
        call, the (ERK-Guid corrected) Heun state after its second.
    pred_original_sample : Tensor, [batch, *dims]
        The denoiser ``D(sample; σ)`` of this call.
    """

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


def _as_level(sigma: float | Tensor, like: Tensor) -> Tensor:
    """Return `sigma` as a tensor of `like`'s dtype and device (0-d or ``[batch]``)."""
    return torch.as_tensor(sigma, dtype=like.dtype, device=like.device)


class EDMERKHeunScheduler(SchedulerMixin, ConfigMixin):
    """EDM's Heun sampler (no churn) with ERK-Guid, driven by the ordinary diffusers loop.

    ::

        scheduler.set_timesteps(N)
        x = scheduler.init_noise_sigma * noise
        for t in scheduler.timesteps:                       # 2N − 1 model calls
            out = model(scheduler.scale_model_input(x, t), t)
            x = scheduler.step(out, t, x).prev_sample

    The model ``F`` is EDM-preconditioned: ``D(x; σ) = c_skip x + c_out F(c_in x, c_noise)``
    (Karras et al. 2022, Table 1), which is :func:`edm_denoiser`.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Ends of the EDM grid, ``0 < sigma_min < sigma_max``.
    sigma_data : float
        Standard deviation of the data (> 0); enters ``c_in``, ``c_skip``, ``c_out``.
    rho : float
        Grid exponent (> 0), :func:`stiffkit.diffusion.edm_sigmas`.
    prediction_type : {"epsilon", "v_prediction"}
        As diffusers' ``EDMEulerScheduler``: ``c_out = σ σ_d / √(σ² + σ_d²)`` for
        "epsilon", its negative for "v_prediction"; ``c_skip = σ_d² / (σ² + σ_d²)``.
    w_stiff, w_con : float
        ERK-Guid's strength (≥ 0; 0 is plain Heun, bit for bit) and gate
        (:class:`stiffkit.diffusion.ErkGuid`).
    erk_eps : float, optional
        ERK-Guid's pair guard: None (default) is the scale-relative guard of
        :func:`stiffkit.diffusion.sample`, 1e-8 the reference code's absolute one.
    num_train_timesteps : int
        Only what ``len(scheduler)`` reports (diffusers' convention); sampling ignores it.

    Attributes
    ----------
    sigma_grid : Tensor, float64 [N + 1]
        The step levels ``σ_0 > … > σ_N`` (hand it to :func:`stiffkit.diffusion.sample`).
    sigmas : Tensor, float64 [2N]
        The level of each model call, then the final level: ``[σ_0, σ_1, σ_1, …, σ_{N−1},
        σ_{N−1}, 0]`` on a grid ending at 0 (``HeunDiscreteScheduler``'s layout).
    timesteps : Tensor, float32 [2N − 1]
        ``c_noise = ¼ ln σ`` of each model call, what the model is given.
    erk_rho, erk_beta : Tensor, [batch], or None
        The last ERK-Guid step's ρ̂ and gate (None until a correction was computed).

    Raises
    ------
    ValueError
        Naming the argument: a grid end, `sigma_data` or `rho` that is not positive,
        ``sigma_min >= sigma_max``, an unknown `prediction_type`, a bad ERK-Guid setting.

    Notes
    -----
    ``init_noise_sigma`` is ``sigma_max`` — EDM starts from ``σ_max · n`` — where diffusers'
    ``EDMEulerScheduler`` reports ``√(σ_max² + 1)``. Ancestral noise (``s_churn``) is not
    offered: injected noise would reach the embedded pair as spurious stiffness.
    """

    _compatibles: list[str] = []
    order = 2

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        rho: float = 7.0,
        prediction_type: str = "epsilon",
        w_stiff: float = 0.0,
        w_con: float = 0.0,
        erk_eps: float | None = None,
        num_train_timesteps: int = 1000,
    ) -> None:
        check_real(sigma_min, "sigma_min", lo=0, lo_open=True)
        check_real(sigma_max, "sigma_max", lo=0, lo_open=True)
        check_real(sigma_data, "sigma_data", lo=0, lo_open=True)
        check_real(rho, "rho", lo=0, lo_open=True)
        check_int(num_train_timesteps, "num_train_timesteps")
        if erk_eps is not None:
            check_real(erk_eps, "erk_eps", lo=0, lo_open=True)
        if not sigma_min < sigma_max:
            raise ValueError(f"`sigma_min` must be smaller than `sigma_max`, got {sigma_min} "
                             f"and {sigma_max}.")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"`prediction_type` must be one of {PREDICTION_TYPES}, got "
                             f"{prediction_type!r}.")
        self._erk = ErkGuid(w_stiff=float(w_stiff), w_con=float(w_con), eps=erk_eps)
        self.num_inference_steps: int | None = None
        self._lay_out(edm_sigmas(num_train_timesteps, sigma_min, sigma_max, rho))

    # ------------------------------------------------------------------ preconditioning
    def precondition_inputs(self, sample: Tensor, sigma: float | Tensor) -> Tensor:
        """Return ``c_in · sample``, ``c_in = 1/√(σ² + σ_d²)``; `sample` ``[batch, *dims]``."""
        s = broadcast_per_sample(_as_level(sigma, sample), sample)
        return sample * (1 / (s**2 + self.config.sigma_data**2).sqrt())

    def precondition_noise(self, sigma: float | Tensor) -> Tensor:
        """Return the model's timestep ``c_noise = ¼ ln σ`` (σ 0-d or ``[batch]``)."""
        s = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma))
        return 0.25 * torch.log(s)

    def precondition_outputs(self, sample: Tensor, model_output: Tensor,
                             sigma: float | Tensor) -> Tensor:
        """Return ``D = c_skip · sample + c_out · model_output``, ``[batch, *dims]``.

        ``model_output`` is cast to `sample`'s dtype first.
        """
        s = broadcast_per_sample(_as_level(sigma, sample), sample)
        var = s**2 + self.config.sigma_data**2
        c_skip = self.config.sigma_data**2 / var
        c_out = s * self.config.sigma_data / var.sqrt()
        if self.config.prediction_type == "v_prediction":
            c_out = -c_out
        return c_skip * sample + c_out * model_output.to(sample.dtype)

    # ------------------------------------------------------------------ the grid
    def set_timesteps(self, num_inference_steps: int | None = None,
                      device: str | torch.device | None = None,
                      sigmas: Any = None) -> None:
        """Lay out the grid of `num_inference_steps` EDM levels and a final 0; reset the state.

        Parameters
        ----------
        num_inference_steps : int, optional
            ``N`` (≥ 1), the positive levels of :func:`stiffkit.diffusion.edm_sigmas`:
            ``2N − 1`` timesteps.
        device : str or torch.device, optional
            Where `timesteps` go (``sigmas`` stay on the CPU, as in diffusers).
        sigmas : sequence or Tensor, [M + 1], optional
            A grid of levels instead (strictly decreasing, positive but for a final 0);
            without a final 0 every step is Heun (``2M`` calls).

        Raises
        ------
        ValueError
            Neither or both of `num_inference_steps` and `sigmas`; a bad grid.
        """
        if (num_inference_steps is None) == (sigmas is None):
            raise ValueError("Give exactly one of `num_inference_steps` and `sigmas`.")
        if sigmas is None:
            n = check_int(num_inference_steps, "num_inference_steps")
            c = self.config
            grid = edm_sigmas(n, c.sigma_min, c.sigma_max, c.rho)
        else:
            grid = check_sigmas(sigmas)
            n = grid.shape[0] - 1
        self.num_inference_steps = n
        self._lay_out(grid, device)

    def _lay_out(self, grid: Tensor, device: str | torch.device | None = None) -> None:
        """Build the per-call tables of `grid` (float64 ``[M + 1]``) and reset the state."""
        steps, stages, levels = [], [], []
        for i in range(grid.shape[0] - 1):
            steps.append(i), stages.append(0), levels.append(grid[i])
            if float(grid[i + 1]) > 0:  # the step onto σ = 0 is Euler: no second call
                steps.append(i), stages.append(1), levels.append(grid[i + 1])
        self.sigma_grid = grid.to(torch.float64)
        self._call_step, self._call_stage = steps, stages
        self.sigmas = torch.stack([*levels, grid[-1]]).to(torch.float64)
        # One 0-d evaluation per call: the same kernel as edm_denoiser's 0-d σ.
        self.timesteps = torch.stack(
            [self.precondition_noise(level.to(torch.float32)) for level in levels]
        ).to(device)
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._start: tuple[Tensor, Tensor] | None = None  # (x_i, f_i) between the two calls
        self._euler: tuple[Tensor, Tensor] | None = None  # the last Euler point (x_E, f_E)
        self.erk_rho: Tensor | None = None
        self.erk_beta: Tensor | None = None

    # ------------------------------------------------------------------ diffusers protocol
    @property
    def init_noise_sigma(self) -> float:
        """``σ_0``: the loop starts from ``init_noise_sigma · noise`` (EDM's ``σ_max · n``)."""
        return float(self.sigma_grid[0])

    @property
    def step_index(self) -> int | None:
        """Index of the next model call in `timesteps` (None before the first)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """The first call's index, when a pipeline set it with :meth:`set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at call `begin_index` (diffusers' pipelines call this)."""
        self._begin_index = check_int(begin_index, "begin_index", minimum=0)

    @property
    def state_in_first_order(self) -> bool:
        """True when the next call is a step's first (at ``σ_i``), False at its Euler point."""
        return self._start is None

    def index_for_timestep(self, timestep: float | Tensor,
                           schedule_timesteps: Tensor | None = None) -> int:
        """Return the call index of `timestep`: of repeated ones the second (diffusers' rule).

        Raises
        ------
        ValueError
            `timestep` is not in the schedule.
        """
        table = self.timesteps if schedule_timesteps is None else schedule_timesteps
        hits = (table == torch.as_tensor(timestep, device=table.device)).nonzero()
        if hits.shape[0] == 0:
            raise ValueError(f"`timestep` {float(timestep)!r} is not one of `timesteps`.")
        return int(hits[1 if hits.shape[0] > 1 else 0].item())

    def _init_step_index(self, timestep: float | Tensor) -> None:
        self._step_index = (self.index_for_timestep(timestep) if self._begin_index is None
                            else self._begin_index)

    def _levels(self, k: int, like: Tensor) -> tuple[int, int, Tensor, Tensor]:
        """Step, stage and ``σ_i``, ``σ_{i+1}`` (0-d, `like`'s dtype) of call `k`."""
        if not 0 <= k < len(self._call_step):
            raise ValueError(f"No model call {k} left: the schedule has {len(self._call_step)}; "
                             "call `set_timesteps` again to sample anew.")
        i, stage = self._call_step[k], self._call_stage[k]
        sig = self.sigma_grid.to(device=like.device, dtype=like.dtype)
        return i, stage, sig[i], sig[i + 1]

    def scale_model_input(self, sample: Tensor, timestep: float | Tensor) -> Tensor:
        """Return ``c_in(σ) · sample`` for the current call's σ, ``[batch, *dims]``."""
        if self._step_index is None:
            self._init_step_index(timestep)
        _, stage, s, s_next = self._levels(self._step_index, sample)
        return self.precondition_inputs(sample, s if stage == 0 else s_next)

    def step(self, model_output: Tensor, timestep: float | Tensor, sample: Tensor,
             return_dict: bool = True) -> EDMERKHeunSchedulerOutput | tuple[Tensor, Tensor]:
        """Advance by one model call: an Euler predictor, or the Heun step with ERK-Guid.

        Parameters
        ----------
        model_output : Tensor, [batch, *dims]
            The model's output at ``scale_model_input(sample, timestep)`` and `timestep`.
        timestep : float or Tensor
            The current entry of `timesteps`.
        sample : Tensor, [batch, *dims]
            The state the model was evaluated at (``prev_sample`` of the last call).
        return_dict : bool
            Return an :class:`EDMERKHeunSchedulerOutput`, or the tuple
            ``(prev_sample, pred_original_sample)``.

        Returns
        -------
        EDMERKHeunSchedulerOutput or tuple
            ``prev_sample`` and ``pred_original_sample``, ``[batch, *dims]``.
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        _, stage, s, s_next = self._levels(self._step_index, sample)
        level = s if stage == 0 else s_next
        denoised = self.precondition_outputs(sample, model_output, level)
        drift = (sample - denoised) / level
        if stage == 0 and bool(s_next == 0):  # the drift is singular at 0: land on D (Euler)
            prev = sample + (s_next - s) * drift
        elif stage == 0:  # Euler predictor; its point is evaluated by the next call
            self._start = (sample, drift)
            prev = sample + (s_next - s) * drift
        else:
            prev = self._heun(s, s_next, sample, drift)
        self._step_index += 1
        if not return_dict:
            return prev, denoised
        return EDMERKHeunSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    def _heun(self, s: Tensor, s_next: Tensor, x_e: Tensor, f_e: Tensor) -> Tensor:
        """Finish the step from the stored start with the Euler point's drift; ERK-Guid."""
        if self._start is None:
            raise ValueError("`step` was called at an Euler point without the step's first call.")
        (x, f), self._start = self._start, None
        x_next = x + (s_next - s) * (0.5 * f + 0.5 * f_e)
        erk = self._erk
        if erk.corrects and self._euler is not None:
            x_prev, f_prev = self._euler
            corr = erk_guid_correction(
                f, s - s_next, w_stiff=erk.w_stiff, w_con=erk.w_con, dx=x - x_prev,
                df=f - f_prev, sign=erk.sign_for(HEUN.correction_sign), eps=erk.eps,
                state=x if erk.eps is None else None)
            x_next = x_next + corr.delta
            self.erk_rho, self.erk_beta = corr.rho, corr.beta
        self._euler = (x_e, f_e)
        return x_next

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def edm_denoiser(model: Callable[[Tensor, Tensor], Any],
                 scheduler: EDMERKHeunScheduler) -> Callable[[Tensor, Tensor], Tensor]:
    """Return ``D(x, σ) = c_skip x + c_out F(c_in x, c_noise)`` of an EDM-preconditioned model.

    The preconditioning is the scheduler's own (:meth:`~EDMERKHeunScheduler.precondition_inputs`
    and the rest), so :func:`stiffkit.diffusion.sample` on ``D`` reproduces the scheduler.

    Parameters
    ----------
    model : callable
        ``F(x_in, t)`` with ``x_in: [batch, *dims]`` and ``t`` the timestep(s); an output
        with a ``.sample`` attribute (diffusers' ``UNet2DOutput``) or a tuple is unwrapped.
    scheduler : EDMERKHeunScheduler
        Supplies ``sigma_data`` and ``prediction_type``.

    Returns
    -------
    callable
        ``D(x: [batch, *dims], sigma: [] or [batch]) -> [batch, *dims]`` in `x`'s dtype.
    """
    if not callable(model):
        raise TypeError(f"`model` must be callable F(x, t), got {type(model).__name__}.")
    if not isinstance(scheduler, EDMERKHeunScheduler):
        raise TypeError(f"`scheduler` must be an EDMERKHeunScheduler, got "
                        f"{type(scheduler).__name__}.")

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        s = _as_level(sigma, x)
        out = model(scheduler.precondition_inputs(x, s), scheduler.precondition_noise(s))
        return scheduler.precondition_outputs(x, unwrap_output(out), s)

    return denoiser
