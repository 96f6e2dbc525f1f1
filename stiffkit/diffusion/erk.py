"""ERK-Guid: the embedded Runge–Kutta pair's error turned into a stabilising correction.

Kong, Lee, Hong, Kim, "Error as Signal: Stiffness-Aware Diffusion Sampling via Embedded
Runge-Kutta Guidance" (ICLR 2026), docs/theory/erk_guid.md. Given two points of the
trajectory with their drifts, ``(x_a, f_a)`` and ``(x_b, f_b)``, the pair estimates the
stiffness and its direction at no extra evaluation (Proposition 1)::

    ρ̂ = ‖f_a − f_b‖ / ‖x_a − x_b‖,   v̂ = (f_a − f_b) / ‖f_a − f_b‖,

(the reference code adds ε = 1e-8 to both denominators: ``ErkGuid(eps=PAIR_EPS)``; by
default a pair whose ``Δx`` is at roundoff level of the state gives no correction), and
the step ``x_next`` of size ``h`` is corrected along ``v̂``::

    z = (w_stiff · h · ρ̂)²,   β = 1[ρ̂ > w_con],   x_next ← x_next + sign · h β z ⟨v̂, f⟩ v̂,

with ``f`` the drift at the step's start and ``sign = −1`` (every solver; the reference code
uses ``+1`` for DEIS, far worse on the tree: figures/deis_sign.md). On a linear drift with Heun,
``w_stiff = 1/√6`` cancels the leading local truncation error along ``v̂``
(:data:`W_STIFF_THEORY`).

The settings are one frozen value, :class:`ErkGuid`; each sampler step hands the pair it
already has to the driver as an :class:`ErkPair` (:mod:`stiffkit.diffusion.samplers`). With
the default scale-relative guard the coefficient is formed from squared sums,
``sign · w² h³ ⟨Δf, f⟩ / ‖Δx‖²`` (the same value, fewer tensor operations; docs/theory/
erk_guid.md). The exact-eigenpair variant's oracles live in :mod:`stiffkit.diffusion.oracle`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import (
    RESOLUTION_ULPS,
    as_per_sample,
    broadcast_per_sample,
    check_batch,
    check_finite,
    check_positive,
    check_real,
    check_tensor,
    flat_dot,
    flat_norm,
    secant_ratio,
)
from stiffkit.diffusion.oracle import ORACLE_METHODS, OracleSpec
from stiffkit.estimators.pair import PAIR_EPS

__all__ = [
    "W_STIFF_THEORY",
    "check_correction_sign",
    "ErkGuid",
    "ErkPair",
    "ErkCorrection",
    "erk_guid_correction",
]

#: The w_stiff that cancels Heun's leading LTE on a linear drift: (hλ)³/6 = w²(hλ)³.
W_STIFF_THEORY = 1.0 / math.sqrt(6.0)



def check_correction_sign(sign: float | None) -> float | None:
    """Return `sign` (−1, +1 or None) unchanged, raising ``ValueError`` for anything else.

    The one check of a correction sign: :class:`ErkGuid`'s override and a solver's default
    (:class:`stiffkit.diffusion.samplers.Solver`).
    """
    if sign is not None and (isinstance(sign, bool) or sign not in (-1, 1)):
        raise ValueError(f"`correction_sign` must be -1, +1 or None, got {sign!r}.")
    return sign


@dataclass(frozen=True)
class ErkGuid:
    """ERK-Guid's settings, validated on construction.

    Pass it to :func:`stiffkit.diffusion.sample` as ``erk=ErkGuid(...)``; the short form
    ``sample(..., w_stiff=..., w_con=...)`` builds the same value from loose keywords.

    Parameters
    ----------
    w_stiff : float
        Strength (≥ 0); 0 disables the correction and reproduces the plain solver bit for
        bit. :data:`W_STIFF_THEORY` = 1/√6 cancels Heun's leading LTE on linear drifts.
    w_con : float
        Gate: the correction applies where ``ρ > w_con``.
    correction_sign : {-1, +1} or None
        Sign of the correction; None takes the solver's own
        (:data:`stiffkit.diffusion.samplers.DEFAULT_CORRECTION_SIGN`).
    eps : float or None
        Denominator guard of the pair estimates. None (default): the estimators'
        scale-relative guard (:func:`stiffkit.estimators.pair_stiffness`), so the sampler's
        ``erk_rho`` is :func:`stiffkit.analyze`'s ``rho_hat``; where the pair's ``Δx`` is at
        roundoff level of the state, ρ̂ is NaN (recorded so in ``erk_rho``) and the step is
        left uncorrected. :data:`stiffkit.estimators.PAIR_EPS` = 1e-8: the reference code's
        absolute guard ``‖Δf‖ / (‖Δx‖ + 1e-8)``, which reproduces it bit for bit but biases
        ρ̂ low where ``‖Δx‖`` is not large against 1e-8 (small states, float32).
    oracle : {None, "dense", "power", "arpack"} or callable
        Replace ``ρ̂`` and ``v̂`` by the exact dominant eigenpair of ``∂f/∂x`` at the step's
        start (``callable(sigma, x) -> (|λ₁|, v₁)``, e.g.
        :func:`~stiffkit.diffusion.oracle.mixture_oracle`), on the steps where the pair
        would be used — separating the estimator's quality from the
        correction's. Its Jacobian products are not counted in ``nfe``, though for a
        learned denoiser each of them does evaluate the network.

    Raises
    ------
    ValueError
        Naming the field: a negative or non-finite `w_stiff`, a non-finite `w_con`, a
        non-positive `eps`, a sign other than ±1, an unknown oracle.
    """

    w_stiff: float = 0.0
    w_con: float = 0.0
    correction_sign: float | None = None
    eps: float | None = None
    oracle: OracleSpec = None

    def __post_init__(self) -> None:
        check_real(self.w_stiff, "w_stiff")
        check_real(self.w_con, "w_con")
        if self.w_stiff < 0:
            raise ValueError(f"`w_stiff` must be non-negative, got {self.w_stiff}.")
        if self.eps is not None:
            check_real(self.eps, "eps")
            check_positive(float(self.eps), "eps")
        check_correction_sign(self.correction_sign)
        oracle = self.oracle
        if not (oracle is None or callable(oracle) or oracle in ORACLE_METHODS):
            raise ValueError(
                "`oracle` must be None, 'dense', 'power', 'arpack' or a callable, "
                f"got {oracle!r}."
            )

    @property
    def corrects(self) -> bool:
        """Whether the correction is added to the steps (``w_stiff > 0``)."""
        return self.w_stiff > 0

    @property
    def needs_pair(self) -> bool:
        """Whether the sampler must supply a pair: a correction, or an oracle to record."""
        return self.corrects or self.oracle is not None

    def sign_for(self, default: float) -> float:
        """Return the sign to use with a solver whose own sign is `default`."""
        return default if self.correction_sign is None else float(self.correction_sign)


class ErkPair(NamedTuple):
    """The embedded pair a sampler step hands to ERK-Guid, already differenced.

    Attributes
    ----------
    dx, df : Tensor, [batch, *dims]
        ``x_a − x_b`` and ``f_a − f_b``.
    h : Tensor or float
        The positive step size the correction scales with (0-d; DEIS: the previous step's).
    """

    dx: Tensor
    df: Tensor
    h: Tensor | float


class ErkCorrection(NamedTuple):
    """One ERK-Guid correction, per sample.

    Attributes
    ----------
    delta : Tensor, [batch, *dims]
        What is added to the step's result (already signed).
    rho : Tensor, [batch]
        The stiffness used (ρ̂ from the pair, or the oracle's ``|λ₁|``).
    beta : Tensor, [batch]
        The gate ``1[ρ > w_con]`` (0 or 1, in the state's dtype).
    delta_norm : Tensor, [batch]
        ``‖delta‖`` per sample (the sampler's ``erk_correction_norm`` diagnostic).
    """

    delta: Tensor
    rho: Tensor
    beta: Tensor
    delta_norm: Tensor


def erk_guid_correction(
    f: Tensor,
    h: float | Tensor,
    *,
    w_stiff: float,
    w_con: float,
    dx: Tensor | None = None,
    df: Tensor | None = None,
    rho: Tensor | None = None,
    v: Tensor | None = None,
    sign: float = -1.0,
    eps: float | None = PAIR_EPS,
    scale: Tensor | None = None,
    state: Tensor | None = None,
) -> ErkCorrection:
    """Return ERK-Guid's correction of one step (no function evaluations).

    Parameters
    ----------
    f : Tensor, [batch, *dims]
        Drift at the step's start; its component along the direction is what is removed.
    h : float or Tensor
        Positive step size ``σ_i − σ_{i+1}`` (DEIS: the previous step's size).
    w_stiff, w_con : float
        Strength and gate threshold (the paper's ``w_stiff`` and ``w_con``).
    dx, df : Tensor, [batch, *dims]
        The pair's solution and drift differences ``x_a − x_b``, ``f_a − f_b``; used when
        `rho` / `v` are not given.
    rho, v : Tensor, optional
        Replace the pair estimates (the *oracle* variant: exact ``|λ₁|`` ``[batch]`` and
        unit ``v₁`` ``[batch, *dims]``).
    sign : float
        −1 subtracts the correction (every solver's default), +1 adds it (DEIS upstream).
    eps : float or None
        Denominator guard of the pair estimates (:data:`stiffkit.estimators.PAIR_EPS`, the
        reference code's 1e-8), or None for the scale-relative guard, which needs `scale`
        or `state`: an unresolved pair gets ρ̂ = NaN and no correction. With it the
        coefficient is formed from squared sums (``w² h³ ⟨Δf, f⟩ / ‖Δx‖²``, the same value
        to roundoff, in about half the tensor operations; in float32 a ``‖Δx‖`` below
        ~1e-19 counts as unresolved).
    scale : Tensor, [batch], optional
        The state's norm ``‖x‖`` (``eps=None`` only).
    state : Tensor, [batch, *dims], optional
        The step's start ``x`` itself, instead of `scale` (what the samplers pass: its
        squared norm comes with the pair's sums).

    Returns
    -------
    ErkCorrection
        ``delta [batch, *dims]`` and the per-sample ``rho``, ``beta``, ``delta_norm``.

    Raises
    ------
    TypeError
        If `f`, `dx`, `df`, `rho`, `v`, `scale` or `state` is not a floating tensor, or `h`
        not numeric.
    ValueError
        Naming the argument: an empty batch, NaN / Inf in a tensor, shapes that differ from
        `f`'s (``[batch]`` for `rho` and `scale`), both `scale` and `state`, a step that is
        not positive and finite, a negative or non-finite `w_stiff`, a non-finite `w_con`, a
        `sign` other than ±1, a negative `eps`, neither the pair nor the oracle's `rho` and
        `v`.
    """
    if (rho is None or v is None) and (dx is None or df is None):
        raise ValueError("Give the pair differences `dx` and `df`, or both `rho` and `v`.")
    check_batch(f, "f")
    batch = f.shape[0]
    h_val = as_per_sample(h, "h", batch=batch, dtype=f.dtype, device=f.device, check=False)
    if h_val.ndim > 1 or (h_val.ndim == 1 and h_val.shape[0] != batch):
        raise ValueError(f"`h` must be a scalar or have shape [batch] = [{batch}], got "
                         f"{tuple(h_val.shape)}.")
    if not bool(((h_val > 0) & torch.isfinite(h_val)).all()):
        raise ValueError(f"`h` must be a positive step size, got {h!r}.")
    check_real(w_stiff, "w_stiff", lo=0)
    check_real(w_con, "w_con")
    if isinstance(sign, bool) or sign not in (-1, 1):
        raise ValueError(f"`sign` must be -1 or +1, got {sign!r}.")
    if eps is not None:
        check_real(eps, "eps", lo=0)
    if scale is not None and state is not None:
        raise ValueError("Give the state's norm `scale` or the `state`, not both.")
    for name, value, shape in (("dx", dx, f.shape), ("df", df, f.shape), ("v", v, f.shape),
                               ("rho", rho, f.shape[:1]), ("scale", scale, f.shape[:1]),
                               ("state", state, f.shape)):
        if value is not None:
            check_tensor(value, name)
            if value.shape != shape:
                raise ValueError(f"`{name}` must have shape {tuple(shape)}, got "
                                 f"{tuple(value.shape)}.")
            check_finite(value, name)
    check_finite(f, "f")
    return _correction(f, h, w_stiff=w_stiff, w_con=w_con, dx=dx, df=df, rho=rho, v=v,
                       sign=sign, eps=eps, scale=scale, state=state)


class _PairCoefficient(NamedTuple):
    """The relative-guard correction ``delta = coef · df`` and what it was decided from."""

    coef: Tensor  # [batch]
    gate: Tensor  # [batch] bool: resolved and ρ̂ > w_con
    resolved: Tensor  # [batch] bool: ‖Δx‖ above the state's roundoff floor
    dx2: Tensor  # [batch] ‖Δx‖²
    df2: Tensor  # [batch] ‖Δf‖²


@functools.lru_cache(maxsize=16)
def _ones(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached vector of `n` ones: the row sums of :func:`_pair_coefficient`'s products."""
    return torch.ones(n, dtype=dtype, device=device)


def _pair_coefficient(f: Tensor, h: float | Tensor, dx: Tensor, df: Tensor, *, w_stiff: float,
                      w_con: float, sign: float, scale: Tensor | None = None,
                      state: Tensor | None = None) -> _PairCoefficient:
    """The correction's coefficient with the scale-relative guard, from squared sums.

    Substituting ρ̂ and v̂ into the module docstring's formula,
    ``h z ⟨v̂, f⟩ v̂ = w² h³ ρ̂² ⟨Δf, f⟩ Δf / ‖Δf‖² = w² h³ ⟨Δf, f⟩ Δf / ‖Δx‖²``: one
    coefficient per sample from ``‖Δx‖²``, ``‖Δf‖²`` and ``⟨Δf, f⟩`` (and ``‖x‖²`` when the
    `state` is given instead of its norm `scale`), all from one matrix–vector product of the
    stacked elementwise products; the gate ``ρ̂ > w_con`` is ``‖Δf‖² > w_con² ‖Δx‖²``. About
    half the tensor operations of forming ρ̂ and the norms (the samplers' hot loop). The
    squares are in the state's dtype: in float32 a pair with ``‖Δx‖`` below ~1e-19 (its
    square underflows) is treated as unresolved.
    """
    if scale is None and state is None:
        raise ValueError("the scale-relative guard (`eps=None`) needs the states' `scale`.")
    batch, n = f.shape[0], f[0].numel()
    rows = [dx * dx, df * df, df * f] + ([state * state] if scale is None else [])
    sums = torch.stack([r.reshape(batch, n) for r in rows]) @ _ones(n, f.dtype, f.device)
    dx2, df2, dot, *rest = sums.unbind()
    x2 = rest[0] if scale is None else scale * scale
    floor = RESOLUTION_ULPS * torch.finfo(f.dtype).eps
    resolved = dx2 > (floor * floor) * x2
    gate = resolved & (df2 > (w_con * w_con) * dx2) if w_con >= 0 else resolved
    if isinstance(h, Tensor):  # a 0-d step as a number (one factor); per sample in f's dtype
        h = float(h) if h.ndim == 0 else h.to(f.dtype)
    coef = torch.where(gate, dot / dx2 * (sign * w_stiff * w_stiff * h**3), 0.0)
    return _PairCoefficient(coef, gate, resolved, dx2, df2)


def _correction(f: Tensor, h: float | Tensor, *, w_stiff: float, w_con: float,
                dx: Tensor | None = None, df: Tensor | None = None, rho: Tensor | None = None,
                v: Tensor | None = None, sign: float, eps: float | None,
                scale: Tensor | None = None, state: Tensor | None = None) -> ErkCorrection:
    """:func:`erk_guid_correction` on checked arguments (the samplers' per-step path)."""
    if v is None and eps is None:
        pc = _pair_coefficient(f, h, dx, df, w_stiff=w_stiff, w_con=w_con, sign=sign,
                               scale=scale, state=state)
        rho = torch.where(pc.resolved, (pc.df2 / pc.dx2).sqrt(), float("nan"))
        return ErkCorrection(broadcast_per_sample(pc.coef, df) * df, rho, pc.gate.to(f.dtype),
                             pc.coef.abs() * pc.df2.sqrt())
    norm_df = flat_norm(df) if df is not None else None
    if rho is None:
        rho = secant_ratio(df, dx, eps, norm_df=norm_df, scale=scale)
    beta = (rho > w_con).to(f.dtype)
    z = (w_stiff * h * rho) ** 2
    if v is None:
        # The reference code's absolute guard: v̂ = df / (‖df‖ + ε), kept implicit,
        # delta = c·df with c = sign·h·β·z·⟨df, f⟩/(‖df‖ + ε)² (its values bit for bit).
        coef = sign * h * beta * z * flat_dot(df, f) / (norm_df + eps) ** 2  # [batch]
        delta = broadcast_per_sample(coef, df) * df
        return ErkCorrection(delta, rho, beta, coef.abs() * norm_df)
    coef = sign * h * beta * z * flat_dot(v, f)  # [batch]
    delta = broadcast_per_sample(coef, f) * v
    return ErkCorrection(delta, rho, beta, flat_norm(delta))
