"""Small shared kernels: per-sample reductions, argument checks, progress bars.

This module is the one home of each small formula or check that several modules need
(check arguments here, never inline). Every per-sample reduction runs over *all* non-batch
dimensions of a batched tensor ``x: [batch, *dims]`` (see ``docs/conventions.md``), so the
same code serves 2-D toys and image-shaped states.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "flat_norm",
    "flat_dot",
    "flat_cosine",
    "broadcast_per_sample",
    "check_tensor",
    "check_finite",
    "check_positive",
    "check_same_shape",
    "check_int",
    "check_real",
    "check_output",
    "check_batch",
    "check_callable",
    "check_generator",
    "check_float_dtype",
    "as_per_sample",
    "secant_ratio",
    "resolution_floor",
    "RESOLUTION_ULPS",
    "progress",
]

#: Added to denominators that may vanish (identical points, zero vectors).
TINY = 1e-300


def flat_norm(x: Tensor) -> Tensor:
    """Return the Euclidean norm of each sample, ``[batch, *dims] -> [batch]``."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


def flat_dot(a: Tensor, b: Tensor) -> Tensor:
    """Return the inner product of each pair of samples, ``[batch, *dims] -> [batch]``."""
    return (a.reshape(a.shape[0], -1) * b.reshape(b.shape[0], -1)).sum(dim=1)


def flat_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Return the cosine between each pair of samples (0 where either vector is zero)."""
    na, nb = flat_norm(a), flat_norm(b)
    denom = na * nb
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, flat_dot(a, b) / safe, torch.zeros_like(denom))


def broadcast_per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample quantity ``[batch]`` (or a scalar) to broadcast against ``like``."""
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def check_tensor(x: Any, name: str, *, min_ndim: int = 1) -> Tensor:
    """Raise ``TypeError``/``ValueError`` unless `x` is a floating tensor with ``min_ndim`` dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}.")
    if x.ndim < min_ndim:
        raise ValueError(
            f"`{name}` must have at least {min_ndim} dimension(s) ([batch, *dims]), "
            f"got shape {tuple(x.shape)}."
        )
    return x


def check_finite(x: Tensor | float, name: str) -> None:
    """Raise ``ValueError`` if `x` holds NaN or Inf."""
    if isinstance(x, Tensor):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"`{name}` contains NaN or Inf.")
    elif not math.isfinite(float(x)):
        raise ValueError(f"`{name}` must be finite, got {x}.")


def check_positive(x: Tensor | float, name: str) -> None:
    """Raise ``ValueError`` unless `x` is finite and strictly positive (elementwise)."""
    check_finite(x, name)
    ok = bool((x > 0).all()) if isinstance(x, Tensor) else float(x) > 0
    if not ok:
        raise ValueError(f"`{name}` must be positive.")


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless `a` and `b` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def check_int(n: Any, name: str, minimum: int = 1) -> int:
    """Return `n` as an int, raising ``ValueError`` unless it is an integer ``>= minimum``.

    Python and NumPy integers qualify; bools and floats do not.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ValueError(f"`{name}` must be {what}, got {n!r}.")
    return int(n)


def check_real(
    value: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Return `value` as a python float, raising ``ValueError`` unless it is a finite real number
    within the bounds.

    Python and NumPy reals qualify, and 0-d real tensors and arrays; bools, complex numbers,
    strings and other objects do not. ``lo``/``hi`` (None: unbounded) are inclusive unless
    ``lo_open``/``hi_open``. The message names the argument and the admissible range, e.g.
    ``"`w` must be a finite number >= 0, got -1."``
    """
    if not _is_real(value):
        raise ValueError(f"`{name}` must be a real number, got {value!r} "
                         f"({type(value).__name__}).")
    out = float(value)
    ok = math.isfinite(out)
    if ok and lo is not None:
        ok = out > lo if lo_open else out >= lo
    if ok and hi is not None:
        ok = out < hi if hi_open else out <= hi
    if not ok:
        raise ValueError(f"`{name}` must be a finite number{_range(lo, hi, lo_open, hi_open)}, "
                         f"got {value!r}.")
    return out


def _is_real(value: Any) -> bool:
    """Whether `value` is a real, non-bool number or a 0-d real, non-bool tensor/array."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return not isinstance(value, np.bool_)
    if isinstance(value, Tensor):
        return value.ndim == 0 and not (value.is_complex() or value.dtype == torch.bool)
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and (np.issubdtype(value.dtype, np.floating)
                                    or np.issubdtype(value.dtype, np.integer))
    return False


def _range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """Describe the bounds of :func:`check_real`: ``" >= 0"``, ``" in (0, 1)"``, or ``""``."""
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi:g}"
    return ""


