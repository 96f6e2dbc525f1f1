"""Butcher tableaux of explicit Runge–Kutta methods and embedded pairs.

A tableau is immutable data: exact rational coefficients (:class:`fractions.Fraction`)
underneath, float64 NumPy arrays and torch tensors on request. It validates itself on
construction, so a tableau that exists is consistent.

Coefficients that are irrational (DOP853 involves √6) or were published as decimals
(Tsit5) are stored as the exact rationals of their published decimal expansions, with
a per-tableau tolerance ``tol`` for the consistency checks and order conditions; every
other method has ``tol = 0`` and is checked exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from stiffkit._utils import check_float_dtype, check_int
from stiffkit.tableaux.trees import satisfied_order

__all__ = ["ButcherTableau"]

Number = int | str | Fraction
Vector = tuple[Fraction, ...]
Matrix = tuple[Vector, ...]


def _to_fraction(value: Number | float, name: str) -> Fraction:
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must hold numbers, got a bool.")
    if isinstance(value, float):
        # Binary floats are taken at their exact value; prefer strings for decimals.
        if not np.isfinite(value):
            raise ValueError(f"`{name}` contains a non-finite value {value}.")
        return Fraction(value)
    try:
        return Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"`{name}` contains {value!r}, which is not a number.") from exc


def _sequence(values, name: str) -> list:
    """Return `values` as a list, raising ``TypeError`` unless it is a sequence of entries (a
    string is one number, not a sequence of characters)."""
    try:
        if isinstance(values, str | bytes):
            raise TypeError
        return list(values)
    except TypeError:
        raise TypeError(f"`{name}` must be a sequence of numbers, got {values!r}.") from None


def _vector(values: Sequence[Number | float], name: str) -> Vector:
    return tuple(_to_fraction(v, name) for v in _sequence(values, name))


def _matrix(rows: Sequence[Sequence[Number | float]], s: int) -> Matrix:
    """Build an s×s matrix from possibly ragged lower-triangular rows (missing = 0)."""
    if isinstance(rows, str | bytes) or not hasattr(rows, "__len__"):
        raise TypeError(f"`A` must be a sequence of rows, got {type(rows).__name__}.")
    if len(rows) != s:
        raise ValueError(f"`A` must have {s} rows (one per stage), got {len(rows)}.")
    out = []
    for i, row in enumerate(rows):
        row = _sequence(row, f"A[{i}]")
        if len(row) > s:
            raise ValueError(f"`A` row {i} has {len(row)} entries, more than {s} stages.")
        vals = [_to_fraction(v, "A") for v in row]
        out.append(tuple(vals + [Fraction(0)] * (s - len(vals))))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """An explicit Runge–Kutta method, optionally with embedded weights.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"dopri5"``.
    A : sequence of sequences
        Stage coefficients, s rows; rows may be ragged (missing entries are 0). Must
        be strictly lower triangular (explicit method).
    b : sequence, length s
        Weights of the main solution ``x + h Σ b_i k_i``.
    c : sequence, length s
        Abscissae; must equal the row sums of `A`.
    order : int
        Declared order of the main solution.
    b_hat : sequence, length s, optional
        Weights of the embedded solution ``x + h Σ b̂_i k_i``.
    embedded_order : int, optional
        Declared order of the embedded solution (required with `b_hat`).
    fsal : bool
        First-same-as-last: the last stage is evaluated at the new solution
        (last row of `A` equals `b`, ``b_s = 0``, ``c_s = 1``), so it is the next
        step's first stage.
    tol : str or Fraction
        Tolerance of the consistency checks and order conditions. 0 (exact) unless
        the coefficients are published decimals.
    citation : str
        Where the coefficients come from.
    b_hat_aux : sequence, optional
        A second embedded method (DOP853's order-3 weights), kept for error
        estimators that combine two estimates.
    aux_order : int, optional
        Declared order of `b_hat_aux`.

    Raises
    ------
    TypeError
        If `name` or `citation` is not a string, or a coefficient vector / row of `A` is not
        a sequence (a string is one entry, not a sequence).
    ValueError
        If the tableau is inconsistent, including a declared order (or embedded / aux
        order) that its coefficients do not satisfy; the message names the broken condition.
    """

    name: str
    A: Matrix
    b: Vector
    c: Vector
    order: int
    b_hat: Vector | None = None
    embedded_order: int | None = None
    fsal: bool = False
    tol: Fraction = Fraction(0)
    citation: str = field(default="", repr=False)
    b_hat_aux: Vector | None = field(default=None, repr=False)
    aux_order: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Normalise user input (lists, strings, floats) into exact immutable tuples.
        set_ = functools.partial(object.__setattr__, self)
        if not isinstance(self.name, str):
            raise TypeError(f"`name` must be a string, got {type(self.name).__name__}.")
        if not self.name:
            raise ValueError("`name` must be a non-empty string.")
        if not isinstance(self.citation, str):
            raise TypeError(f"`citation` must be a string, got {type(self.citation).__name__}.")
        b = _vector(self.b, "b")
        s = len(b)
        if s == 0:
            raise ValueError("`b` must have at least one weight.")
        set_("b", b)
        set_("A", _matrix(self.A, s))
        c = _vector(self.c, "c")
        if len(c) != s:
            raise ValueError(f"`c` must have {s} entries (one per stage), got {len(c)}.")
        set_("c", c)
        set_("tol", _to_fraction(self.tol, "tol"))
        for attr in ("b_hat", "b_hat_aux"):
            vec = getattr(self, attr)
            if vec is not None:
                vec = _vector(vec, attr)
                if len(vec) != s:
                    raise ValueError(f"`{attr}` must have {s} entries, got {len(vec)}.")
                set_(attr, vec)
        self._validate()

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        s, tol = self.num_stages, self.tol
        check_int(self.order, "order")
        if (self.b_hat is None) != (self.embedded_order is None):
            raise ValueError("`b_hat` and `embedded_order` must be given together.")
        if (self.b_hat_aux is None) != (self.aux_order is None):
            raise ValueError("`b_hat_aux` and `aux_order` must be given together.")
        if self.tol < 0:
            raise ValueError("`tol` must be non-negative.")
        for i in range(s):
            for j in range(i, s):
                if self.A[i][j] != 0:
                    raise ValueError(
                        f"`A` must be strictly lower triangular (explicit method): "
                        f"A[{i}][{j}] = {self.A[i][j]}."
                    )
        for i in range(s):
            row = sum(self.A[i], Fraction(0))
            if abs(row - self.c[i]) > tol:
                raise ValueError(
                    f"Row sums of `A` must equal `c`: row {i} sums to {float(row):.17g} "
                    f"but c[{i}] = {float(self.c[i]):.17g}."
                )
        for attr in ("b", "b_hat", "b_hat_aux"):
            vec = getattr(self, attr)
            if vec is not None and abs(sum(vec, Fraction(0)) - 1) > tol:
                raise ValueError(
                    f"The weights `{attr}` must sum to 1, got {float(sum(vec)):.17g}."
                )
        if self.b_hat is not None and all(abs(e) <= tol for e in self.error_weights):
            raise ValueError("`b_hat` must differ from `b` (the error weights are all zero).")
        if self.fsal and not self.has_fsal_structure:
            raise ValueError(
                "`fsal=True` requires c[-1] = 1, b[-1] = 0 and the last row of `A` equal to `b`."
            )
        self._check_declared_orders()

    def _check_declared_orders(self) -> None:
        """Raise unless the coefficients satisfy every declared order (by rooted trees)."""
        for weights, order_name in (("b", "order"), ("b_hat", "embedded_order"),
                                    ("b_hat_aux", "aux_order")):
            vec, declared = getattr(self, weights), getattr(self, order_name)
            if vec is None:
                continue
            check_int(declared, order_name)
            held = satisfied_order(self.A, vec, self.tol, declared)
            if held < declared:
                raise ValueError(
                    f"`{order_name}` = {declared} is not satisfied by `{weights}`: the order "
                    f"conditions hold only up to order {held}."
                )

    @property
    def has_fsal_structure(self) -> bool:
        """Whether the last stage is ``f(t + h, x_new)`` (derived from the coefficients)."""
        s, tol = self.num_stages, self.tol
        return (
            s > 1
            and abs(self.c[-1] - 1) <= tol
            and abs(self.b[-1]) <= tol
            and all(abs(self.A[-1][j] - self.b[j]) <= tol for j in range(s))
        )

    # ------------------------------------------------------------- properties
    @property
    def num_stages(self) -> int:
        """Number of stages s."""
        return len(self.b)

    @property
    def is_embedded(self) -> bool:
        """Whether the tableau carries embedded weights `b_hat`."""
        return self.b_hat is not None

    @property
    def exact(self) -> bool:
        """Whether the coefficients are exact (``tol == 0``)."""
        return self.tol == 0

    @property
    def error_weights(self) -> Vector:
        """Weights ``e = b − b̂`` of the error estimate ``x − x̂ = h Σ e_i k_i``."""
        if self.b_hat is None:
            raise ValueError(f"Tableau {self.name!r} has no embedded weights `b_hat`.")
        return tuple(bi - ei for bi, ei in zip(self.b, self.b_hat))

    @property
    def evals_per_step(self) -> int:
        """Function evaluations per step in a chain of steps (s − 1 with FSAL reuse)."""
        return self.num_stages - 1 if self.fsal else self.num_stages

    def embedded(self) -> ButcherTableau:
        """Return the embedded method as a tableau of its own (``b ← b̂``)."""
        if self.b_hat is None or self.embedded_order is None:
            raise ValueError(f"Tableau {self.name!r} has no embedded weights `b_hat`.")
        return ButcherTableau(
            name=f"{self.name}[embedded]",
            A=self.A,
            b=self.b_hat,
            c=self.c,
            order=self.embedded_order,
            tol=self.tol,
            citation=self.citation,
        )

    # ------------------------------------------------------------- conversion
    @functools.cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        def arr(v):
            return np.array([float(x) for x in v], dtype=np.float64)

        out = {
            "A": np.array([[float(x) for x in row] for row in self.A], dtype=np.float64),
            "b": arr(self.b),
            "c": arr(self.c),
        }
        if self.b_hat is not None:
            out["b_hat"] = arr(self.b_hat)
            out["error_weights"] = arr(self.error_weights)
        for arr_ in out.values():
            arr_.setflags(write=False)
        return out

    def numpy(self) -> dict[str, np.ndarray]:
        """Return read-only float64 arrays ``A, b, c`` (and ``b_hat``, ``error_weights``)."""
        return dict(self._arrays)

    def torch(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Return the coefficients as torch tensors of `dtype` (floating) on `device`."""
        check_float_dtype(dtype)
        return {k: torch.tensor(v, dtype=dtype, device=device) for k, v in self._arrays.items()}

    def __repr__(self) -> str:
        emb = f"({self.embedded_order})" if self.is_embedded else ""
        fsal = ", FSAL" if self.fsal else ""
        return (f"ButcherTableau({self.name!r}, order {self.order}{emb}, "
                f"{self.num_stages} stages{fsal})")
