"""DEIS: its tAB weights integrate polynomials exactly; its multistep stability boundary."""

import numpy as np
import pytest
import torch

from stiffkit.diffusion.samplers.deis import (
    check_max_order,
    deis_boundaries,
    deis_coefficients,
    multistep_boundary,
)

F64 = torch.float64


def test_deis_coefficients_integrate_polynomials_exactly():
    rng = np.random.default_rng(0)
    levels = [1.0, 1.3, 1.8, 2.5]  # σ_i, σ_{i-1}, ... (σ runs down)
    s_next = 0.7
    for p in range(1, 5):
        poly = np.polynomial.Polynomial(rng.standard_normal(p))  # degree p - 1
        coeffs = deis_coefficients(levels[:p], s_next)
        got = sum(c * poly(s) for c, s in zip(coeffs, levels[:p]))
        want = poly.integ()(s_next) - poly.integ()(levels[0])
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert deis_coefficients([2.0], 1.5) == [-0.5]


def test_constant_steps_give_adams_bashforth_boundaries():
    """Uniform levels make tAB the Adams–Bashforth methods: boundaries 2, 1, 6/11, 3/10."""
    sig = torch.linspace(3.0, 1.0, 11, dtype=F64)
    got = deis_boundaries(sig, max_order=4).numpy()
    np.testing.assert_allclose(got[:4], [2.0, 1.0, 6 / 11, 0.3], rtol=1e-10)
    np.testing.assert_allclose(got[4:], 0.3, rtol=1e-10)
    np.testing.assert_allclose(deis_boundaries(sig, max_order=2).numpy()[1:], 1.0, rtol=1e-10)
    np.testing.assert_allclose(deis_boundaries(sig, max_order=1).numpy(), 2.0, rtol=1e-12)


def test_multistep_boundary_of_simple_maps():
    assert multistep_boundary((1.0,)) == pytest.approx(2.0, rel=1e-12)  # Euler
    assert multistep_boundary((0.5,)) == pytest.approx(4.0, rel=1e-12)  # half the weight
    assert multistep_boundary((1.5, -0.5)) == pytest.approx(1.0, rel=1e-10)  # AB2


def test_check_max_order():
    assert check_max_order(3) == 3
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="`max_order`"):
            check_max_order(bad)