def as_per_sample(
    value: Any,
    name: str,
    *,
    batch: int,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    check: bool = True,
    bound: str | None = None,
) -> Tensor:
    """Return a scalar or per-sample quantity (a time, a step, a noise level) as a tensor.

    The one coercion of ``t``, ``h`` and ``σ`` arguments: `value` becomes a tensor of `dtype`
    on `device`, shape ``[]`` (one value for the batch) or ``[batch]`` (one per sample).

    Parameters
    ----------
    value : float or Tensor, [] or [batch]
    name : str
        The argument's name in error messages.
    batch : int
        Batch size a per-sample `value` must have.
    dtype, device
        Of the result (not copied when `value` already has them).
    check : bool
        Validate shape and values; off on hot paths whose values were validated before (a
        check synchronises the device).
    bound : {None, "non-negative", "positive"}
        With `check`: besides finiteness, require ``>= 0`` or ``> 0``.

    Returns
    -------
    Tensor, [] or [batch]

    Raises
    ------
    TypeError
        If `value` is not a real number or real tensor (always checked: it costs nothing).
    ValueError
        With `check`: another shape, NaN/Inf, or a value outside `bound`.
    """
    if isinstance(value, Tensor) and (value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"`{name}` must be real, got a {value.dtype} tensor.")
    try:
        out = torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"`{name}` must be a real number or a tensor of them, got {value!r} "
                        f"({type(value).__name__}).") from err
    if not check:
        return out
    if out.ndim > 1 or (out.ndim == 1 and out.shape[0] != batch):
        raise ValueError(
            f"`{name}` must be a scalar or have shape [batch] = [{batch}], got {tuple(out.shape)}."
        )
    finite = bool(torch.isfinite(out).all())
    if bound == "positive" and not (finite and bool((out > 0).all())):
        raise ValueError(f"`{name}` must be positive and finite.")
    if bound == "non-negative" and not (finite and bool((out >= 0).all())):
        raise ValueError(f"`{name}` must be non-negative and finite.")
    if not finite:
        raise ValueError(f"`{name}` contains NaN or Inf.")
    return out


