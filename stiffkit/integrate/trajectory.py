"""The record of an integration, shared by every stiffkit integrator and sampler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stiffkit._utils import check_callable, check_finite, check_int, check_output, check_tensor
from stiffkit.tableaux import ButcherTableau, get_tableau, real_stability_interval

__all__ = ["Trajectory"]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """States, drifts and embedded-pair data along one integration.

    Produced by :func:`stiffkit.solve_fixed`, :func:`stiffkit.solve_adaptive` (accepted
    steps) and the diffusion samplers; consumed by :func:`stiffkit.analyze`.

    Attributes
    ----------
    times : Tensor, shape [N + 1]
        Time grid ``t_0 … t_N`` (for diffusion: the noise levels ``σ_0 > … > σ_N``).
    states : Tensor, shape [N + 1, batch, *dims]
        ``x_0 … x_N``; ``states[-1]`` is the final state.
    drifts : Tensor, shape [N, batch, *dims]
        ``f(t_n, x_n)`` for every step's starting point (stage 1 of step n).
    final_drift : Tensor or None, shape [batch, *dims]
        ``f(t_N, x_N)`` when it was computed anyway (FSAL methods), else None.
    embedded : Tensor or None, shape [N, batch, *dims]
        Embedded solution ``x̂_{n+1}`` of each step (tableaux with ``b_hat``).
    pair_states, pair_drifts : Tensor or None, shape [N, batch, *dims]
        A second point at time ``t_{n+1}`` with its drift, produced by step n at no
        extra cost: the last stage at abscissa ``c = 1`` whose argument differs from
        ``x_{n+1}`` (Heun: the Euler point; DOPRI5: stage 6; DOP853: stage 12). Paired
        with ``(x_{n+1}, f(t_{n+1}, x_{n+1}))`` it gives the stiffness estimate of
        Proposition 1 / Hairer's stage difference.
    stage_k, stage_g : Tensor or None, shape [N, s, batch, *dims]
        All stages and stage arguments, when recorded.
    f : callable or None
        The drift ``f(t, x)`` that was integrated, for reference computations.
    tableau : ButcherTableau or None
        The Runge–Kutta method of the steps (the Heun and Euler samplers: theirs), or None
        when the steps are not one fixed Butcher tableau (DPM-Solver-2, DEIS, saved output
        of another solver). A registered name given on construction is resolved to its
        tableau; an unknown name raises.
    stability_boundaries : Tensor or None, shape [N]
        The real stability interval ``r_n`` of each step's update, in the trajectory's
        time variable: on the linear test equation ``x' = λx`` the step's amplification
        (for a multistep update, the spectral radius of its step map) is at most 1 for
        ``z = (t_{n+1} − t_n) λ ∈ [−r_n, 0]`` and exceeds 1 just beyond ``−r_n``. Filled by
        the diffusion samplers, whose steps vary; when None, :attr:`step_boundaries` falls
        back to the tableau's :func:`~stiffkit.tableaux.real_stability_interval`.
    diagnostics : dict of str to Tensor
        Per-step, per-sample quantities ``[N, batch]`` (e.g. the ERK-Guid gate).
    nfe : int
        Number of evaluations of ``f`` spent.
    time_name : str
        What the time variable is called ("t", or "sigma" for diffusion).

    Raises
    ------
    TypeError
        If `times`, `states` or `drifts` is not a floating tensor, a diagnostic not a tensor,
        or `diagnostics` not a dict.
    ValueError
        If the shapes disagree, `times` is not finite and strictly monotone, or `nfe` is not a
        non-negative integer.
    """

    times: Tensor
    states: Tensor
    drifts: Tensor
    final_drift: Tensor | None = None
    embedded: Tensor | None = None
    pair_states: Tensor | None = None
    pair_drifts: Tensor | None = None
    stage_k: Tensor | None = None
    stage_g: Tensor | None = None
    f: Callable[[Tensor, Tensor], Tensor] | None = field(default=None, repr=False)
    tableau: ButcherTableau | None = None
    stability_boundaries: Tensor | None = None
    diagnostics: dict[str, Tensor] = field(default_factory=dict, repr=False)
    nfe: int = 0
    time_name: str = "t"

    def __post_init__(self) -> None:
        check_tensor(self.times, "times", min_ndim=0)
        check_tensor(self.states, "states", min_ndim=2)
        check_tensor(self.drifts, "drifts", min_ndim=1)
        if self.times.ndim != 1 or self.times.shape[0] < 1:
            raise ValueError(f"`times` must be 1-D, got shape {tuple(self.times.shape)}.")
        check_finite(self.times, "times")
        d = self.times[1:] - self.times[:-1]
        if d.numel() and not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError("`times` must be strictly monotone (increasing or decreasing).")
        n = self.times.shape[0] - 1
        if self.states.shape[0] != n + 1:
            raise ValueError(
                f"`states` must have {n + 1} entries along dim 0 (one per time), "
                f"got {self.states.shape[0]}."
            )
        per_step = {
            "drifts": self.drifts,
            "embedded": self.embedded,
            "pair_states": self.pair_states,
            "pair_drifts": self.pair_drifts,
        }
        for name, val in per_step.items():
            if val is not None and tuple(val.shape) != (n, *self.states.shape[1:]):
                raise ValueError(
                    f"`{name}` must have shape {(n, *self.states.shape[1:])}, "
                    f"got {tuple(val.shape)}."
                )
        if not isinstance(self.diagnostics, dict):
            raise TypeError(f"`diagnostics` must be a dict of str to Tensor, got "
                            f"{type(self.diagnostics).__name__}.")
        check_int(self.nfe, "nfe", 0)
        if not isinstance(self.time_name, str):
            raise TypeError(f"`time_name` must be a string, got {type(self.time_name).__name__}.")
        for name, val in self.diagnostics.items():
            if not isinstance(val, Tensor) or val.ndim == 0:
                raise TypeError(f"diagnostic `{name}` must be a tensor [N, batch], got "
                                f"{type(val).__name__}.")
            if val.shape[0] != n:
                raise ValueError(f"diagnostic `{name}` must have {n} rows, got {val.shape[0]}.")
        if self.tableau is not None and not isinstance(self.tableau, ButcherTableau):
            object.__setattr__(self, "tableau", get_tableau(self.tableau))
        b = self.stability_boundaries
        if b is not None:
            if not isinstance(b, Tensor) or not b.is_floating_point() or tuple(b.shape) != (n,):
                got = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise ValueError(
                    f"`stability_boundaries` must be a floating tensor of shape ({n},), got {got}."
                )
            if not bool((b > 0).all()):
                raise ValueError("`stability_boundaries` must be positive (no NaN).")

    @classmethod
    def from_states(
        cls,
        times,
        states: Tensor,
        f: Callable[[Tensor, Tensor], Tensor] | None = None,
        *,
        tableau: ButcherTableau | str | None = None,
        time_name: str = "t",
    ) -> Trajectory:
        """Wrap states saved by another solver (e.g. ``torchdiffeq.odeint`` output).

        Parameters
        ----------
        times : Tensor or sequence, [N + 1]
            The times of `states`.
        states : Tensor, [N + 1, batch, *dims]
            Solution at `times`.
        f : callable, optional
            The drift; when given, the drifts at ``times[:-1]`` are evaluated (N extra
            evaluations, counted in ``nfe``) so reference analyses can run. There is no
            pair data, so :func:`stiffkit.analyze` leaves ``rho_hat`` empty — use
            :class:`stiffkit.analysis.monitor.StiffnessMonitor` to record it during the solve.
        tableau : ButcherTableau or str, optional
            The method of each saved step, only if every interval between saved times is
            one step of it (not for output times of an adaptive or sub-stepping solver).
        time_name : str
            What the time variable is called.

        Raises
        ------
        TypeError
            If `states` is not a floating tensor, `times` not numeric or `f` not callable.
        ValueError
            If `states` is not ``[N + 1, batch, *dims]`` with a non-empty batch and finite
            values, or `times` is not a finite, strictly monotone ``[N + 1]`` grid.
        """
        check_tensor(states, "states", min_ndim=2)
        if states.shape[1] == 0:
            raise ValueError(f"`states` has an empty batch (shape {tuple(states.shape)}).")
        check_finite(states, "states")
        if isinstance(times, Tensor) and times.is_complex():
            raise TypeError("`times` must be real.")
        try:
            times = torch.as_tensor(times, dtype=states.dtype, device=states.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`times` must be a sequence or tensor of numbers, got {times!r}.") \
                from err
        if times.ndim == 1 and times.shape[0] != states.shape[0]:
            raise ValueError(f"`states` must have {times.shape[0]} entries along dim 0 (one per "
                             f"time), got {states.shape[0]}.")
        if f is not None:
            check_callable(f, "f")
            drifts = torch.stack([check_output(f(times[n], states[n]), states[n])
                                  for n in range(states.shape[0] - 1)])
            nfe = states.shape[0] - 1
        else:
            drifts = torch.full_like(states[:-1], float("nan"))
            nfe = 0
        return cls(times=times, states=states, drifts=drifts, f=f, tableau=tableau, nfe=nfe,
                   time_name=time_name)

    @property
    def num_steps(self) -> int:
        """Number of steps N."""
        return self.times.shape[0] - 1

    @property
    def batch_size(self) -> int:
        """Number of samples."""
        return self.states.shape[1]

    @property
    def steps(self) -> Tensor:
        """Signed step sizes ``t_{n+1} − t_n``, shape [N]."""
        return self.times[1:] - self.times[:-1]

    @property
    def step_boundaries(self) -> Tensor | None:
        """Real stability boundary of each step, float64 ``[N]``, or None if unknown.

        :attr:`stability_boundaries` when given, else the tableau's real stability interval
        for every step, else None.
        """
        if self.stability_boundaries is not None:
            return self.stability_boundaries.detach().to(device="cpu", dtype=torch.float64)
        if self.tableau is not None:
            boundary = real_stability_interval(self.tableau)
            return torch.full((self.num_steps,), boundary, dtype=torch.float64)
        return None

    @property
    def next_drifts(self) -> Tensor | None:
        """``f(t_{n+1}, x_{n+1})`` for n = 0 … N−1, or None if the last one is unknown."""
        if self.final_drift is None:
            return None
        return torch.cat([self.drifts[1:], self.final_drift[None]], dim=0)
