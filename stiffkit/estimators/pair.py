"""Cheap stiffness estimates from data a solver already has (no extra evaluations).

* Proposition 1 of Kong et al. (ICLR 2026): for two points at the same time,
  ``ρ̂ = ‖f_a − f_b‖ / ‖x_a − x_b‖``. With ``Δx`` mostly along the dominant eigenvector
  ``v₁`` of a symmetric Jacobian, ``|λ₁|√(1 − ε²) ≤ ρ̂ ≤ |λ₁|``
  (docs/theory/proposition1.md, eq. (4)).
* Directions: the normalised drift difference ``Δf/‖Δf‖`` (weights eigencomponent k by
  ``z_k²``, ERK-Guid's choice) and solution difference ``Δx/‖Δx‖`` (weights by ``z_k``).
* Hairer's stage-difference estimate [HNW II.10, p. 21]: the same ratio from two stages at
  the same abscissa (DOPRI5: stages 6/7, DOP853: 12/13), times ``h`` compared with the
  method's real stability boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stiffkit._utils import (
    as_per_sample,
    broadcast_per_sample,
    check_batch,
    check_callable,
    check_finite,
    check_output,
    check_real,
    check_same_shape,
    check_tensor,
    flat_norm,
    resolution_floor,
    secant_ratio,
)
from stiffkit.integrate.rk import RKStep
from stiffkit.tableaux import get_tableau, real_stability_interval

__all__ = [
    "PAIR_EPS",
    "embedded_stiffness",
    "hairer_stiffness",
    "pair_directions",
    "pair_stiffness",
    "stage_pair",
    "stiffness_indicator",
]

#: The absolute denominator guard of ERK-Guid's reference code, ``‖Δf‖ / (‖Δx‖ + 1e-8)``.
#: The estimators' default is the scale-relative guard (``eps=None``): an absolute one
#: makes ρ̂ depend on the states' scale (x' = −50x: ρ̂ = 50 at unit scale, 0.07 at 1e-9) and
#: turns into 0 when ‖Δx‖ is at roundoff level.
PAIR_EPS = 1e-8


def _check_pair(x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor,
                names: tuple[str, str, str, str] = ("x_a", "f_a", "x_b", "f_b")) -> None:
    for name, v in zip(names, (x_a, f_a, x_b, f_b)):
        check_batch(v, name)
        check_finite(v, name)
    x_a_, f_a_, x_b_, f_b_ = names
    check_same_shape(x_a, x_b, x_a_, x_b_)
    check_same_shape(f_a, f_b, f_a_, f_b_)
    check_same_shape(x_a, f_a, x_a_, f_a_)


def _check_eps(eps: float | None) -> None:
    if eps is not None:
        check_real(eps, "eps", lo=0)


def _scale(x_a: Tensor, x_b: Tensor) -> Tensor:
    """The states' scale for the relative guard, ``max(‖x_a‖, ‖x_b‖)`` ``[batch]``."""
    return torch.maximum(flat_norm(x_a), flat_norm(x_b))


def pair_stiffness(
    x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor, *, eps: float | None = None
) -> Tensor:
    """Return ``ρ̂ = ‖f_a − f_b‖ / ‖x_a − x_b‖`` per sample (Proposition 1).

    Parameters
    ----------
    x_a, x_b : Tensor, [batch, *dims]
        Two states at the same time.
    f_a, f_b : Tensor, [batch, *dims]
        The drift at each.
    eps : float or None
        None (default): the scale-relative guard — ρ̂ is NaN where ``‖x_a − x_b‖`` is at
        roundoff level of the states (``≤ 16 ulps · max(‖x_a‖, ‖x_b‖)``,
        :func:`stiffkit._utils.resolution_floor`), so it never depends on the states'
        scale and never reports 0 for "no information". A float: the absolute guard
        ``‖Δf‖ / (‖Δx‖ + eps)`` (:data:`PAIR_EPS` = 1e-8 reproduces ERK-Guid's reference
        code; identical points then give 0).

    Returns
    -------
    Tensor, [batch]
        ρ̂ per sample; NaN marks an unresolved pair (relative guard only).
    """
    _check_pair(x_a, f_a, x_b, f_b)
    _check_eps(eps)
    scale = _scale(x_a, x_b) if eps is None else None
    return secant_ratio(f_a - f_b, x_a - x_b, eps, scale=scale)


def pair_directions(
    x_a: Tensor, f_a: Tensor, x_b: Tensor, f_b: Tensor, *, eps: float | None = None
) -> tuple[Tensor, Tensor]:
    """Return the unit drift difference and unit solution difference, ``[batch, *dims]`` each.

    The drift difference ``(f_a − f_b)/‖f_a − f_b‖`` is ERK-Guid's ``v̂``; the solution
    difference ``(x_a − x_b)/‖x_a − x_b‖`` is the alternative that weights eigencomponents
    by ``z_k`` instead of ``z_k²``. With the default scale-relative guard (``eps=None``,
    as :func:`pair_stiffness`) both are NaN for a pair whose ``Δx`` is at roundoff level, and
    a zero ``Δf`` of a resolved pair gives a zero ``v̂``; a float `eps` is added to both
    norms instead (zero differences then give zero vectors).
    """
    _check_pair(x_a, f_a, x_b, f_b)
    _check_eps(eps)
    df, dx = f_a - f_b, x_a - x_b
    if eps is not None:
        v_f = df / broadcast_per_sample(flat_norm(df) + eps, df)
        v_x = dx / broadcast_per_sample(flat_norm(dx) + eps, dx)
        return v_f, v_x
    norm_dx = flat_norm(dx)
    resolved = norm_dx > resolution_floor(_scale(x_a, x_b))
    tiny = torch.finfo(df.dtype).tiny
    nan = torch.full_like(norm_dx, float("nan"))
    inv_f = torch.where(resolved, 1.0 / flat_norm(df).clamp_min(tiny), nan)
    inv_x = torch.where(resolved, 1.0 / norm_dx.clamp_min(tiny), nan)
    return df * broadcast_per_sample(inv_f, df), dx * broadcast_per_sample(inv_x, dx)