def check_batch(x: Tensor, name: str) -> Tensor:
    """Return `x` (a checked floating tensor ``[batch, *dims]``) unless its batch is empty."""
    check_tensor(x, name)
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` has an empty batch (shape {tuple(x.shape)}); "
                         "pass at least one sample.")
    return x


def check_callable(f: Any, name: str) -> Any:
    """Return `f`, raising ``TypeError`` unless it is callable."""
    if not callable(f):
        raise TypeError(f"`{name}` must be callable, got {type(f).__name__}.")
    return f


def check_generator(generator: Any, name: str = "generator") -> torch.Generator | None:
    """Return `generator`, raising ``TypeError`` unless it is None or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`{name}` must be a torch.Generator or None, "
                        f"got {type(generator).__name__}.")
    return generator


def check_float_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """Return `dtype`, raising ``TypeError`` unless it is a floating ``torch.dtype``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`{name}` must be a floating torch.dtype (e.g. torch.float64), "
                        f"got {dtype!r}.")
    return dtype


def check_output(y: Any, x: Tensor, name: str = "f", *, same_dtype: bool = False) -> Tensor:
    """Return `y`, the output of the callable `name` at state `x`, or raise if it is wrong.

    Drifts, denoisers and their products must return a tensor of the state's shape (and,
    with ``same_dtype``, its dtype).

    Raises
    ------
    TypeError
        If `y` is not a tensor.
    ValueError
        If `y`'s shape or dtype differs from `x`'s.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"`{name}` must return a torch.Tensor, got {type(y).__name__}.")
    if y.shape != x.shape:
        raise ValueError(
            f"`{name}` must return a tensor of the state's shape {tuple(x.shape)}, "
            f"got {tuple(y.shape)}."
        )
    if same_dtype and y.dtype != x.dtype:
        raise ValueError(f"`{name}` returned dtype {y.dtype} for a state of dtype {x.dtype}.")
    return y


#: A pair's ``‖Δx‖`` at or below ``RESOLUTION_ULPS · eps(dtype) · ‖x‖`` is roundoff, not a
#: direction: the scale-relative guard reports ρ̂ = NaN there. Sixteen ulps keep ρ̂'s own
#: rounding error below a few per cent where it is reported (float64: Δx/x > 3.6e-15,
#: float32: > 1.9e-6).
RESOLUTION_ULPS = 16


def resolution_floor(scale: Tensor) -> Tensor:
    """Return ``RESOLUTION_ULPS · eps(dtype) · scale``: the smallest resolvable ``‖Δx‖``.

    `scale` is ``[batch]``, the states' norm (e.g. ``max(‖x_a‖, ‖x_b‖)``).
    """
    return RESOLUTION_ULPS * torch.finfo(scale.dtype).eps * scale


def secant_ratio(df: Tensor, dx: Tensor, eps: float | None, *, norm_df: Tensor | None = None,
                 scale: Tensor | None = None) -> Tensor:
    """Return ``‖df‖ / ‖dx‖`` per sample, ``[batch, *dims] -> [batch]`` (no checks).

    The kernel of every two-point stiffness estimate (Proposition 1's ρ̂, Hairer's stage
    pair, ERK-Guid's ρ̂); the public, validating form is
    :func:`stiffkit.estimators.pair_stiffness`. Two guards:

    * ``eps=None`` (scale-relative): ``‖df‖ / ‖dx‖`` where ``‖dx‖`` exceeds
      :func:`resolution_floor` of `scale` (``[batch]``, required), NaN where it does not —
      a difference at roundoff level carries no stiffness information, whatever the
      states' scale or dtype;
    * a float ``eps ≥ 0`` (absolute, ERK-Guid's reference code uses 1e-8):
      ``‖df‖ / (‖dx‖ + eps)``; with ``eps = 0`` the denominator is clamped to the dtype's
      smallest normal number, so identical points give 0, never NaN. An absolute guard
      biases ρ̂ low once ``‖dx‖`` is not large against `eps` (small states, float32).

    Pass `norm_df` (``‖df‖``, ``[batch]``) when the caller has it already, to save a pass
    over `df`.
    """
    if norm_df is None:
        norm_df = flat_norm(df)
    norm_dx = flat_norm(dx)
    if eps is None:
        if scale is None:
            raise ValueError("the scale-relative guard (`eps=None`) needs the states' `scale`.")
        resolved = norm_dx > resolution_floor(scale.to(norm_dx.dtype))
        return torch.where(resolved, norm_df / torch.where(resolved, norm_dx, 1.0),
                           torch.full_like(norm_dx, float("nan")))
    denom = norm_dx + eps
    if eps == 0:
        denom = denom.clamp_min(torch.finfo(denom.dtype).tiny)
    return norm_df / denom


def progress(iterable, *, enabled: bool, desc: str, unit: str = "it", total: int | None = None):
    """Wrap `iterable` in a tqdm progress bar when `enabled` (else return it unchanged)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=False)
