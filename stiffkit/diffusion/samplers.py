"""Probability-flow ODE samplers with ERK-Guid: Heun (EDM), Euler, DPM-Solver-2 and DEIS.

The ODE is ``dx/dσ = f(x; σ) = (x − D(x; σ))/σ`` with σ running down a grid
``σ_0 > … > σ_N`` (DESIGN.md §2); a step has size ``h_i = σ_i − σ_{i+1} > 0``. When the grid
ends at ``σ_N = 0`` the last step is an Euler step, ``x_N = D(x_{N−1}; σ_{N−1})``, as in
EDM; otherwise every step is of the chosen solver.

ERK-Guid (:mod:`stiffkit.diffusion.erk`) uses the embedded pair each solver already has:

* ``heun`` — the previous step's Euler point ``(x_E, f(x_E; σ_i))`` and ``(x_i, f_i)``, both
  at σ_i (the EDM2 reference); no correction on the first step (no pair yet) nor on the
  final Euler step; **zero extra evaluations**.
* ``dpm2`` — inside the step, ``(x_i, f_i)`` and the midpoint ``(x_mid, f(x_mid; σ_mid))``
  (two different σ, so ρ̂ also sees ∂f/∂σ); applied from the first step.
* ``deis`` — across steps, ``(x_i, f_i)`` and ``(x_{i−1}, f_{i−1})`` with the previous step's
  size; the reference code *adds* the correction (``correction_sign=+1``) — the opposite
  sign is not explained upstream, so it is an option here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_finite, check_int, check_tensor, flat_norm
from stiffkit.diffusion.erk import (
    ErkCorrection,
    OracleSpec,
    dominant_pair_oracle,
    erk_guid_correction,
)
from stiffkit.diffusion.schedules import check_sigmas
from stiffkit.estimators.pair import PAIR_EPS
from stiffkit.integrate.trajectory import Trajectory

__all__ = [
    "SOLVERS",
    "DEFAULT_CORRECTION_SIGN",
    "Denoiser",
    "pf_ode_drift",
    "sample",
    "sample_final",
    "reference_sample",
    "deis_coefficients",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]

SOLVERS = ("heun", "euler", "dpm2", "deis")
#: Sign of the ERK-Guid correction per solver, as in the reference implementation.
DEFAULT_CORRECTION_SIGN = {"heun": -1.0, "dpm2": -1.0, "deis": +1.0}
#: Catalogue tableau of each solver's steps (for stability boundaries in ``analyze``).
_TABLEAU = {"heun": "heun_euler", "euler": "euler", "dpm2": "dpm2", "deis": "deis"}
#: DPM-Solver-2's intermediate point ``σ_mid = σ_{i+1}^r σ_i^{1−r}``.
DPM2_R = 0.5
#: DEIS's maximal number of drifts in its polynomial extrapolation.
DEIS_MAX_ORDER = 4


def pf_ode_drift(denoiser: Denoiser) -> Callable[[Tensor, Tensor], Tensor]:
    """Return the probability-flow drift ``f(σ, x) = (x − D(x; σ))/σ`` (torchdiffeq's order)."""

    def drift(sigma: Tensor, x: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma
        return (x - denoiser(x, sigma)) / s

    return drift


def _call(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    d = denoiser(x, sigma)
    if not isinstance(d, Tensor) or d.shape != x.shape:
        shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
        raise ValueError(f"`denoiser` must return the state's shape {tuple(x.shape)}, got {shape}.")
    if d.dtype != x.dtype:
        raise ValueError(f"`denoiser` returned dtype {d.dtype} for a state of dtype {x.dtype}.")
    return d


def deis_coefficients(sigmas: list[float], sigma_next: float) -> list[float]:
    """Return DEIS (tAB) weights ``C_j = ∫_{σ_i}^{σ_next} ℓ_j(σ) dσ`` for drifts at `sigmas`.

    ``sigmas = [σ_i, σ_{i−1}, …]`` are the levels of the current and previous drifts and
    ``ℓ_j`` their Lagrange basis polynomials, so ``x_next = x_i + Σ_j C_j f_j`` integrates
    the polynomial extrapolation of the drift exactly (Zhang & Chen 2023, "tAB"; for the VE /
    EDM parametrisation the exponential integrator's linear part vanishes). One level gives
    Euler, ``C = σ_next − σ_i``.
    """
    P = np.polynomial.Polynomial
    coeffs = []
    for j, sj in enumerate(sigmas):
        basis = P([1.0])
        for m, sm in enumerate(sigmas):
            if m != j:
                basis = basis * P([-sm, 1.0]) / (sj - sm)
        antider = basis.integ()
        coeffs.append(float(antider(sigma_next) - antider(sigmas[0])))
    return coeffs


def _resolve_oracle(oracle: OracleSpec, drift):
    if oracle is None or callable(oracle):
        return oracle
    if oracle in ("dense", "power", "arpack"):
        return dominant_pair_oracle(drift, oracle)
    raise ValueError(f"`oracle` must be None, 'dense', 'power', 'arpack' or a callable, got {oracle!r}.")


def _check_args(denoiser, x_init, solver, w_stiff, w_con, eps, correction_sign, r, max_order):
    if not callable(denoiser):
        raise TypeError(f"`denoiser` must be callable D(x, sigma), got {type(denoiser).__name__}.")
    check_tensor(x_init, "x_init", min_ndim=2)
    check_finite(x_init, "x_init")
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
    for name, val in (("w_stiff", w_stiff), ("w_con", w_con)):
        check_finite(float(val), name)
    if w_stiff < 0:
        raise ValueError(f"`w_stiff` must be non-negative, got {w_stiff}.")
    if not eps > 0:
        raise ValueError(f"`eps` must be positive, got {eps}.")
    if correction_sign is not None and correction_sign not in (-1, 1):
        raise ValueError(f"`correction_sign` must be -1, +1 or None, got {correction_sign!r}.")
    if not 0 < r <= 1:
        raise ValueError(f"`r` must lie in (0, 1], got {r}.")
    if check_int(max_order, "max_order") > 4:
        raise ValueError(f"`max_order` must be an integer in [1, 4], got {max_order!r}.")


def _integrate(
    denoiser: Denoiser,
    x_init: Tensor,
    sigmas,
    *,
    solver: str,
    w_stiff: float,
    w_con: float,
    eps: float,
    oracle: OracleSpec,
    correction_sign: float | None,
    r: float,
    max_order: int,
    callback: Callable[[dict[str, Any]], None] | None,
    progress: bool,
    record: bool,
):
    """The sampling loop shared by :func:`sample` and :func:`sample_final`."""
    _check_args(denoiser, x_init, solver, w_stiff, w_con, eps, correction_sign, r, max_order)
    grid = check_sigmas(sigmas)
    sig = grid.to(device=x_init.device, dtype=x_init.dtype)
    if not bool((sig[1:] < sig[:-1]).all()):
        raise ValueError(f"`sigmas` is not strictly decreasing in {x_init.dtype}.")
    if solver == "euler" and (w_stiff > 0 or oracle is not None):
        raise ValueError("`solver='euler'` has no embedded pair: ERK-Guid needs 'heun', 'dpm2' or 'deis'.")
    drift = pf_ode_drift(denoiser)
    oracle_fn = _resolve_oracle(oracle, drift)
    corrected = w_stiff > 0
    sign = DEFAULT_CORRECTION_SIGN.get(solver, -1.0) if correction_sign is None else float(correction_sign)
    N = sig.shape[0] - 1
    nfe = 0

    def evaluate(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        den = _call(denoiser, x, s)
        nfe += 1
        return den, (x - den) / s

    rec: dict[str, list[Tensor]] = {k: [] for k in ("states", "drifts", "pair_states", "pair_drifts")}
    diag: dict[str, list[Tensor]] = {k: [] for k in ("erk_rho", "erk_beta", "erk_correction_norm")}
    nan_state = torch.full_like(x_init, float("nan"))
    nan_batch = torch.full(x_init.shape[:1], float("nan"), dtype=x_init.dtype, device=x_init.device)
    zero_batch = torch.zeros_like(nan_batch)

    x = x_init
    pair: tuple[Tensor, Tensor] | None = None  # Heun: previous Euler point, at σ_i
    history: list[tuple[float, Tensor, Tensor]] = []  # DEIS: (σ_j, x_j, f_j), newest last
    steps = range(N)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{solver} sampler", unit="step")
    for i in steps:
        s, s_next = sig[i], sig[i + 1]
        h = s - s_next
        den, f = evaluate(x, s)
        final_euler = bool(s_next == 0) or solver == "euler"
        pair_out = (nan_state, nan_state)
        dx = df = None  # the pair used by ERK-Guid at this step
        h_erk = h
        if final_euler:
            x_next = x + (s_next - s) * f
        elif solver == "heun":
            x_e = x + (s_next - s) * f
            _, f_e = evaluate(x_e, s_next)
            x_next = x + (s_next - s) * (0.5 * f + 0.5 * f_e)
            if pair is not None:
                dx, df = x - pair[0], f - pair[1]
            pair = pair_out = (x_e, f_e)
        elif solver == "dpm2":
            s_mid = s_next**r * s ** (1 - r)
            x_mid = x + (s_mid - s) * f
            _, f_mid = evaluate(x_mid, s_mid)
            x_next = x + (s_next - s) * ((1 / (2 * r)) * f_mid + (1 - 1 / (2 * r)) * f)
            dx, df = x - x_mid, f - f_mid
        else:  # deis
            hist = history[-(max_order - 1):] if max_order > 1 else []
            levels = [float(s)] + [float(h_[0]) for h_ in reversed(hist)]
            drifts = [f] + [h_[2] for h_ in reversed(hist)]
            coeffs = deis_coefficients(levels, float(s_next))
            x_next = x
            for c, fj in zip(coeffs, drifts):
                x_next = x_next + c * fj
            if history:
                s_prev, x_prev, f_prev = history[-1]
                dx, df = x - x_prev, f - f_prev
                h_erk = s_prev - s
        if solver == "deis":
            history.append((sig[i], x, f))
            history = history[-max(max_order - 1, 1):]

        # ERK-Guid: the pair is free; ρ̂ is recorded even when no correction is applied.
        rho_diag, beta_diag, norm_diag = nan_batch, zero_batch, zero_batch
        apply = not final_euler and (dx is not None) and (corrected or oracle_fn is not None)
        if dx is not None and not apply:
            rho_diag = flat_norm(df) / (flat_norm(dx) + eps)
        if apply:
            if oracle_fn is not None:
                rho, v = oracle_fn(s, x)
                corr: ErkCorrection = erk_guid_correction(
                    f, h_erk, w_stiff=w_stiff, w_con=w_con, rho=rho, v=v, sign=sign, eps=eps)
            else:
                corr = erk_guid_correction(
                    f, h_erk, w_stiff=w_stiff, w_con=w_con, dx=dx, df=df, sign=sign, eps=eps)
            if corrected:
                x_next = x_next + corr.delta
            rho_diag, beta_diag, norm_diag = corr.rho, corr.beta, corr.delta_norm

        if record:
            rec["states"].append(x)
            rec["drifts"].append(f)
            rec["pair_states"].append(pair_out[0])
            rec["pair_drifts"].append(pair_out[1])
            diag["erk_rho"].append(rho_diag)
            diag["erk_beta"].append(beta_diag)
            diag["erk_correction_norm"].append(norm_diag)
        if callback is not None:
            callback(dict(i=i, sigma=s, sigma_next=s_next, x=x, denoised=den, drift=f,
                          x_next=x_next, rho=rho_diag, beta=beta_diag))
        x = x_next
    if record:
        rec["states"].append(x)
    return x, sig, rec, diag, nfe, drift


def sample(
    denoiser: Denoiser,
    x_init: Tensor,
    sigmas,
    *,
    solver: str = "heun",
    w_stiff: float = 0.0,
    w_con: float = 0.0,
    eps: float = PAIR_EPS,
    oracle: OracleSpec = None,
    correction_sign: float | None = None,
    r: float = DPM2_R,
    max_order: int = DEIS_MAX_ORDER,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> Trajectory:
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
    solver : {"heun", "euler", "dpm2", "deis"}
        EDM's Heun (``2N − 1`` evaluations on an EDM grid), Euler, DPM-Solver-2 (``r``) or
        DEIS's tAB multistep (``max_order``).
    w_stiff : float
        ERK-Guid strength (≥ 0); 0 disables the correction and reproduces the plain solver
        bit for bit. :data:`~stiffkit.diffusion.erk.W_STIFF_THEORY` = 1/√6 cancels Heun's
        leading LTE on linear drifts.
    w_con : float
        Gate: the correction applies where ``ρ > w_con``.
    eps : float
        Denominator guard of the pair estimates (:data:`stiffkit.estimators.PAIR_EPS` = 1e-8, as upstream).
    oracle : {None, "dense", "power", "arpack"} or callable
        Replace ``ρ̂`` and ``v̂`` by the exact dominant eigenpair of ``∂f/∂x`` at the step's start
        (``callable(sigma, x) -> (|λ₁|, v₁)``, e.g. :func:`mixture_oracle`), on the same steps
        the pair would be used — separating the estimator's quality from the correction's.
        Costs Jacobian products (not counted in ``nfe``).
    correction_sign : {-1, +1}, optional
        Override the solver's sign (:data:`DEFAULT_CORRECTION_SIGN`).
    r : float
        DPM-Solver-2's intermediate level exponent.
    max_order : int
        DEIS's number of drifts in the extrapolation (1 … 4).
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
        drift ``f`` for reference analyses, ``nfe`` = denoiser calls, and per-step
        diagnostics ``[N, batch]``: ``erk_rho`` (the ρ used or estimated at step i; NaN
        without a pair), ``erk_beta`` (the gate), ``erk_correction_norm``.
        :func:`stiffkit.analyze` works on it directly.
    """
    x, sig, rec, diag, nfe, drift = _integrate(
        denoiser, x_init, sigmas, solver=solver, w_stiff=w_stiff, w_con=w_con, eps=eps,
        oracle=oracle, correction_sign=correction_sign, r=r, max_order=max_order,
        callback=callback, progress=progress, record=True)
    has_pair = solver == "heun"
    pair_states = torch.stack(rec["pair_states"]) if has_pair else None
    return Trajectory(
        times=sig,
        states=torch.stack(rec["states"]),
        drifts=torch.stack(rec["drifts"]),
        embedded=pair_states,
        pair_states=pair_states,
        pair_drifts=torch.stack(rec["pair_drifts"]) if has_pair else None,
        f=drift,
        tableau=_TABLEAU[solver],
        diagnostics={k: torch.stack(v) for k, v in diag.items()},
        nfe=nfe,
        time_name="sigma",
    )


def sample_final(denoiser: Denoiser, x_init: Tensor, sigmas, **kwargs) -> tuple[Tensor, int]:
    """Like :func:`sample` but keep nothing but the result: return ``(x_N, nfe)``.

    Memory stays O(batch · dims) whatever the number of steps (for throughput runs).
    """
    kwargs.setdefault("solver", "heun")
    defaults = dict(w_stiff=0.0, w_con=0.0, eps=PAIR_EPS, oracle=None, correction_sign=None,
                    r=DPM2_R, max_order=DEIS_MAX_ORDER, callback=None, progress=False)
    unknown = set(kwargs) - set(defaults) - {"solver"}
    if unknown:
        raise TypeError(f"sample_final() got unexpected keyword arguments {sorted(unknown)}.")
    defaults.update(kwargs)
    x, _, _, _, nfe, _ = _integrate(denoiser, x_init, sigmas, record=False, **defaults)
    return x, nfe


#: Steps of the fixed-grid RK4 reference (EDM grid, ρ = 7); 64 → 128 changes tree
#: endpoints by ~1e-6 on average (measured), far below any sampler's error.
REFERENCE_STEPS = 128


def reference_sample(
    denoiser: Denoiser,
    x_init: Tensor,
    sigmas,
    *,
    method: str = "rk4",
    num_steps: int = REFERENCE_STEPS,
    rtol: float = 1e-7,
    atol: float = 1e-9,
) -> Tensor:
    """Return a converged solve of the same ODE from the same start (for endpoint errors).

    Integrates ``dx/dσ = f`` from ``sigmas[0]`` to the last positive level ``σ_end``, then —
    if the grid ends at 0 — takes the same final Euler step as the samplers
    (``x = D(x; σ_end)``), so the difference to a sampler's output is its integration error
    alone.

    Parameters
    ----------
    method : {"rk4", "dopri5"}
        ``num_steps`` RK4 steps on an EDM grid (ρ = 7) from ``sigmas[0]`` to ``σ_end``, in the
        state's dtype; or torchdiffeq's adaptive ``dopri5`` at (`rtol`, `atol`) in float64 —
        exact to tolerance but slow on stiff batches, since torchdiffeq shares one step size
        across the batch.
    """
    from stiffkit.diffusion.schedules import edm_sigmas
    from stiffkit.integrate.rk import solve_fixed

    grid = check_sigmas(sigmas)
    check_tensor(x_init, "x_init", min_ndim=2)
    check_finite(x_init, "x_init")
    drift = pf_ode_drift(denoiser)
    ends_at_zero = float(grid[-1]) == 0
    end = grid[-2] if ends_at_zero else grid[-1]
    if method == "rk4":
        num_steps = check_int(num_steps, "num_steps")
        fine = edm_sigmas(num_steps + 1, float(end), float(grid[0]))[:-1]
        x = solve_fixed(drift, x_init.detach(), fine.to(x_init.dtype), "rk4").states[-1]
    elif method == "dopri5":
        import torchdiffeq

        def f64(sigma: Tensor, y: Tensor) -> Tensor:
            return drift(sigma.to(x_init.dtype), y.to(x_init.dtype)).to(torch.float64)

        ts = torch.stack([grid[0], end]).to(torch.float64)
        x = torchdiffeq.odeint(f64, x_init.detach().to(torch.float64), ts, rtol=rtol,
                               atol=atol, method="dopri5")[-1].to(x_init.dtype)
    else:
        raise ValueError(f"`method` must be 'rk4' or 'dopri5', got {method!r}.")
    if ends_at_zero:
        x = _call(denoiser, x, torch.as_tensor(end, dtype=x.dtype, device=x.device))
    return x
