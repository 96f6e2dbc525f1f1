"""The torchdiffeq glue of the monitor: its methods are stiffkit tableaux, coefficient for
coefficient, and the monitor's trajectory carries them."""

import numpy as np
import pytest
import torch
from torchdiffeq._impl.dopri5 import Dopri5Solver
from torchdiffeq._impl.dopri8 import Dopri8Solver

import stiffkit
from stiffkit.analysis._torchdiffeq import SUPPORTED_METHODS, check_method
from stiffkit.tableaux import get_tableau

EPS = np.finfo(np.float64).eps


def test_dopri5_shampine_is_torchdiffeqs_dopri5():
    ours = stiffkit.get_tableau("dopri5_shampine").numpy()
    theirs = Dopri5Solver.tableau
    np.testing.assert_allclose(ours["c"][1:], theirs.alpha.numpy(), rtol=0, atol=1e-15)
    for i, row in enumerate(theirs.beta, start=1):
        np.testing.assert_allclose(ours["A"][i, :i], row.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours["b"], theirs.c_sol.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours["error_weights"], theirs.c_error.numpy(), rtol=0, atol=1e-15)


def test_dopri8_is_torchdiffeqs_dopri8():
    # torchdiffeq's alpha = c[1:], beta = rows of A, c_sol = b, c_error = b − b̂, each a
    # Python division of the published integers: A, b and c round to the very same floats.
    ours = get_tableau("dopri8").numpy()
    theirs = Dopri8Solver.tableau
    np.testing.assert_array_equal(ours["c"][1:], theirs.alpha.numpy())
    assert len(theirs.beta) == len(ours["b"]) - 1
    for i, row in enumerate(theirs.beta, start=1):
        np.testing.assert_array_equal(ours["A"][i, :i], row.numpy())
    np.testing.assert_array_equal(ours["b"], theirs.c_sol.numpy())
    # torchdiffeq subtracts rounded floats; ours rounds the exact difference.
    e_ours, e_theirs = ours["error_weights"], theirs.c_error.numpy()
    assert np.all(np.abs(e_ours - e_theirs) <= 2 * EPS * np.maximum(np.abs(ours["b"]), 1))


@pytest.mark.parametrize(("method", "name", "boundary"),
                         [("dopri5", "dopri5_shampine", 3.3066), ("dopri8", "dopri8", 5.1666)])
def test_each_method_has_a_registered_tableau(method, name, boundary):
    spec = check_method(method)
    assert spec.tableau is get_tableau(name)
    assert spec.pair == (spec.tableau.num_stages - 2, spec.tableau.num_stages - 1)
    assert spec.boundary == pytest.approx(boundary, abs=1e-4)
    assert method in SUPPORTED_METHODS


@pytest.mark.parametrize("method", SUPPORTED_METHODS)
def test_trajectory_carries_the_tableau_object(method):
    x0 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    _, mon = stiffkit.odeint_monitored(lambda t, x: -x, x0, t, method=method, rtol=1e-6, atol=1e-8)
    assert mon.trajectory().tableau is mon.tableau is check_method(method).tableau
    assert mon.frame().attrs["tableau"] == mon.tableau.name


F64 = torch.float64
Y0 = torch.ones(3, 2, dtype=F64)
T2 = torch.tensor([0.0, 1.0], dtype=F64)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(y0=[1.0]), TypeError, "`y0` must be a torch.Tensor"),
        (dict(y0=Y0[:0]), ValueError, "`y0` has an empty batch"),
        (dict(y0=Y0 * float("nan")), ValueError, "`y0` contains NaN or Inf"),
        (dict(y0=Y0.long()), TypeError, "`y0` must have a floating dtype"),
        (dict(t=[0.0, 1.0]), TypeError, "`t` must be a torch.Tensor"),
        (dict(t=torch.tensor([0.0, float("nan")], dtype=F64)), ValueError, "`t` contains NaN"),
        (dict(t=torch.tensor([0.0, 1.0, 0.5], dtype=F64)), ValueError,
         "`t` must be strictly monotone"),
        (dict(t=torch.zeros(2, 2, dtype=F64)), ValueError, "`t` must be 1-D"),
        (dict(rtol=-1.0), ValueError, "`rtol` must be a finite number >= 0"),
        (dict(rtol="a"), ValueError, "`rtol` must be a real number"),
        (dict(rtol=0.0, atol=0.0), ValueError, "`rtol` and `atol` must not both be 0"),
        (dict(options=[1]), TypeError, "`options` must be a mapping or None"),
        (dict(f=lambda t, y: y * float("nan")), RuntimeError, "torchdiffeq.odeint failed"),
    ],
)
def test_odeint_monitored_names_bad_input(kwargs, exc, message):
    """Issue 12: torchdiffeq's AssertionErrors (and a silently accepted rtol = -1) before."""
    args = dict(f=lambda t, y: -y, y0=Y0, t=T2)
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        stiffkit.odeint_monitored(args.pop("f"), args.pop("y0"), args.pop("t"), **args)
