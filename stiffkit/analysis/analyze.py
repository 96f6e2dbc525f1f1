"""``stiffkit.analyze``: a tidy per-step, per-sample stiffness report of a trajectory."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from stiffkit._utils import check_generator, check_int, check_real, flat_norm
from stiffkit._utils import progress as progress_bar
from stiffkit.analysis.columns import COLUMNS, conform
from stiffkit.estimators.eigen import dominant_eig
from stiffkit.estimators.lte import alignment, check_reference_method, reference_step
from stiffkit.estimators.pair import pair_stiffness
from stiffkit.integrate.trajectory import Trajectory

__all__ = ["analyze", "COLUMNS"]

#: Above this state dimension the default reference eigen-estimate is matrix-free.
DENSE_MAX_DIM = 64
#: ARPACK's Krylov basis above DENSE_MAX_DIM dimensions (scipy's default, 20, at or below):
#: image denoisers' spectra have a near-multiple top (1/σ), where 20 vectors restart for
#: hundreds of products; 80 cut them ~5× on the 32 × 32 digits (measured, d = 1024).
ARPACK_NCV = 80
#: Default threshold of the ``stiff`` column (stiffness indicator ≥ 1: stability-limited).
STIFF_THRESHOLD = 1.0


def _stability_boundaries(trajectory: Trajectory) -> np.ndarray | None:
    """Each step's real stability boundary ``[N]`` (:attr:`Trajectory.step_boundaries`).

    None when the trajectory knows none (no tableau, no ``stability_boundaries``); that is
    an error only where an indicator could be formed, i.e. when there is pair data.
    """
    bounds = trajectory.step_boundaries
    if bounds is None:
        if trajectory.pair_states is not None:
            raise ValueError(
                "`trajectory` has pair data but no stability boundary to divide `h_rho` by: "
                "build it with a `tableau` or with per-step `stability_boundaries`."
            )
        return None
    return bounds.numpy()


def _indices(values, name: str, minimum: int = 0) -> list[int]:
    """`values` as a list of ints ``>= minimum``, raising naming `name` otherwise."""
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be an iterable of indices, got {values!r}.")
    return [check_int(v, name, minimum) for v in values]


def _sample_ids(samples, batch: int) -> np.ndarray:
    """The sample indices a `samples` argument selects (a slice, an int, indices or a mask;
    negative indices count from the end, as in numpy)."""
    if isinstance(samples, slice):
        ids = np.arange(batch)[samples]
    elif isinstance(samples, int | np.integer) and not isinstance(samples, bool):
        ids = np.array(_indices([samples], "samples", -batch))
    else:
        if isinstance(samples, str) or not hasattr(samples, "__iter__"):
            raise TypeError(f"`samples` must be a slice, an index, indices or a boolean mask, "
                            f"got {samples!r}.")
        items = list(samples.tolist() if isinstance(samples, np.ndarray | torch.Tensor)
                     else samples)
        if items and all(isinstance(v, bool | np.bool_) for v in items):
            if len(items) != batch:
                raise ValueError(f"`samples` as a mask must have {batch} entries, got "
                                 f"{len(items)}.")
            ids = np.flatnonzero(items)
        else:
            ids = np.array(_indices(items, "samples", -batch), dtype=np.int64)
    if ids.size == 0:
        raise ValueError("`samples` selects no sample.")
    if ids.max() >= batch:
        raise ValueError(f"`samples` must lie in [{-batch}, {batch}), got {int(ids.max())}.")
    return np.where(ids < 0, ids + batch, ids)


def _numpy(values: torch.Tensor) -> np.ndarray:
    """Return `values` as a float64 numpy array, off the autograd graph (a drift whose
    parameters require grad — a neural ODE in training — makes every derived tensor do)."""
    return values.detach().double().cpu().numpy()


def analyze(
    trajectory: Trajectory,
    *,
    reference: str | None = "auto",
    symmetric: bool = False,
    lte: bool | None = None,
    lte_method: str = "dopri5",
    matrix=None,
    steps: Iterable[int] | None = None,
    samples: Iterable[int] | slice | None = None,
    stiff_threshold: float = STIFF_THRESHOLD,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Return one row per step and sample describing how stiff the trajectory is.

    Parameters
    ----------
    trajectory : Trajectory
        From :func:`~stiffkit.solve_fixed`, :func:`~stiffkit.solve_adaptive`, a diffusion
        sampler, or :meth:`Trajectory.from_states` (e.g. torchdiffeq output).
    reference : {"auto", "dense", "power", "arpack"} or None
        How to compute the reference eigenpair of ``∂f/∂x`` at each step's start (needs
        ``trajectory.f``); "auto" is dense up to ``DENSE_MAX_DIM`` dimensions, power
        iteration above. States may have any shape ``[batch, *dims]`` (images
        ``[batch, 1, R, R]``): every norm, product and alignment reduces over all non-batch
        dims. Above ``DENSE_MAX_DIM`` dims "arpack" uses ``ARPACK_NCV`` Krylov vectors.
        None skips the reference columns (cheap). Where the estimate did not converge
        (power iteration cannot separate a dominant complex pair ``a ± ib``, nor, within
        its 200 products, a near-multiple top eigenvalue such as an image denoiser's 1/σ),
        ``lambda_max`` is NaN and ``reference_converged`` False; use "arpack" or "dense" there.
    symmetric : bool
        The Jacobian is symmetric (probability-flow ODEs: ``J = −σH``); faster, exact.
    lte : bool, optional
        Measure each step's local truncation error against a reference step (default:
        whenever ``trajectory.f`` is known). Steps ending at σ = 0 of a diffusion
        trajectory are skipped (the drift is singular there).
    lte_method : {"dopri5", "rk4", "exact"}
        Reference of the LTE (:func:`stiffkit.estimators.lte.reference_step`); "exact" needs
        `matrix`.
    matrix : array, optional
        The matrix of an autonomous linear drift, for exact LTEs.
    steps, samples : optional
        Restrict the report (and its cost) to these step and sample indices.
    stiff_threshold : float
        ``stiff`` is ``stiffness_indicator ≥ stiff_threshold`` (pandas' nullable boolean:
        NA where there is no ρ̂ — no pair, or a pair whose ``Δx`` is at roundoff level of the
        states, ``pair_resolved`` False; :func:`stiffkit.estimators.pair_stiffness`).
    generator : torch.Generator, optional
        Start vectors of matrix-free eigen-estimates.
    progress : bool
        Show a tqdm progress bar over steps.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`stiffkit.analysis.columns.COLUMNS` (see their meanings there), then
        ``t_next``, ``stability_boundary`` (the step's real stability boundary, from
        :attr:`Trajectory.step_boundaries`: the denominator of ``stiffness_indicator``) and
        any per-step diagnostics of the trajectory (e.g. ERK-Guid's gate). ``df.attrs``
        records the reference method, the tableau's name and ``stability_boundary``: one
        float when every step shares it, the per-step array ``[N]`` when they differ
        (DPM-Solver-2, DEIS), None when the trajectory knows none — then it has no pair data
        either, so ``rho_hat`` and the indicator are empty.

    Raises
    ------
    TypeError
        If `trajectory` is not a :class:`Trajectory`, `steps` / `samples` not indices, or
        `generator` not a ``torch.Generator``.
    ValueError
        If the trajectory has pair data but no stability boundary (neither a tableau nor
        ``stability_boundaries``): the indicator would be a silent NaN; or naming the
        argument, for an unknown `reference` or `lte_method`, indices out of range (negative
        ones included), an empty `samples` selection, a `stiff_threshold` that is not a
        positive number.
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(
            f"`trajectory` must be a stiffkit.Trajectory, got {type(trajectory).__name__}.")
    f = trajectory.f
    if reference not in (None, "auto", "dense", "power", "arpack"):
        raise ValueError("`reference` must be 'auto', 'dense', 'power', 'arpack' or None, "
                         f"got {reference!r}.")
    if reference is not None and f is None:
        raise ValueError(
            "`reference` needs the drift: the trajectory has no `f` (pass reference=None).")
    if lte is None:
        lte = f is not None
    if lte and f is None:
        raise ValueError("`lte=True` needs the drift: the trajectory has no `f`.")

    check_reference_method(lte_method, "lte_method")
    check_real(stiff_threshold, "stiff_threshold", lo=0, lo_open=True)
    check_generator(generator)

    N, B = trajectory.num_steps, trajectory.batch_size
    dim = int(np.prod(trajectory.states.shape[2:])) if trajectory.states.ndim > 2 else 1
    method = reference
    if reference == "auto":
        method = "dense" if dim <= DENSE_MAX_DIM else "power"
    ncv = min(ARPACK_NCV, dim) if method == "arpack" and dim > DENSE_MAX_DIM else None
    step_ids = list(range(N)) if steps is None else _indices(steps, "steps")
    if any(s < 0 or s >= N for s in step_ids):
        raise ValueError(f"`steps` must lie in [0, {N}).")
    sample_ids = np.arange(B) if samples is None else _sample_ids(samples, B)
    sel = torch.as_tensor(sample_ids, dtype=torch.long)

    bounds = _stability_boundaries(trajectory)
    next_drifts = trajectory.next_drifts
    times = trajectory.times
    rows: list[pd.DataFrame] = []
    iterator = progress_bar(step_ids, enabled=progress, desc="analyze", unit="step")
    eig_cache: dict[int, object] = {}

    def eig_at(k: int):
        """Reference eigenpair at (t_k, x_k) for the selected samples (cached; None at σ = 0)."""
        if method is None or (trajectory.time_name == "sigma" and float(times[k]) == 0):
            return None
        if k not in eig_cache:
            eig_cache[k] = dominant_eig(f, times[k], trajectory.states[k][sel], method=method,
                                        symmetric=symmetric, generator=generator, ncv=ncv)
        return eig_cache[k]

    def real_vector(eig):
        return None if eig is None or eig.vector.is_complex() else eig.vector

    for n in iterator:
        t, t_next = times[n], times[n + 1]
        h = float((t_next - t).abs())
        x = trajectory.states[n][sel]
        x_next = trajectory.states[n + 1][sel]
        cols: dict[str, np.ndarray] = {}
        nan = np.full(len(sel), np.nan)

        # Cheap estimate from the step's same-time pair at t_{n+1} (no evaluations).
        dx = df = None
        have_next = next_drifts is not None or n + 1 < N
        if trajectory.pair_states is not None and have_next:
            f_next = (next_drifts[n] if next_drifts is not None else trajectory.drifts[n + 1])[sel]
            pg, pk = trajectory.pair_states[n][sel], trajectory.pair_drifts[n][sel]
            if bool(torch.isfinite(pg).all()) and bool(torch.isfinite(pk).all()):
                dx, df = x_next - pg, f_next - pk
                rho = _numpy(pair_stiffness(x_next, f_next, pg, pk))
                cols["rho_hat"] = rho
                cols["pair_resolved"] = np.isfinite(rho)
        rho_hat = cols.get("rho_hat", nan)
        cols["h_rho"] = h * rho_hat
        boundary = np.nan if bounds is None else float(bounds[n])  # None: no pair data
        cols["stiffness_indicator"] = h * rho_hat / boundary

        # Reference eigenpair at the step's start.
        eig = eig_at(n)
        if eig is not None:
            val = eig.value
            # An unconverged estimate (power iteration on a dominant complex pair, say) is not
            # a number to report: NaN, with the flag in `reference_converged`.
            converged = eig.converged.detach().cpu().numpy()
            lam = _numpy(val.abs())
            lam_re = _numpy(val.real if val.is_complex() else val)
            cols["lambda_max"] = np.where(converged, lam, np.nan)
            cols["lambda_real"] = np.where(converged, lam_re, np.nan)
            cols["h_lambda"] = h * cols["lambda_max"]
            cols["reference_converged"] = converged
            # The batch mean of the per-sample counts (ARPACK's differ between samples).
            cols["reference_products"] = np.full(len(sel), int(eig.num_products.sum()) / len(sel))

        # Local truncation error of the step actually taken, against v₁ at its start.
        diffusion_end = trajectory.time_name == "sigma" and float(t_next) == 0
        if lte and not diffusion_end:
            x_ref = reference_step(f, t, x, t_next - t, method=lte_method, matrix=matrix)
            err = x_ref - x_next
            cols["lte_norm"] = _numpy(flat_norm(err))
            if real_vector(eig) is not None:
                cols["cos_lte_v1"] = _numpy(alignment(real_vector(eig), lte=err)["lte"])
        # The pair lives at (t_{n+1}, x_{n+1}): compare it with v₁ there.
        if dx is not None and method is not None:
            v1_next = real_vector(eig_at(n + 1))
            if v1_next is not None:
                al = alignment(v1_next, dx=dx, df=df)
                cols["cos_dx_v1"] = _numpy(al["dx"])
                cols["cos_df_v1"] = _numpy(al["df"])

        frame = pd.DataFrame(
            {"step": n, "sample": sample_ids, "t": float(t), "h": h, "t_next": float(t_next),
             "stability_boundary": boundary, **cols}
        )
        for name, value in trajectory.diagnostics.items():
            frame[name] = _numpy(value[n][sel])
        rows.append(frame)

    out = conform(pd.concat(rows, ignore_index=True)) if rows else conform(pd.DataFrame())
    indicator = out["stiffness_indicator"]
    out["stiff"] = (indicator >= stiff_threshold).astype("boolean").mask(indicator.isna())
    out["pair_resolved"] = out["pair_resolved"].astype("boolean")
    out["reference_converged"] = out["reference_converged"].astype("boolean")
    if bounds is None or bounds.size == 0:
        boundary_attr = None
    elif np.allclose(bounds, bounds[0], rtol=1e-12, atol=0.0):  # 2 vs 2 + 4e-16
        boundary_attr = float(bounds[0])
    else:
        boundary_attr = bounds
    tableau = trajectory.tableau.name if trajectory.tableau is not None else None
    out.attrs.update(reference=method, stability_boundary=boundary_attr, tableau=tableau)
    return out
