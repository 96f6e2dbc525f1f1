"""Stability polynomials and real stability intervals."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stiffkit import rk_step
from stiffkit.plotting import plot_stability_region
from stiffkit.problems import complex_pair_linear
from stiffkit.tableaux import (
    get_tableau,
    list_tableaux,
    real_stability_interval,
    stability_function,
)
from stiffkit.tableaux.stability import stability_coefficients


@pytest.mark.parametrize(
    "name, expected",
    [("euler", 2.0), ("heun_euler", 2.0), ("rk4", 2.7853), ("dopri5", 3.3066), ("dop853", 6.3937)],
)
def test_known_real_stability_intervals(name, expected):
    assert real_stability_interval(name) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("name", list_tableaux())
def test_interval_is_the_boundary_of_stability(name):
    r = real_stability_interval(name)
    xs = np.linspace(-r, 0, 2001)
    assert np.all(np.abs(stability_function(name, xs)) <= 1 + 1e-9)
    beyond = -r * (1 + 1e-6) - 1e-9
    assert abs(stability_function(name, beyond)) > 1


@pytest.mark.parametrize("name", list_tableaux())
def test_stability_polynomial_matches_exponential_to_the_order(name):
    tab = get_tableau(name)
    coeffs = stability_coefficients(tab)
    # R(z) = e^z + O(z^{p+1}): the first p+1 coefficients are 1/k!.
    for k in range(tab.order + 1):
        assert abs(float(coeffs[k]) - 1 / math.factorial(k)) <= float(tab.tol) + 1e-300
    assert len(coeffs) - 1 <= tab.num_stages


@given(st.complex_numbers(max_magnitude=4.0, allow_nan=False, allow_infinity=False))
def test_rational_form_equals_polynomial(z):
    # R(z) = 1 + z bᵀ(I − zA)⁻¹𝟙, evaluated by a linear solve.
    for name in ("rk4", "dopri5", "bogacki_shampine"):
        arr = get_tableau(name).numpy()
        s = len(arr["b"])
        direct = 1 + z * arr["b"] @ np.linalg.solve(np.eye(s) - z * arr["A"], np.ones(s))
        assert stability_function(name, z) == pytest.approx(direct, rel=1e-10, abs=1e-10)


@given(
    z=st.complex_numbers(max_magnitude=4.0, allow_nan=False, allow_infinity=False).filter(
        lambda z: abs(z.imag) > 1e-3),
    h=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(list_tableaux()),
)
def test_one_step_on_a_rotation_system_scales_by_the_stability_function(z, h, seed, name):
    """On the normal system x' = Ax with eigenvalues λ, λ̄ (λ = z/h), one RK step is
    R(hA) = Re R(z) I + Im R(z)/Im λ (A − Re λ I) (R has real coefficients): the norm scales
    by |R(z)| and ⟨x₁, x₀⟩ = Re R(z) ‖x₀‖², R(z) = 1 + z bᵀ(I − zA)⁻¹𝟙 from the tableau."""
    arr = get_tableau(name).numpy()
    s = len(arr["b"])
    R = 1 + z * arr["b"] @ np.linalg.solve(np.eye(s) - z * arr["A"], np.ones(s))
    p = complex_pair_linear([z / h], seed=seed)
    x0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x1 = rk_step(p.f, 0.0, x0, h, name).x.numpy()
    x = x0.numpy()
    norm0 = np.linalg.norm(x, axis=1)
    size = (1 + abs(z)) ** s  # the stages' growth bounds the roundoff
    np.testing.assert_allclose(np.linalg.norm(x1, axis=1), abs(R) * norm0, rtol=0,
                               atol=1e-13 * size * norm0.max())
    np.testing.assert_allclose((x1 * x).sum(1), R.real * norm0**2, rtol=0,
                               atol=1e-13 * size * norm0.max() ** 2)


def test_embedded_stability_function():
    # Heun's embedded Euler: R̂(z) = 1 + z.
    assert real_stability_interval("heun_euler", embedded=True) == pytest.approx(2.0)
    assert stability_function("heun_euler", 0.5 + 0.5j, embedded=True) == pytest.approx(1.5 + 0.5j)
    with pytest.raises(ValueError, match="no embedded"):
        real_stability_interval("rk4", embedded=True)


def test_plot_stability_region_draws_each_method():
    import matplotlib.pyplot as plt

    ax = plot_stability_region(["euler", "rk4", "dopri5"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["euler", "rk4", "dopri5"]
    assert len(ax.collections) >= 3
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="`tableaux`"):
        plot_stability_region([])


@pytest.mark.parametrize(
    "z, exc, message",
    [
        ("abc", TypeError, "`z` must hold real or complex numbers"),
        (None, TypeError, "`z` must hold real or complex numbers"),
        ([[1.0, 2.0], [3.0]], ValueError, "`z` must be an array of numbers"),
        (float("nan"), ValueError, "`z` contains NaN or Inf"),
        (np.array([0.0, np.inf * 1j]), ValueError, "`z` contains NaN or Inf"),
    ],
)
def test_stability_function_names_bad_points(z, exc, message):
    """Issue 12: strings and ragged lists gave numpy errors, NaN a silent NaN."""
    with pytest.raises(exc, match=message):
        stability_function("rk4", z)
