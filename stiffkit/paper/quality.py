"""Sample quality of sampler settings: sample with a method at N steps, score it.

The comparisons behind the paper's Fig. 4 (a w_stiff × w_con grid) and its tables (Heun,
ERK-Guid, CFG, autoguidance, with and without ERK-Guid) are the same computation: for each
``(num_steps, method)`` draw samples from the same initial states, time the sampler, count its
evaluations, and score the result — and the endpoints against a converged solve of the *same*
(guided) ODE from the same states (docs/theory/quality.md). :func:`run_plan` is that loop for
any world; :func:`compare` runs it on the toy world, scored by
:func:`stiffkit.diffusion.metrics.evaluate` against one exact truth sample, plus a row of exact
samples whose metrics are the noise floors (the digits counterpart: :mod:`stiffkit.paper.digits`).

Everything random derives from one ``seed``: the initial states use the per-sample seeds
``seed · SEED_STRIDE + i`` of :func:`stiffkit.diffusion.noise.run_seeds` (initial state i does
not depend on the batch size, so a quick run's initial states are the first rows of a full
run's and its samples agree with them to roundoff — see :func:`stiffkit.diffusion.sample`), and
the truth draw, the floor draw and the metrics' directions/resampling come from independent
streams of ``SeedSequence(seed)``. All methods share the metric seed (common random numbers).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import check_int, check_real
from stiffkit._utils import progress as progress_bar
from stiffkit.diffusion.metrics import DEFAULT_NUM_BOOTSTRAP, MetricSettings, evaluate
from stiffkit.diffusion.noise import SEED_STRIDE, run_seeds, sub_seed, torch_generator
from stiffkit.diffusion.oracle import ORACLE_METHODS, dominant_pair_oracle
from stiffkit.diffusion.samplers import (
    REFERENCE_STEPS,
    get_solver,
    pf_ode_drift,
    reference_sample,
    sample_final,
)
from stiffkit.paper.toy import GUIDED_METHODS, ToyWorld

__all__ = ["PAPER_SETTINGS", "PAPER_W_STIFF_32", "SEED_STRIDE", "EXACT_LABEL", "Method",
           "SamplerRun", "paper_setting", "run_method", "run_plan", "check_plan", "compare",
           "time_methods", "blank_row"]

#: ERK-Guid's ``(w_stiff, w_con)`` in the paper (ImageNet-512, EDM2-S;
#: docs/theory/erk_guid.md#the-papers-settings and the reference code's
#: ``scripts/reproduce.sh``), keyed by ``(guided, num_steps)``. Unguided at 32 steps the paper
#: sweeps ``w_stiff`` over :data:`PAPER_W_STIFF_32`; 1.0 is listed here (the value its guided
#: runs use). Guided runs (CFG and AG alike) exist at 16 and 32 steps only.
PAPER_SETTINGS: dict[tuple[bool, int], tuple[float, float]] = {
    (False, 8): (0.5, 0.1), (False, 16): (0.75, 0.3), (False, 32): (1.0, 0.5),
    (True, 16): (0.75, 0.5), (True, 32): (1.0, 0.5),
}
#: The paper's 32-step w_stiff sweep (w_con 0.5).
PAPER_W_STIFF_32 = (0.5, 1.0, 1.5, 2.0, 2.5)
#: Label of the exact-sample row of :func:`compare` (its metrics are the noise floors).
EXACT_LABEL = "exact samples"
#: Metric columns whose exact-sample value :func:`compare` copies into ``{name}_floor``.
_FLOORED = ("sw", "outlier_rate", "precision", "recall", "occupancy", "component_tv")


def paper_setting(num_steps: int, guided: bool = False) -> tuple[float, float]:
    """Return the paper's ERK-Guid ``(w_stiff, w_con)`` at `num_steps` (see :data:`PAPER_SETTINGS`).

    Raises
    ------
    ValueError
        If the paper has no setting for this step count (and guidance).
    """
    key = (bool(guided), check_int(num_steps, "num_steps"))
    if key not in PAPER_SETTINGS:
        known = sorted(n for g, n in PAPER_SETTINGS if g == key[0])
        kind = "guided" if guided else "unguided"
        raise ValueError(f"The paper has no {kind} setting at `num_steps`={num_steps}; "
                         f"it has {known}.")
    return PAPER_SETTINGS[key]


@dataclass(frozen=True)
class Method:
    """A sampler configuration: guidance, ERK-Guid strength and gate, pair or oracle estimate.

    Attributes
    ----------
    label : str
        Name in tables and legends.
    guidance : {"none", "cfg", "ag"}
        Denoiser of :meth:`ToyWorld.denoiser` (learned models, default guidance weights).
    w_stiff, w_con : float
        ERK-Guid strength and gate (``w_stiff = 0``: the plain solver).
    oracle : {None, "dense", "power", "arpack"}
        Replace the pair's ``ρ̂, v̂`` by the exact dominant eigenpair (costs Jacobian products).
    solver : str
        Sampler of :func:`stiffkit.diffusion.samplers.sample` (EDM Heun by default).
    oracle_iter : int, optional
        With ``oracle="power"``: at most this many JVP power iterations per step (None: the
        estimator's default cap and tolerance).
    """

    label: str
    guidance: str = "none"
    w_stiff: float = 0.0
    w_con: float = 0.0
    oracle: str | None = None
    solver: str = "heun"
    oracle_iter: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"`label` must be a non-empty string, got {self.label!r}.")
        if self.guidance not in GUIDED_METHODS:
            raise ValueError(f"`guidance` must be one of {GUIDED_METHODS}, got {self.guidance!r}.")
        for name in ("w_stiff", "w_con"):
            check_real(getattr(self, name), name, lo=0)
        if self.oracle is not None and self.oracle not in ORACLE_METHODS:
            raise ValueError(f"`oracle` must be None or one of {ORACLE_METHODS}, "
                             f"got {self.oracle!r}.")
        if self.erk and not get_solver(self.solver).has_pair:  # an unknown name raises too
            raise ValueError(f"`solver={self.solver!r}` has no embedded pair for ERK-Guid "
                             "(`w_stiff` > 0 or an `oracle`).")
        get_solver(self.solver)
        if self.oracle_iter is not None:
            check_int(self.oracle_iter, "oracle_iter")
            if self.oracle != "power":
                raise ValueError(f"`oracle_iter` needs `oracle='power'`, got {self.oracle!r}.")

    @property
    def erk(self) -> bool:
        """Whether ERK-Guid's estimate is in use (a correction, or the oracle's diagnostics)."""
        return self.w_stiff > 0 or self.oracle is not None


class SamplerRun(NamedTuple):
    """One sampler run: the samples and what it cost.

    Attributes
    ----------
    samples : Tensor, [n, *dims]
    nfe : int
        Denoiser evaluations the sampler counts (``2N − 1`` for EDM Heun, ERK-Guid included).
    network_calls : int
        Every call of the denoiser, including the oracle's Jacobian products (a JVP calls the
        network once per tangent, at roughly the cost of a forward and a backward pass).
    seconds : float
        Wall time of the sampler alone (:func:`run_plan` warms each denoiser up first).
    gate_rate, rho_median : float
        Fraction of (sample, step) pairs with the correction on (``ρ > w_con``), over the
        steps that have a pair (NaN without ERK-Guid); the median stiffness estimate there.
    """

    samples: Tensor
    nfe: int
    network_calls: int
    seconds: float
    gate_rate: float
    rho_median: float


def run_method(world: Any, method: Method, x_init: Tensor, num_steps: int, *,
               labels: Tensor | None = None) -> SamplerRun:
    """Sample `method` from `x_init` on the world's EDM grid of `num_steps` steps, timed.

    `world` is a :class:`ToyWorld`, a :class:`~stiffkit.paper.digits.DigitsWorld` or anything
    with ``denoiser(guidance[, labels=...])`` and ``sigmas(num_steps)``; `x_init` ``[n, *dims]``
    the start states at σ_max; N = `num_steps` gives N − 1 solver steps and a final Euler step;
    `labels` ``[n]`` (optional) condition the denoiser per sample. Returns a :class:`SamplerRun`.
    """
    denoiser = (world.denoiser(method.guidance) if labels is None
                else world.denoiser(method.guidance, labels=labels))
    calls = 0

    def counted(x: Tensor, sigma: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return denoiser(x, sigma)

    rhos: list[Tensor] = []
    betas: list[Tensor] = []

    def record(step: dict[str, Any]) -> None:
        rho = step["rho"]
        if not bool(torch.isnan(rho).all()):
            rhos.append(rho)
            betas.append(step["beta"])

    oracle: Any = method.oracle
    if method.oracle_iter is not None:  # power iteration with a cap on the JVPs per step
        oracle = dominant_pair_oracle(pf_ode_drift(counted), "power", max_iter=method.oracle_iter)
    start = time.perf_counter()
    x, nfe = sample_final(counted, x_init, world.sigmas(num_steps), solver=method.solver,
                          w_stiff=method.w_stiff, w_con=method.w_con, oracle=oracle,
                          callback=record)
    seconds = time.perf_counter() - start
    rho_all = torch.cat(rhos).double() if rhos else torch.empty(0, dtype=torch.float64)
    gate = float(torch.cat(betas).double().mean()) if (betas and method.erk) else math.nan
    rho_median = float(rho_all.nanmedian()) if rho_all.numel() else math.nan
    return SamplerRun(x.detach(), int(nfe), calls, seconds, gate, rho_median)


def check_plan(plan: Any) -> list[tuple[int, Method]]:
    """Return `plan` as a non-empty list of ``(num_steps, Method)`` pairs, or raise naming it."""
    if not hasattr(plan, "__iter__"):
        raise TypeError(f"`plan` must be an iterable of (num_steps, Method) pairs, got {plan!r}.")
    plan = list(plan)
    if not plan:
        raise ValueError("`plan` must hold at least one (num_steps, Method) run.")
    for item in plan:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Method)):
            raise TypeError(f"`plan` must hold (num_steps, Method) pairs, got {item!r}.")
    return plan


def _digest(x: Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def run_plan(
    world: Any,
    plan: list[tuple[int, Method]],
    x_init: Tensor,
    score: Any,
    *,
    reference_steps: int = REFERENCE_STEPS,
    labels: Tensor | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Sample each ``(num_steps, method)`` of `plan` from `x_init` ``[n, *dims]``, score it.

    ``score(samples, reference) -> dict`` gets the samples and the converged solve of the
    method's own denoiser from the same start (one per guidance, shared by every N: the grids
    share σ_max and σ_min). Each denoiser and oracle is warmed up on two samples outside the
    timing; a run bit-identical to an earlier one of the same guidance reuses its scores.
    `labels` ``[n]`` condition every denoiser (:func:`run_method`). Returns one dict a run.
    """
    def sub(k: int | None) -> dict[str, Any]:
        return {} if labels is None else {"labels": labels[:k]}

    references: dict[str, Tensor] = {}
    scored: dict[tuple[str, str], dict[str, Any]] = {}
    warmed: set[tuple[str, str | None]] = set()
    rows = []
    runs: Iterable[tuple[int, Method]] = progress_bar(plan, enabled=progress,
                                                      desc="sample + evaluate", unit="run")
    for num_steps, method in runs:
        if method.guidance not in references:
            den = world.denoiser(method.guidance, **sub(None))
            references[method.guidance] = reference_sample(
                den, x_init, world.sigmas(num_steps), num_steps=reference_steps).detach()
        _warm_up(world, [(num_steps, method)], x_init, warmed, **sub(2))
        run = run_method(world, method, x_init, num_steps, **sub(None))
        key = (method.guidance, _digest(run.samples))
        if key not in scored:
            scored[key] = score(run.samples, references[method.guidance])
        rows.append({**_describe(method), "num_steps": int(num_steps), "nfe": run.nfe,
                     "network_calls": run.network_calls, "sampler_seconds": run.seconds,
                     "gate_rate": run.gate_rate, "rho_median": run.rho_median, **scored[key]})
    return rows


