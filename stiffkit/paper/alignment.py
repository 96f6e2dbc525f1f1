"""Eigenvector alignment along Heun trajectories: the data behind the paper's Figs. 2 and 3.

At each Heun step ``i ≥ 1`` of a sampled trajectory, everything is measured **at one point**
``(σ_i, x_i)`` (docs/theory/proposition1.md, docs/theory/erk_guid.md, docs/figures.md):

* the reference eigenpairs of ``J = ∂f/∂x (σ_i, x_i)`` — a closed-form Jacobian when one is
  given (exact mixtures), else a dense Jacobian from ``n`` forward-mode JVPs
  (:func:`stiffkit.jacobian_dense`; exact, and cheap for small ``n``), diagonalised with
  ``eigh`` on its symmetric part (probability-flow drifts of conservative denoisers have
  symmetric Jacobians; the measured asymmetry is reported);
* ERK-Guid's pair at σ_i — ``(x_i, f_i)`` against the previous step's Euler point
  ``(x_E, f_E)`` — its stiffness ``ρ̂ = ‖Δf‖/(‖Δx‖ + ε)`` (Proposition 1, the ``erk_rho`` a
  Heun sampler records) and its two directions, ``Δx = x_i − x_E`` (solution difference) and
  ``Δf = f_i − f_E`` (drift difference, ERK-Guid's ``v̂``);
* the local truncation error of the *plain* Heun step from ``x_i`` (rebuilt from the
  recorded Euler point, so an ERK-Guid correction on the trajectory does not enter it)
  against a converged reference step;
* optional extra directions at ``(σ_i, x_i)``, e.g. the CFG and autoguidance directions
  ``D − D_guide``;

and ``|cos|`` of each direction with the dominant eigenvector ``v₁``. The first step (no
pair yet) and the final Euler step to σ = 0 (the drift is singular there) are skipped.
A learned image denoiser's Jacobian is not symmetric: ``jacobian_columns`` adds columns
computed from each reference Jacobian and the directions (e.g. ``J``'s own eigenpairs and
singular values, experiments/digits_alignment.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import check_callable, check_int, check_tensor, flat_norm
from stiffkit._utils import progress as progress_bar
from stiffkit.estimators.jvp import jacobian_dense
from stiffkit.estimators.lte import (
    REFERENCE_SUBSTEPS,
    alignment,
    check_reference_method,
    reference_step,
)
from stiffkit.estimators.pair import pair_stiffness
from stiffkit.estimators.spectrum import sorted_eig
from stiffkit.integrate.trajectory import Trajectory

__all__ = ["ALIGNMENT_COLUMNS", "TOY_MODELS", "heun_alignment", "sorted_eigh", "toy_alignment"]

#: Models :func:`toy_alignment` knows: the learned main model and the exact class-A mixture.
TOY_MODELS = ("learned", "exact")

#: Column name -> meaning of :func:`heun_alignment`'s frame (row: one step i and sample,
#: every quantity at the same point (σ_i, x_i)). ``cos_{name}_v1`` is added per direction.
ALIGNMENT_COLUMNS: dict[str, str] = {
    "step": "Heun step index i (1 … N−2: the steps that have an ERK pair)",
    "sample": "sample index in the batch",
    "sigma": "σ_i, where every quantity of the row is measured",
    "sigma_next": "σ_{i+1}",
    "h": "step size h_i = σ_i − σ_{i+1}",
    "lambda_1": "dominant eigenvalue (largest |λ|) of ∂f/∂x at (σ_i, x_i), signed",
    "lambda_2": "second eigenvalue by modulus (NaN in 1-D), signed",
    "lambda_max": "|λ₁|",
    "h_lambda": "h_i · |λ₁|",
    "asymmetry": "‖J − Jᵀ‖_F / ‖J‖_F of the reference Jacobian (eigh used its symmetric part)",
    "rho_hat": "ERK-Guid's ρ̂ = ‖Δf‖ / ‖Δx‖ at σ_i (= the sampler's erk_rho; NaN where Δx "
    "is at roundoff level)",
    "h_rho": "h_i · ρ̂",
    "dx_norm": "‖Δx‖, Δx = x_i − x_E (previous step's Euler point, at σ_i)",
    "df_norm": "‖Δf‖, Δf = f_i − f(x_E; σ_i)",
    "lte_norm": "‖LTE‖ of the plain Heun step from x_i (reference minus Heun)",
    "cos_lte_v1": "|cos(LTE, v₁)|",
    "cos_dx_v1": "|cos(Δx, v₁)| — the ERK solution difference",
    "cos_df_v1": "|cos(Δf, v₁)| — the ERK drift difference, ERK-Guid's direction v̂",
}


def sorted_eigh(jac: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Diagonalise the symmetric part of ``jac: [batch, n, n]``, ordered by decreasing ``|λ|``.

    :func:`stiffkit.estimators.spectrum.sorted_eig` with ``symmetric=True``, eigenvectors as
    rows, and the measured asymmetry of ``jac``.

    Returns
    -------
    values : Tensor, [batch, n]
        Real eigenvalues, ``values[:, 0]`` of largest modulus.
    vectors : Tensor, [batch, n, n]
        Unit eigenvectors as rows: ``vectors[:, k]`` belongs to ``values[:, k]``.
    asymmetry : Tensor, [batch]
        ``‖J − Jᵀ‖_F / ‖J‖_F`` (0 for an exactly symmetric Jacobian).
    """
    values, vecs = sorted_eig(jac, symmetric=True)  # checks the shape; columns = eigenvectors
    skew = jac - jac.transpose(1, 2)
    norm = torch.linalg.matrix_norm(jac)
    asymmetry = torch.linalg.matrix_norm(skew) / torch.where(norm > 0, norm, torch.ones_like(norm))
    return values, vecs.transpose(1, 2), asymmetry


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _check_heun(trajectory: Trajectory) -> None:
    if not isinstance(trajectory, Trajectory):
        raise TypeError("`trajectory` must be a stiffkit.Trajectory, "
                        f"got {type(trajectory).__name__}.")
    if trajectory.pair_states is None or trajectory.pair_drifts is None:
        raise ValueError("`trajectory` has no Euler pair: sample it with `solver='heun'`.")
    if trajectory.f is None:
        raise ValueError("`trajectory` has no drift `f` (sample with stiffkit.diffusion.sample).")


