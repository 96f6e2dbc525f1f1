"""ERK-Guid's pair correction fused into a few tensor operations (the samplers' hot loop).

:mod:`stiffkit.diffusion.erk` states the correction; this module evaluates it from an
embedded pair ``(Δx, Δf)`` with as few passes over the state as the algebra allows, because
on small models (the 2-D toy: a few milliseconds per evaluation) a dozen small torch
operations per step are a visible fraction of the sampler's time
(``benchmarks/bench_erk_overhead.py``). The correction's own arithmetic is the reference
formula's, operation for operation (the quick runs' golden values depend on float32 bits).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import RESOLUTION_ULPS, broadcast_per_sample, flat_norm, secant_ratio

__all__: list[str] = []

#: ``RESOLUTION_ULPS · eps(dtype)``: the relative guard's floor per unit of ``‖x‖``.
_FLOOR = {dt: RESOLUTION_ULPS * torch.finfo(dt).eps
          for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.ones(n, dtype=dtype, device=device)


class _PairCoefficient(NamedTuple):
    """The pair correction as ``delta = coef · Δf``: ``coef``, the gate (bool) and ``‖Δf‖``,
    each ``[batch]``."""

    coef: Tensor
    gate: Tensor
    norm_df: Tensor

    def delta_norm(self) -> Tensor:
        """``‖delta‖ = |coef| ‖Δf‖`` per sample."""
        return self.coef.abs() * self.norm_df


def _row_sums(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Return ``⟨a, b⟩`` per sample for each pair, ``[len(pairs), batch]``.

    The products go into one ``[m, batch, n]`` buffer (each slice contiguous) and are summed
    by one matrix–vector product: torch's reduction over a short inner axis (the 2-D toy:
    n = 2) is several times slower than a GEMV. For n = 2 the sum is one addition, so the
    result equals ``(a * b).sum(1)`` bit for bit; for larger n it differs by roundoff.
    """
    a0 = pairs[0][0]
    batch = a0.shape[0]
    n = a0.numel() // batch
    flat = [(a.reshape(batch, n), b.reshape(batch, n)) for a, b in pairs]
    if torch.is_grad_enabled() and any(t.requires_grad for pair in flat for t in pair):
        prods = torch.stack([a * b for a, b in flat])  # autograd-safe, one more copy
    else:
        prods = torch.empty(len(flat), batch, n, dtype=a0.dtype, device=a0.device)
        for i, (a, b) in enumerate(flat):
            torch.mul(a, b, out=prods[i])
    return (prods.view(-1, n) @ _ones(n, a0.dtype, a0.device)).view(len(flat), batch)


def _pair_coefficient(f: Tensor, h: float | Tensor, dx: Tensor, df: Tensor, *, w_stiff: float,
                      w_con: float, sign: float, eps: float | None,
                      x: Tensor | None = None, scale: Tensor | None = None) -> _PairCoefficient:
    """ERK-Guid's correction from the pair as ``coef [batch]`` with ``delta = coef · Δf``.

    The reference arithmetic of ``sign · h · β · z · ⟨v̂, f⟩ v̂`` with ``v̂`` kept implicit
    (``z = (w h ρ̂)²``, ``ρ̂ = ‖Δf‖/‖Δx‖``, ``coef = sign h z ⟨Δf, f⟩ / ‖Δf‖²`` where the gate
    is open, else 0), operation for operation, so the corrected states are those of the
    unfused formula; what is saved is the bookkeeping around it: the gate is a bool
    ``where`` (no float β, no NaN-filled ρ̂), ``⟨Δf, f⟩`` and the state's ``‖x‖²`` (the
    scale of the relative guard, when `scale` is not given) come from one GEMV
    (:func:`_row_sums`) instead of two slow short-axis reductions.
    """
    norm_df = flat_norm(df)
    norm_dx = flat_norm(dx)
    if eps is None:
        if scale is None:
            if x is None:
                raise ValueError("the scale-relative guard (`eps=None`) needs the state's scale.")
            dot, sq_x = _row_sums([(df, f), (x, x)])
            scale = sq_x.sqrt()
        else:
            (dot,) = _row_sums([(df, f)])
        resolved = norm_dx > _FLOOR[f.dtype] * scale.to(f.dtype)
        rho = norm_df / torch.where(resolved, norm_dx, 1.0)
        gate = resolved & (rho > w_con)
        denom = norm_df.square()
    else:
        (dot,) = _row_sums([(df, f)])
        guard = norm_dx + eps
        if eps == 0:
            guard = guard.clamp_min(torch.finfo(guard.dtype).tiny)
        rho = norm_df / guard
        gate = rho > w_con
        denom = (norm_df + eps) ** 2
    z = (w_stiff * h * rho) ** 2
    coef = torch.where(gate, sign * h * z * dot / denom, 0.0)
    return _PairCoefficient(coef, gate, norm_df)


def _apply_pair(x_next: Tensor, f: Tensor, x: Tensor, pair: tuple[Tensor, Tensor, Tensor | float],
                *, w_stiff: float, w_con: float, eps: float | None, sign: float,
                diagnose: bool) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The samplers' corrected step from the pair ``(Δx, Δf, h)``: ``x_next + coef · Δf``.

    Returns the corrected state and, when `diagnose`, the per-sample ``ρ̂`` (as
    :func:`stiffkit.estimators.pair_stiffness` defines it: NaN where unresolved), the gate
    and ``‖delta‖`` (else None for each: nothing reads them).
    """
    dx, df, h = pair
    fused = _pair_coefficient(f, h, dx, df, w_stiff=w_stiff, w_con=w_con, sign=sign, eps=eps,
                              x=x)
    if w_stiff > 0:
        x_next = x_next + broadcast_per_sample(fused.coef, df) * df
    if not diagnose:
        return x_next, None, None, None
    rho = secant_ratio(df, dx, eps, norm_df=fused.norm_df,
                       scale=flat_norm(x) if eps is None else None)
    return x_next, rho, fused.gate.to(f.dtype), fused.delta_norm()
