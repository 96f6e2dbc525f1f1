"""`reference_step`, `local_truncation_error`, `eigen_coefficients`, `alignment`: bad input.

(The LTE's values are checked against the exact flow in tests/analysis/test_analyze.py.)
"""

import numpy as np
import pytest
import torch

from stiffkit.estimators import (
    alignment,
    eigen_coefficients,
    local_truncation_error,
    reference_step,
)

F64 = torch.float64
A = torch.tensor([[-3.0, 0.0], [0.0, -1.0]], dtype=F64)
X = torch.ones(3, 2, dtype=F64)


def _linear(t, x):
    return x @ A.T


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(f=None), TypeError, "`f` must be callable"),
        (dict(x=X[:0]), ValueError, "`x` has an empty batch"),
        (dict(t="a"), ValueError, "`t` must be a real number"),
        (dict(t=float("nan")), ValueError, "`t` must be a finite number"),
        (dict(h="a"), ValueError, "`h` must be a real number"),
        (dict(h=None), ValueError, "`h` must be a real number"),
        (dict(h=torch.full((3,), 0.1, dtype=F64)), ValueError, "`h` must be one step"),
        (dict(method=None), ValueError, "`method` must be 'dopri5', 'rk4' or 'exact'"),
        (dict(rtol=0.0), ValueError, "`rtol` must be a finite number > 0"),
        (dict(rtol=-1.0), ValueError, "`rtol` must be a finite number > 0"),
        (dict(atol=float("nan")), ValueError, "`atol` must be a finite number > 0"),
        (dict(method="rk4", substeps=0), ValueError, "`substeps` must be a positive integer"),
        (dict(method="rk4", substeps=2.5), ValueError, "`substeps` must be a positive integer"),
        (dict(method="exact", matrix=np.full((2, 2), np.nan)), ValueError,
         "`matrix` contains NaN or Inf"),
        (dict(method="exact", matrix="ab"), ValueError, "`matrix` must be a real array"),
        (dict(method="exact", matrix=np.eye(2) * 1j), ValueError, "`matrix` must be a real"),
        (dict(f=lambda t, x: x[:1]), ValueError, "`f` must return a tensor of the state's"),
        (dict(f=lambda t, x: x * float("nan")), RuntimeError, "the drift returned NaN or Inf"),
    ],
)
def test_reference_step_names_bad_input(kwargs, exc, message):
    """Issue 12: raw float()/torchdiffeq errors before; rtol = -1, a NaN or complex matrix
    returned silently wrong references."""
    args = dict(f=_linear, t=0.0, x=X, h=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        reference_step(args.pop("f"), args.pop("t"), args.pop("x"), args.pop("h"), **args)


def test_local_truncation_error_names_its_reference():
    with pytest.raises(ValueError, match="`reference` must be 'dopri5', 'rk4' or 'exact'"):
        local_truncation_error(_linear, 0.0, X, 0.1, "rk4", reference="bad")


def test_eigen_coefficients_and_alignment_check_their_tensors():
    with pytest.raises(TypeError, match="`eigenvectors` must be a torch.Tensor"):
        eigen_coefficients(X, [[1.0, 0.0]])
    with pytest.raises(TypeError, match="`v1` must be a torch.Tensor"):
        alignment([1.0, 0.0], dx=X)
    with pytest.raises(TypeError, match="`dx` must be a torch.Tensor"):
        alignment(X, dx=[1.0, 0.0])
    with pytest.raises(TypeError, match="`v1` must have a floating dtype"):
        alignment(X.to(torch.complex128), dx=X)


def test_alignment_is_nan_not_zero_where_a_vector_is_not_finite():
    """Issue 12: a NaN vector read as alignment 0 (orthogonal)."""
    v = X.clone()
    v[1, 0] = float("nan")
    out = alignment(X, dx=v, same=X)
    assert torch.isnan(out["dx"][1]) and torch.isfinite(out["dx"][[0, 2]]).all()
    torch.testing.assert_close(out["same"], torch.ones(3, dtype=F64))
    assert torch.isnan(alignment(v, dx=X)["dx"][1])