# --------------------------------------------------------------------- from RK steps
def stage_pair(tableau) -> tuple[int, int] | None:
    """Return the last two stages ``(i, j)``, ``i < j``, at the same abscissa, or None.

    DOPRI5 and Tsit5 give stages 6/7 (0-based ``(5, 6)``), DOP853 12/13, RK4 2/3. Their
    difference ``k_j − k_i ≈ J (g_j − g_i)`` is Hairer's stiffness probe.
    """
    tab = get_tableau(tableau)
    for j in reversed(range(tab.num_stages)):
        for i in reversed(range(j)):
            if abs(tab.c[i] - tab.c[j]) <= tab.tol and any(
                abs(tab.A[i][m] - tab.A[j][m]) > tab.tol for m in range(tab.num_stages)
            ):
                return i, j
    return None


def hairer_stiffness(step, tableau, *, eps: float | None = None) -> Tensor:
    """Return Hairer's stage-difference estimate ``‖k_j − k_i‖ / ‖g_j − g_i‖`` per sample.

    Uses two stages of an :class:`~stiffkit.integrate.rk.RKStep` at the same abscissa
    (:func:`stage_pair`); no extra evaluation; `eps` as :func:`pair_stiffness` (NaN where the
    stages coincide to roundoff). Multiply by ``|h|`` and compare with
    :func:`~stiffkit.tableaux.stability.real_stability_interval` (DOPRI5 flags ``h·ρ̂ > 3.25``).

    Raises
    ------
    ValueError
        If the tableau has no two stages at the same abscissa (Heun, Bogacki–Shampine,
        Cash–Karp, Fehlberg): use :func:`embedded_stiffness` instead.
    """
    tab = get_tableau(tableau)
    pair = stage_pair(tab)
    if pair is None:
        raise ValueError(
            f"Tableau {tab.name!r} has no two stages at the same abscissa; "
            "use `embedded_stiffness` (one extra evaluation) instead."
        )
    _check_step(step)
    if len(step.k) != tab.num_stages:
        raise ValueError(f"`step` has {len(step.k)} stages but `tableau` has {tab.num_stages}.")
    i, j = pair
    return pair_stiffness(step.g[j], step.k[j], step.g[i], step.k[i], eps=eps)


def _check_step(step) -> None:
    if not isinstance(step, RKStep):
        raise TypeError(f"`step` must be an RKStep (stiffkit.rk_step's result), "
                        f"got {type(step).__name__}.")


def embedded_stiffness(f, step, *, f_new: Tensor | None = None,
                       eps: float | None = None) -> Tensor:
    """Return ``‖f(t+h, x̂) − f(t+h, x)‖ / ‖x̂ − x‖`` per sample from a step's two solutions.

    The fallback for tableaux without a same-abscissa stage pair: one extra evaluation
    ``f(t + h, x̂)`` (two if `f_new` = ``f(t + h, x)`` is not supplied; FSAL methods have
    it as ``step.k[-1]``). Exact on linear problems: it is the Rayleigh-type quotient of
    Proposition 1 with ``Δx = x − x̂``. `eps` as :func:`pair_stiffness`.
    """
    check_callable(f, "f")
    _check_step(step)
    if step.x_hat is None:
        raise ValueError("`step` has no embedded solution (tableau without `b_hat`).")
    _check_eps(eps)
    t_new = step.t + step.h
    if f_new is None:
        f_new = check_output(f(t_new, step.x), step.x)
    else:
        check_tensor(f_new, "f_new")
    f_hat = check_output(f(t_new, step.x_hat), step.x_hat)
    _check_pair(step.x, f_new, step.x_hat, f_hat, names=("step.x", "f_new", "step.x_hat", "f"))
    scale = _scale(step.x, step.x_hat) if eps is None else None
    return secant_ratio(f_new - f_hat, step.x - step.x_hat, eps, scale=scale)


def stiffness_indicator(h, rho: Tensor, tableau) -> Tensor:
    """Return ``|h|·ρ̂ / real_stability_interval(tableau)``: ≳ 1 when stability limits h.

    `rho` is ``[batch]`` (floating); `h` a finite scalar or ``[batch]``.
    """
    check_tensor(rho, "rho")
    h_ = as_per_sample(h, "h", batch=rho.shape[0], dtype=rho.dtype, device=rho.device)
    boundary = real_stability_interval(tableau)
    return h_.abs() * rho / boundary