def heun_alignment(
    trajectory: Trajectory,
    *,
    jacobian: Callable[[Tensor, Tensor], Tensor] | None = None,
    directions: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
    lte: bool = True,
    lte_method: str = "rk4",
    substeps: int = REFERENCE_SUBSTEPS,
    steps: Iterable[int] | None = None,
    jacobian_columns: Callable[[Tensor, dict[str, Tensor]], Mapping[str, np.ndarray]]
    | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Return the eigenvector-alignment data of a Heun trajectory, one row per step and sample.

    Parameters
    ----------
    trajectory : Trajectory
        From :func:`stiffkit.diffusion.sample` with ``solver="heun"`` (any ``w_stiff``).
        Run it in float64: ``Δx``, ``Δf`` and the LTE are differences of nearby states.
    jacobian : callable ``(sigma, x) -> [batch, n, n]``, optional
        Closed-form ``∂f/∂x`` (e.g. ``lambda s, x: mixture.drift_jacobian(x, s)``); default:
        dense from ``n`` JVPs of ``trajectory.f`` (:func:`stiffkit.jacobian_dense`).
    directions : mapping of str to callable ``(sigma, x) -> [batch, *dims]``, optional
        Extra directions at ``(σ_i, x_i)``; column ``cos_{name}_v1`` each (e.g. the guidance
        direction ``D − D_guide``).
    lte : bool
        Measure the Heun step's LTE (the expensive part: a reference solve per step).
    lte_method : {"rk4", "dopri5"}
        Reference of :func:`stiffkit.reference_step`: ``substeps`` RK4 steps, or dopri5 at
        tight tolerance (slow on stiff batches: torchdiffeq shares one step size).
    substeps : int
        RK4 substeps of the reference.
    steps : iterable of int, optional
        Restrict to these step indices (default: every step ``1 … N−2`` that has a pair and
        does not end at σ = 0).
    jacobian_columns : callable ``(jac [batch, n, n], vecs) -> mapping``, optional
        Extra per-sample columns (``[batch]`` arrays, added after the others in the order
        returned) from each step's reference Jacobian and the directions ``vecs`` (``"dx"``,
        ``"df"``, ``"lte"`` when measured, and the `directions`; each ``[batch, *dims]``).
    progress : bool
        Show a tqdm progress bar over steps.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ALIGNMENT_COLUMNS` (LTE columns NaN when ``lte=False``),
        ``cos_{name}_v1`` per direction, then the `jacobian_columns`.
        ``df.attrs["jacobian"]`` is ``"closed-form"`` or ``"jvp-dense"``.
    """
    _check_heun(trajectory)
    if jacobian is not None:
        check_callable(jacobian, "jacobian")
    if jacobian_columns is not None:
        check_callable(jacobian_columns, "jacobian_columns")
    if directions is not None and not isinstance(directions, Mapping):
        raise TypeError(f"`directions` must map names to callables, got "
                        f"{type(directions).__name__}.")
    directions = dict(directions or {})
    for name, direction in directions.items():
        check_callable(direction, f"directions[{name!r}]")
    if lte:
        check_reference_method(lte_method, "lte_method")
        substeps = check_int(substeps, "substeps")
    times = trajectory.times
    N, B = trajectory.num_steps, trajectory.batch_size
    # Steps with a pair (i ≥ 1) that are not the final Euler step to σ = 0.
    valid = [i for i in range(1, N) if float(times[i + 1]) != 0]
    if steps is not None and (isinstance(steps, str) or not hasattr(steps, "__iter__")):
        raise TypeError(f"`steps` must be an iterable of step indices, got {steps!r}.")
    step_ids = valid if steps is None else [check_int(s, "steps", 0) for s in steps]
    if any(s not in valid for s in step_ids):
        raise ValueError(f"`steps` must be Heun steps with a pair, in {valid[:1]} … {valid[-1:]}.")
    f = trajectory.f
    iterator = progress_bar(step_ids, enabled=progress, desc="alignment", unit="step")

    frames, extra_names = [], []
    for i in iterator:
        sigma, sigma_next = times[i], times[i + 1]
        h = float(sigma - sigma_next)
        x, f_x = trajectory.states[i], trajectory.drifts[i]
        x_pair, f_pair = trajectory.pair_states[i - 1], trajectory.pair_drifts[i - 1]  # at σ_i
        dx, df = x - x_pair, f_x - f_pair

        jac = jacobian(sigma, x) if jacobian is not None else jacobian_dense(f, sigma, x)
        n = dx[0].numel()
        check_tensor(jac, "jacobian(sigma, x)")
        if jac.numel() != B * n * n:
            raise ValueError(f"`jacobian` must return [batch, n, n] = [{B}, {n}, {n}], got "
                             f"{tuple(jac.shape)}.")
        jac = jac.reshape(B, n, n).to(x.dtype)
        values, vectors, asym = sorted_eigh(jac)
        v1 = vectors[:, 0].reshape(x.shape)

        vecs = {"dx": dx, "df": df}
        nan = np.full(B, np.nan)
        if lte:
            # Plain Heun from x_i, rebuilt from the recorded Euler point (its drift at σ_{i+1}).
            x_heun = x + (sigma_next - sigma) * 0.5 * (f_x + trajectory.pair_drifts[i])
            x_ref = reference_step(f, sigma, x, sigma_next - sigma, method=lte_method,
                                   substeps=substeps)
            vecs["lte"] = x_ref - x_heun
        for name, direction in directions.items():
            vecs[name] = direction(sigma, x)
        cos = {k: _numpy(v) for k, v in alignment(v1, **vecs).items()}
        extra_cols = dict(jacobian_columns(jac, vecs)) if jacobian_columns is not None else {}
        extra_names = list(extra_cols)
        lam1 = _numpy(values[:, 0])
        rho = _numpy(pair_stiffness(x, f_x, x_pair, f_pair))
        frame = {
            "step": i, "sample": np.arange(B),
            "sigma": float(sigma), "sigma_next": float(sigma_next), "h": h,
            "lambda_1": lam1, "lambda_2": _numpy(values[:, 1]) if values.shape[1] > 1 else nan,
            "lambda_max": np.abs(lam1), "h_lambda": h * np.abs(lam1),
            "asymmetry": _numpy(asym), "rho_hat": rho, "h_rho": h * rho,
            "dx_norm": _numpy(flat_norm(dx)), "df_norm": _numpy(flat_norm(df)),
            "lte_norm": _numpy(flat_norm(vecs["lte"])) if lte else nan,
            "cos_lte_v1": cos["lte"] if lte else nan,
            "cos_dx_v1": cos["dx"], "cos_df_v1": cos["df"],
            **{f"cos_{name}_v1": cos[name] for name in directions},
            **extra_cols,
        }
        frames.append(pd.DataFrame(frame))

    extra = [f"cos_{name}_v1" for name in directions] + extra_names
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*ALIGNMENT_COLUMNS, *extra])
    out = out[[*ALIGNMENT_COLUMNS, *extra]]
    out.attrs.update(jacobian="closed-form" if jacobian is not None else "jvp-dense",
                     lte_method=lte_method if lte else None, substeps=substeps)
    return out


def toy_alignment(
    world,
    seeds: Sequence[int],
    num_steps: int | Sequence[int],
    *,
    models: Sequence[str] = TOY_MODELS,
    lte: bool = True,
    substeps: int = REFERENCE_SUBSTEPS,
    guidance: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Return :func:`heun_alignment` on plain-Heun trajectories of the tree world.

    Each model is sampled with plain Heun (``w_stiff = 0``) on the toy's EDM grid from
    ``world.initial_state(seeds)`` (exact samples of ``p_{σ_max}``, per-sample seeds), in the
    world's dtype (use ``toy_world(torch.float64)``).

    * ``"learned"`` — the main energy MLP; reference eigenpairs from the dense JVP Jacobian;
      guidance directions ``cfg`` (learned ``D − D_uncond``) and ``ag`` (``D − D_bad``).
    * ``"exact"`` — the class-A mixture; its closed-form ``drift_jacobian``; direction
      ``cfg`` from the exact unconditional A∪B mixture (there is no exact "bad version", so
      ``cos_ag_v1`` is NaN on these rows).

    Parameters
    ----------
    world : ToyWorld
    seeds : sequence of int
        One seed per sample (the ``seed`` column).
    num_steps : int or sequence of int
        Grid sizes N (``world.sigmas(N)``: N − 1 Heun steps, then Euler to 0); the
        ``num_steps`` column.
    models : sequence of {"learned", "exact"}
    lte, substeps :
        As in :func:`heun_alignment` (RK4 reference).
    guidance : bool
        Add the guidance directions (``cos_cfg_v1``, ``cos_ag_v1``).
    progress : bool
        tqdm progress over models, grids and steps.

    Returns
    -------
    pandas.DataFrame
        ``model``, ``num_steps``, ``seed`` and the columns of :func:`heun_alignment`.
    """
    from stiffkit.diffusion.noise import as_seeds
    from stiffkit.diffusion.samplers import sample
    from stiffkit.paper.toy import ToyWorld

    if not isinstance(world, ToyWorld):
        raise TypeError(f"`world` must be a ToyWorld (stiffkit.paper.toy_world()), got "
                        f"{type(world).__name__}.")
    if isinstance(models, str):
        raise TypeError(f"`models` must be a sequence of model names, got {models!r}; wrap a "
                        "single name in a list.")
    unknown = [m for m in models if m not in TOY_MODELS]
    if unknown or not models:
        raise ValueError(f"`models` must be drawn from {TOY_MODELS}, got {list(models)}.")
    if isinstance(num_steps, str) or not isinstance(num_steps, int | Iterable):
        raise TypeError(f"`num_steps` must be an int or a sequence of ints, got {num_steps!r}.")
    # A grid of N levels has Heun steps with a pair (1 … N−2) only for N >= 3.
    grids = [check_int(n, "num_steps", 3) for n in
             ([num_steps] if isinstance(num_steps, int) else list(num_steps))]
    if not grids:
        raise ValueError("`num_steps` must hold at least one grid size.")
    if isinstance(seeds, int):
        raise TypeError(f"`seeds` must be a sequence of seeds (one per sample), got {seeds!r}.")
    seeds = as_seeds(seeds)
    if not seeds:
        raise ValueError("`seeds` must hold at least one seed.")
    dtype = world.main.gain.dtype
    x_init = world.initial_state(seeds, dtype=dtype)
    frames = []
    for model in models:
        learned = model == "learned"
        denoiser = world.denoiser("none", learned=learned)
        jacobian = None if learned else (lambda s, x, m=denoiser: m.drift_jacobian(x, s))
        directions = {}
        if guidance:
            directions["cfg"] = lambda s, x, ld=learned: world.guidance_direction(
                "cfg", x, s, learned=ld)
            if learned:
                directions["ag"] = lambda s, x: world.guidance_direction("ag", x, s)
        for n in grids:
            if progress:
                from tqdm.auto import tqdm

                tqdm.write(f"alignment: {model} model, {n} steps, {len(seeds)} samples")
            traj = sample(denoiser, x_init, world.sigmas(n), solver="heun", w_stiff=0.0)
            df = heun_alignment(traj, jacobian=jacobian, directions=directions, lte=lte,
                                substeps=substeps, progress=progress)
            if guidance and not learned:
                df["cos_ag_v1"] = np.nan
            df.insert(0, "seed", np.asarray(seeds)[df["sample"].to_numpy()])
            df.insert(0, "num_steps", n)
            df.insert(0, "model", model)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)
