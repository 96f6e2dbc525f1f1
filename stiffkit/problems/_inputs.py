"""Input checks shared by the test problems (arrays, states); scalars use ``check_real``."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from stiffkit._utils import check_tensor

__all__ = ["array_input", "state_input"]


def array_input(v: Any, name: str, shape: tuple[int | None, ...], *, allow_complex: bool = False,
           allow_empty: bool = False) -> np.ndarray:
    """Return `v` as a finite, read-only float64/complex128 copy of ``shape`` (None: any)."""
    a = np.array(v)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"`{name}` must be numeric, got dtype {a.dtype}.")
    if np.iscomplexobj(a) and not allow_complex:
        raise ValueError(f"`{name}` must be real.")
    a = a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)
    if a.ndim != len(shape) or any(m is not None and m != k for m, k in zip(shape, a.shape)):
        want = "[" + ", ".join("*" if m is None else str(m) for m in shape) + "]"
        raise ValueError(f"`{name}` must have shape {want}, got {list(a.shape)}.")
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` contains NaN or Inf.")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"`{name}` must be non-empty.")
    a.setflags(write=False)
    return a


def state_input(x: Any, n: int, name: str = "x") -> Tensor:
    """Raise unless `x` is a floating tensor of shape ``[batch, n]``."""
    check_tensor(x, name, min_ndim=2)
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"`{name}` must have shape [batch, {n}], got {tuple(x.shape)}.")
    return x

