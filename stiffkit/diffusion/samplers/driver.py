"""The sampling driver: one loop for every registered solver, with ERK-Guid.

The ODE is ``dx/dσ = f(x; σ) = (x − D(x; σ))/σ`` with σ running down a grid
``σ_0 > … > σ_N`` (docs/conventions.md, eq. (3)); a step has size
``h_i = σ_i − σ_{i+1} > 0``. When the grid ends at ``σ_N = 0`` the last step is an Euler
step, ``x_N = D(x_{N−1}; σ_{N−1})``, as in EDM; otherwise every step is of the chosen
solver.

Per step the driver evaluates ``f`` at the step's start, calls the solver's step function
(:mod:`~stiffkit.diffusion.samplers.solvers`) with the options the solver declares, applies
ERK-Guid with the pair the step returned (no extra evaluation), records, calls back and
advances the progress bar. It knows no solver by name: a registered one gets the same loop.

:func:`sample` and :func:`sample_final` take the same arguments, written once (with their
defaults and checks) in one private function; each is a thin wrapper over it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, ParamSpec, TypeVar

import torch
from torch import Tensor

from stiffkit._utils import (
    broadcast_per_sample,
    check_batch,
    check_callable,
    check_finite,
    check_tensor,
    flat_norm,
    secant_ratio,
)
from stiffkit._utils import progress as progress_bar
from stiffkit.diffusion.erk import ErkCorrection, ErkGuid, _correction, _pair_coefficient
from stiffkit.diffusion.oracle import OracleSpec, resolve_oracle
from stiffkit.diffusion.samplers.blowup import BLOWUP_FACTOR, _raise_non_finite
from stiffkit.diffusion.samplers.drift import Denoiser, denoise, pf_ode_drift, to_d
from stiffkit.diffusion.samplers.euler import EULER, euler_step
from stiffkit.diffusion.samplers.solvers import Solver, get_solver, list_solvers
from stiffkit.diffusion.schedules import check_sigmas
from stiffkit.integrate.trajectory import Trajectory

__all__ = ["sample", "sample_final", "Callback"]

#: Called after every step with ``i, sigma, sigma_next, x, denoised, drift, x_next, rho, beta``.
Callback = Callable[[dict[str, Any]], None]
_DEFAULT_ERK = ErkGuid()
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _erk_config(erk: ErkGuid | None, w_stiff: float, w_con: float, eps: float | None,
                oracle: OracleSpec, correction_sign: float | None) -> ErkGuid:
    """Return `erk`, or the :class:`ErkGuid` of the loose keywords (never both)."""
    loose = ErkGuid(w_stiff=w_stiff, w_con=w_con, correction_sign=correction_sign, eps=eps,
                    oracle=oracle)
    if erk is None:
        return loose
    if not isinstance(erk, ErkGuid):
        raise TypeError(f"`erk` must be an ErkGuid, got {type(erk).__name__}.")
    if loose != _DEFAULT_ERK:
        raise TypeError("Give ERK-Guid's settings as `erk=ErkGuid(...)` or as keywords, not both.")
    return erk


def _check_inputs(denoiser: Denoiser, x_init: Tensor) -> None:
    if not callable(denoiser):
        raise TypeError(f"`denoiser` must be callable D(x, sigma), got {type(denoiser).__name__}.")
    check_tensor(x_init, "x_init", min_ndim=2)
    check_batch(x_init, "x_init")
    check_finite(x_init, "x_init")


def _with_shorthands(solver_options: Mapping[str, Any] | None,
                     **shorthands: Any) -> Mapping[str, Any] | None:
    """Merge the option keywords given (not None) into `solver_options`, refusing both."""
    given = {key: value for key, value in shorthands.items() if value is not None}
    if not given:
        return solver_options
    if solver_options is None:
        return given
    if not isinstance(solver_options, Mapping):
        raise TypeError(
            f"`solver_options` must be a mapping, got {type(solver_options).__name__}."
        )
    twice = sorted(set(given) & set(solver_options))
    if twice:
        raise TypeError(f"Give `{twice[0]}` as a keyword or in `solver_options`, not both.")
    return {**solver_options, **given}


class _Run(NamedTuple):
    """A checked call of :func:`sample` / :func:`sample_final` (the grid is checked later)."""

    denoiser: Denoiser
    x_init: Tensor
    sigmas: Any
    solver: Solver
    options: dict[str, Any]
    erk: ErkGuid
    callback: Callback | None
    progress: bool


def _configure(
    denoiser: Denoiser,
    x_init: Tensor,
    sigmas,
    *,
    solver: str | Solver = "heun",
    erk: ErkGuid | None = None,
    w_stiff: float = 0.0,
    w_con: float = 0.0,
    eps: float | None = None,
    oracle: OracleSpec = None,
    correction_sign: float | None = None,
    solver_options: Mapping[str, Any] | None = None,
    r: float | None = None,
    max_order: int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> _Run:
    """Check the arguments of :func:`sample` (documented there): the one place they live.

    `r` and `max_order` are shorthands for ``solver_options={"r": ...}`` /
    ``{"max_order": ...}``; None means not given.
    """
    erk = _erk_config(erk, w_stiff, w_con, eps, oracle, correction_sign)
    _check_inputs(denoiser, x_init)
    if callback is not None:
        check_callable(callback, "callback")
    spec = get_solver(solver)
    options = spec.resolve_options(_with_shorthands(solver_options, r=r, max_order=max_order))
    if erk.needs_pair and not spec.has_pair:
        with_pair = tuple(n for n in list_solvers() if get_solver(n).has_pair)
        raise ValueError(
            f"`solver={spec.name!r}` has no embedded pair: ERK-Guid needs one of {with_pair}."
        )
    return _Run(denoiser, x_init, sigmas, spec, options, erk, callback, bool(progress))


def _takes_arguments_of(
    configure: Callable[_P, _Run],
) -> Callable[[Callable[[_Run], _R]], Callable[_P, _R]]:
    """Make a function of a :class:`_Run` callable with `configure`'s arguments.

    The wrapper binds its arguments to `configure`'s signature (an unexpected keyword is a
    ``TypeError`` naming the public function), runs `configure` and hands the result to
    the wrapped function; it shows `configure`'s signature (``help``, autodoc).
    """
    signature = inspect.signature(configure)

    def decorate(body: Callable[[_Run], _R]) -> Callable[_P, _R]:
        @functools.wraps(body)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as err:
                raise TypeError(f"{body.__name__}() {err}") from None
            return body(configure(*bound.args, **bound.kwargs))

        returns = inspect.signature(body).return_annotation
        wrapper.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _integrate(run: _Run, record: bool):
    """The sampling loop shared by :func:`sample` and :func:`sample_final`."""
    denoiser, x_init, solver, options, erk = (run.denoiser, run.x_init, run.solver,
                                              run.options, run.erk)
    callback = run.callback
    grid = check_sigmas(run.sigmas)
    sig = grid.to(device=x_init.device, dtype=x_init.dtype)
    if not bool((sig[1:] < sig[:-1]).all()):
        raise ValueError(f"`sigmas` is not strictly decreasing in {x_init.dtype}.")
    drift_fn = pf_ode_drift(denoiser)
    oracle_fn = resolve_oracle(erk.oracle, drift_fn)
    sign = erk.sign_for(solver.correction_sign if solver.has_pair else -1.0)
    diagnose = record or callback is not None  # someone reads ρ̂ without a correction
    N = sig.shape[0] - 1
    nfe = 0
    # A probability-flow ODE contracts towards the data: a state far beyond its start blew up.
    limit = BLOWUP_FACTOR * max(float(x_init.abs().max()), 1.0)

    def evaluate(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        den = denoise(denoiser, x, s)
        nfe += 1
        return den, to_d(x, den, s)

    def drift(s: Tensor, x: Tensor) -> Tensor:
        return evaluate(x, s)[1]

    rec: dict[str, list[Tensor]] = {k: [] for k in ("states", "drifts", "pair_states",
                                                    "pair_drifts")}
    diag: dict[str, list[Tensor]] = {k: [] for k in ("erk_rho", "erk_beta",
                                                     "erk_correction_norm")}
    nan_state = torch.full_like(x_init, float("nan"))
    nan_batch = torch.full(x_init.shape[:1], float("nan"), dtype=x_init.dtype,
                           device=x_init.device)
    zero_batch = torch.zeros_like(nan_batch)

    # Without a reader of the diagnostics the correction is its coefficient alone.
    fast = erk.corrects and erk.eps is None and oracle_fn is None and not diagnose
    lands_on_zero = (sig[1:] == 0).tolist()  # one host transfer, not one per step
    x, carry = x_init, None
    steps = progress_bar(range(N), enabled=run.progress, desc=f"{solver.name} sampler",
                         unit="step")
    for i in steps:
        s, s_next = sig[i], sig[i + 1]
        den, f = evaluate(x, s)
        if lands_on_zero[i]:  # the drift is singular at σ = 0: an Euler step lands on D
            out = euler_step(drift, x, f, s, s_next, carry)
        else:
            out = solver.step(drift, x, f, s, s_next, carry, **options)
        x_next, pair, carry = out.x_next, out.pair, out.carry

        # ERK-Guid: the pair is free; ρ̂ is recorded even when no correction is applied.
        rho_diag, beta_diag, norm_diag = nan_batch, zero_batch, zero_batch
        delta = None  # what ERK-Guid added to x_next
        if pair is not None and fast:
            coef = _pair_coefficient(f, pair.h, pair.dx, pair.df, w_stiff=erk.w_stiff,
                                     w_con=erk.w_con, sign=sign, state=x).coef
            delta = broadcast_per_sample(coef, pair.df) * pair.df  # = _correction's delta
        elif pair is not None and not erk.needs_pair:
            if diagnose:
                rho_diag = secant_ratio(pair.df, pair.dx, erk.eps,
                                        scale=flat_norm(x) if erk.eps is None else None)
        elif pair is not None:
            kw = dict(w_stiff=erk.w_stiff, w_con=erk.w_con, sign=sign, eps=erk.eps)
            if erk.eps is None:
                kw["state"] = x
            if oracle_fn is not None:
                rho, v = oracle_fn(s, x)
                corr: ErkCorrection = _correction(f, pair.h, rho=rho, v=v, **kw)
            else:
                corr = _correction(f, pair.h, dx=pair.dx, df=pair.df, **kw)
            if erk.corrects:
                delta = corr.delta
            rho_diag, beta_diag, norm_diag = corr.rho, corr.beta, corr.delta_norm
        if delta is not None:
            x_next = x_next + delta
        lo, hi = torch.aminmax(x_next)  # NaN / Inf, or a blow-up (1e64 is finite)
        if not (-limit <= float(lo) and float(hi) <= limit):
            _raise_non_finite(i, s, s_next, den, x_next,
                              None if delta is None else x_next - delta, erk, limit)

        if record:
            point = out.point if out.point is not None else (nan_state, nan_state)
            for key, value in zip(rec, (x, f, *point)):
                rec[key].append(value)
            for key, value in zip(diag, (rho_diag, beta_diag, norm_diag)):
                diag[key].append(value)
        if callback is not None:
            callback(dict(i=i, sigma=s, sigma_next=s_next, x=x, denoised=den, drift=f,
                          x_next=x_next, rho=rho_diag, beta=beta_diag))
        x = x_next
    if record:
        rec["states"].append(x)
    return x, sig, rec, diag, nfe, drift_fn


def _step_boundaries(solver: Solver, options: Mapping[str, Any], sig: Tensor) -> Tensor:
    """The real stability boundary of every step taken on `sig` ``[N + 1]``, float64 ``[N]``."""
    grid = sig.detach().to(device="cpu", dtype=torch.float64)
    ends_at_zero = float(grid[-1]) == 0
    positive = grid[:-1] if ends_at_zero else grid
    parts = [solver.boundaries(positive, **options) if positive.shape[0] > 1
             else torch.empty(0, dtype=torch.float64)]
    if ends_at_zero:
        parts.append(EULER.boundaries(grid[-2:]))
    return torch.cat(parts)


# Both are called as ``f(denoiser, x_init, sigmas, **keywords)``: the decorator gives them
# the signature of :func:`_configure`, where every keyword and its default is written once.
@_takes_arguments_of(_configure)
def sample(run: _Run) -> Trajectory:
    """Sample the probability-flow ODE from `x_init` down the grid `sigmas`, with ERK-Guid.

    Parameters
    ----------
    denoiser : callable
        ``D(x, sigma) -> x̂₀`` with ``x: [batch, *dims]`` and ``sigma`` a 0-d tensor of the
        state's dtype; exact mixtures, learned models and :class:`Guided` all qualify.
    x_init : Tensor, [batch, *dims]
        The state at ``sigmas[0]``, already scaled (``σ_0 · noise``, or exact samples of
        ``p_{σ_0}``; see :mod:`stiffkit.diffusion.noise`). float32 or float64.
    sigmas : Tensor or sequence, [N + 1]
        Strictly decreasing levels, positive except a possible final 0
        (:func:`edm_sigmas`).
    solver : {"heun", "euler", "dpm2", "deis"} or Solver
        EDM's Heun (``2N − 1`` evaluations on an EDM grid), Euler, DPM-Solver-2 (option
        ``r``) or DEIS's multistep (options ``max_order`` and ``variant``, ``"rhoab"`` —
        the default — or ``"tab"``: :func:`~stiffkit.diffusion.samplers.deis_coefficients`);
        any registered name (:func:`~stiffkit.diffusion.samplers.register_solver`) or a
        :class:`Solver`.
    erk : ErkGuid, optional
        ERK-Guid's settings as one value; or give them as the keywords below (not both).
    w_stiff, w_con, eps, oracle, correction_sign
        The fields of :class:`~stiffkit.diffusion.erk.ErkGuid` (strength ≥ 0, where 0
        reproduces the plain solver bit for bit; gate; pair guard; exact-eigenpair oracle;
        sign override of :data:`DEFAULT_CORRECTION_SIGN`).
    solver_options : mapping, optional
        Options of the solver (:attr:`Solver.options`; unset ones take its defaults), e.g.
        ``{"r": 0.3}`` for ``"dpm2"``, ``{"variant": "tab"}`` for ``"deis"``. An option the
        solver does not take is a ``ValueError`` naming it.
    r : float, optional
        Shorthand for ``solver_options={"r": r}``: DPM-Solver-2's intermediate level
        exponent, in (0, 1] (default :data:`DPM2_R` = 0.5).
    max_order : int, optional
        Shorthand for ``solver_options={"max_order": max_order}``: DEIS's number of drifts
        in the extrapolation, 1 … 4 (default :data:`DEIS_MAX_ORDER` = 4).
    callback : callable, optional
        Called after every step with a dict: ``i, sigma, sigma_next, x, denoised, drift,
        x_next, rho, beta``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Trajectory
        ``times`` = the grid, ``states`` ``[N + 1, batch, *dims]`` from `x_init` to the sample
        (``states[-1]``), ``drifts`` at each step's start, the Heun pair (``pair_states`` /
        ``pair_drifts``: the Euler point at ``σ_{i+1}``; NaN where a step has none), the
        drift ``f`` for reference analyses, ``nfe`` = denoiser calls, the solver's
        ``tableau`` (Heun, Euler; None for DPM-Solver-2 and DEIS), ``stability_boundaries``
        ``[N]`` (each step's real stability interval, the final Euler step's included) and
        per-step diagnostics ``[N, batch]``: ``erk_rho`` (the ρ used or estimated at step i;
        NaN without a pair), ``erk_beta`` (the gate), ``erk_correction_norm``.
        :func:`stiffkit.analyze` works on it directly.

    Raises
    ------
    ValueError
        Naming the argument: a bad grid, state, ERK-Guid setting or solver option; an
        option the solver does not take; ERK-Guid with a solver that has no pair.
    TypeError
        An unexpected keyword, a non-callable denoiser, ERK-Guid given both ways, an option
        given both as a keyword and in `solver_options`.

    Notes
    -----
    Sample ``i`` depends on ``x_init[i]`` alone mathematically, but not bit for bit on the
    batch: a batched denoiser's matrix products round differently for different batch
    shapes (the BLAS kernel depends on the number of rows). A sample therefore agrees
    across batch sizes to roundoff amplified by the sampler, which the tests hold to
    1e-9 (float64) and 3e-4 (float32) on the 2-D toy world. Measured there (prefixes of
    1–1024 of 4096 samples, 8 and 16 steps, every solver with and without ERK-Guid, CFG and
    autoguidance): at most 7e-11 with the exact float64 mixtures and 4e-5 with the float32
    learned models (DEIS + ERK-Guid + CFG at 8 steps) on one CPU, 1.2e-4 on another (AMD
    EPYC, AVX2 kernels) — the float32 spread depends on the CPU's kernels. A quick run of
    an experiment, whose initial states are bitwise the first of a full run's
    (:func:`stiffkit.diffusion.noise.run_seeds`), matches it to that level, not exactly.
    """
    x, sig, rec, diag, nfe, drift = _integrate(run, record=True)
    spec = run.solver
    pair_states = torch.stack(rec["pair_states"]) if spec.records_pair else None
    return Trajectory(
        times=sig,
        states=torch.stack(rec["states"]),
        drifts=torch.stack(rec["drifts"]),
        embedded=pair_states,
        pair_states=pair_states,
        pair_drifts=torch.stack(rec["pair_drifts"]) if spec.records_pair else None,
        f=drift,
        tableau=spec.tableau,
        stability_boundaries=_step_boundaries(spec, run.options, sig),
        diagnostics={k: torch.stack(v) for k, v in diag.items()},
        nfe=nfe,
        time_name="sigma",
    )


@_takes_arguments_of(_configure)
def sample_final(run: _Run) -> tuple[Tensor, int]:
    """Like :func:`sample` but keep nothing but the result: return ``(x_N, nfe)``.

    Takes :func:`sample`'s arguments and returns ``sample(...).states[-1]`` bit for bit,
    with the same ``nfe``. Memory stays O(batch · dims) whatever the number of steps, and
    without a callback the unused ρ̂ diagnostic is not computed (for throughput runs).

    Returns
    -------
    x : Tensor, [batch, *dims]
        The sample at ``sigmas[-1]``.
    nfe : int
        Denoiser calls.
    """
    x, _, _, _, nfe, _ = _integrate(run, record=False)
    return x, nfe