def compare(
    world: ToyWorld,
    plan: Iterable[tuple[int, Method]],
    *,
    num_samples: int,
    seed: int = 0,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    ci: str = "percentile",
    reference_steps: int = REFERENCE_STEPS,
    include_exact: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Sample and score each ``(num_steps, method)`` of `plan` from the same initial states.

    Parameters
    ----------
    world : ToyWorld
        The tree world; the target is ``world.exact`` (class A).
    plan : iterable of (int, Method)
        Runs, in order; methods may differ per step count.
    num_samples, seed, num_bootstrap : int
        Samples per run (and the truth's size); root of every random draw (module notes);
        bootstrap resamples of each interval.
    ci : {"percentile", "basic"}
        Interval kind (:func:`~stiffkit.diffusion.metrics.evaluate`); "basic" corrects the
        upward bias of resampled distances such as the sliced Wasserstein near its floor.
    reference_steps : int
        RK4 steps of the converged solve (:func:`reference_sample`; fewer only for smoke runs).
    include_exact : bool
        Append a row of exact class-A samples (an independent draw, same size, same truth):
        its metrics are the noise floors, also copied into every row's ``*_floor`` columns.
    progress : bool
        Show a tqdm bar over the runs.

    Returns
    -------
    DataFrame
        One row per run (:func:`run_plan`: ``method, guidance, w_stiff, w_con, oracle, solver,
        num_steps, nfe, network_calls, sampler_seconds, gate_rate, rho_median``) with the
        columns of :data:`stiffkit.diffusion.metrics.COLUMNS` (endpoint errors against
        :func:`reference_sample` of the method's own denoiser; NaN in the exact row).
    """
    if not isinstance(world, ToyWorld):
        raise TypeError(f"`world` must be a ToyWorld, got {type(world).__name__}.")
    plan = check_plan(plan)
    num_samples = check_int(num_samples, "num_samples", 2)
    seed = check_int(seed, "seed", 0)
    reference_steps = check_int(reference_steps, "reference_steps")
    settings = MetricSettings(num_bootstrap=num_bootstrap, ci=ci)
    x_init = _initial_states(world, num_samples, seed)
    ss_truth, ss_exact, ss_metric = np.random.SeedSequence(seed).spawn(3)
    truth = world.exact.sample(num_samples, 0.0, generator=torch_generator(ss_truth))
    metric_seed = sub_seed(ss_metric)

    def score(samples: Tensor, reference: Tensor | None) -> dict[str, Any]:
        row = evaluate(samples, world.exact, reference=reference, truth=truth, seed=metric_seed,
                       settings=settings, noise_floor=False)
        return row.iloc[0].to_dict()

    rows = run_plan(world, plan, x_init, score, reference_steps=reference_steps,
                    progress=progress)
    if include_exact:
        exact = world.exact.sample(num_samples, 0.0, generator=torch_generator(ss_exact))
        floor = score(exact, None)
        rows.append({**blank_row(EXACT_LABEL), **floor})
        for row in rows:
            for name in _FLOORED:
                row[f"{name}_floor"] = floor[name]
    df = pd.DataFrame(rows)
    for col in ("num_steps", "nfe", "network_calls", "n", "n_truth"):
        df[col] = df[col].astype(np.int64)
    return df


def time_methods(
    world: ToyWorld,
    plan: Iterable[tuple[int, Method]],
    *,
    num_samples: int,
    repeats: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Return the fastest of `repeats` sampler wall times of each ``(num_steps, method)``.

    After a warm-up, the plan is timed round-robin `repeats` times, so slow drifts of a shared
    machine's load hit every method alike; the minimum is the least disturbed run (the sampler
    alone, from :func:`compare`'s initial states).
    """
    plan = list(plan)
    repeats = check_int(repeats, "repeats", 1)
    x_init = _initial_states(world, check_int(num_samples, "num_samples", 1),
                             check_int(seed, "seed", 0))
    _warm_up(world, plan, x_init, set())
    best = [math.inf] * len(plan)
    rounds = progress_bar(range(int(repeats)), enabled=progress, desc="timing", unit="round")
    for _ in rounds:
        for k, (num_steps, method) in enumerate(plan):
            best[k] = min(best[k], run_method(world, method, x_init, num_steps).seconds)
    return best


def _warm_up(world: Any, plan: list[tuple[int, Method]], x_init: Tensor,
             warmed: set[tuple[str, str | None]], **labels: Any) -> None:
    """Run each new (guidance, oracle) of `plan` once on two samples: first calls pay one-off
    costs (lazy initialisation, forward-mode AD setup) that must stay out of the timing."""
    for num_steps, method in plan:
        if (method.guidance, method.oracle) not in warmed:
            run_method(world, method, x_init[:2], num_steps, **labels)
            warmed.add((method.guidance, method.oracle))


def _initial_states(world: ToyWorld, num_samples: int, seed: int) -> Tensor:
    """Exact samples of ``p_{σ_max}``, sample i from the per-sample seed
    ``seed·SEED_STRIDE + i`` (:func:`~stiffkit.diffusion.noise.run_seeds`)."""
    if num_samples > SEED_STRIDE:
        raise ValueError(f"`num_samples` must be at most SEED_STRIDE = {SEED_STRIDE}, "
                         f"got {num_samples}.")
    dtype = next(world.main.parameters()).dtype
    return world.initial_state(run_seeds(seed, num_samples), dtype=dtype)


def blank_row(label: str) -> dict[str, Any]:
    """Return the run columns of :func:`run_plan`'s rows for a row that is not a sampler run
    (a floor row): `label`, no guidance, NaN settings and timings, zero evaluations."""
    nan = math.nan
    return {"method": label, "guidance": "none", "w_stiff": nan, "w_con": nan, "oracle": None,
            "solver": None, "num_steps": 0, "nfe": 0, "network_calls": 0,
            "sampler_seconds": nan, "gate_rate": nan, "rho_median": nan}


def _describe(method: Method) -> dict[str, Any]:
    return {"method": method.label, **{k: getattr(method, k) for k in (
        "guidance", "w_stiff", "w_con", "oracle", "solver")}}
