"""DEIS: its ρAB (in σ) and tAB (in the VP time) weights integrate polynomials exactly; its
multistep stability boundary."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from stiffkit.diffusion.samplers.deis import (
    VP_BETA_D,
    VP_BETA_MIN,
    check_max_order,
    check_variant,
    deis_boundaries,
    deis_coefficients,
    multistep_boundary,
    vp_sigma,
    vp_time,
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
    """Uniform levels make ρAB the Adams–Bashforth methods: boundaries 2, 1, 6/11, 3/10."""
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


# ------------------------------------------------------------------ the tAB variant
def _sigma_dot(t: float) -> float:
    """σ'(t) of the VP schedule, written out (independently of the module's σ(t))."""
    e = 0.5 * VP_BETA_D * t * t + VP_BETA_MIN * t
    return (VP_BETA_D * t + VP_BETA_MIN) * np.exp(e) / (2.0 * np.sqrt(np.expm1(e)))


def _tab_reference(levels: list[float], s_next: float) -> np.ndarray:
    """``∫_{t_i}^{t_next} ℓ_j(t) σ'(t) dt`` by adaptive quadrature in t (the definition)."""
    ts = [float(vp_time(s)) for s in levels]
    out = []
    for j, tj in enumerate(ts):
        def integrand(t, j=j, tj=tj):
            basis = np.prod([(t - tm) / (tj - tm) for m, tm in enumerate(ts) if m != j])
            return basis * _sigma_dot(t)

        out.append(quad(integrand, ts[0], float(vp_time(s_next)), epsabs=0, epsrel=1e-13,
                        limit=500)[0])
    return np.array(out)


def test_vp_time_inverts_vp_sigma():
    sig = np.array([1e-4, 0.002, 0.0158, 0.1, 1.0, 5.0, 80.0])
    np.testing.assert_allclose(vp_sigma(vp_time(sig)), sig, rtol=1e-14)
    t = vp_time(sig)
    np.testing.assert_allclose(  # the textbook form, away from its cancellation
        t[2:], (np.sqrt(VP_BETA_MIN ** 2 + 2 * VP_BETA_D * np.log1p(sig[2:] ** 2))
                - VP_BETA_MIN) / VP_BETA_D, rtol=1e-12)
    assert vp_time(0.0) == 0.0 and vp_sigma(1.0) == pytest.approx(np.sqrt(np.expm1(10.05)))


@pytest.mark.parametrize("levels, s_next", [
    ([1.0, 1.3, 1.8, 2.5], 0.7),  # a mid-grid step
    ([0.01, 0.02, 0.05, 0.1], 0.002),  # the last steps, where t(σ) ≈ σ²/β_min
    ([0.0028, 0.006, 0.012, 0.025], 0.002),
    ([80.0, 120.0], 0.002),  # one huge step across both regimes
    ([0.5, 5.0, 80.0], 0.002),
    ([2.0, 3.0], 2.5),  # σ rising
])
def test_tab_weights_match_a_fine_quadrature_in_t(levels, s_next):
    got = np.array(deis_coefficients(levels, s_next, variant="tab"))
    want = _tab_reference(levels, s_next)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert got.sum() == pytest.approx(s_next - levels[0], rel=1e-13)


@pytest.mark.parametrize("variant", ["rhoab", "tab"])
def test_one_level_is_euler_in_both_variants(variant):
    for s, s_next in ((2.0, 1.5), (5.0, 0.002), (0.01, 0.0), (0.002, 0.0)):
        (c,) = deis_coefficients([s], s_next, variant=variant)
        assert c == pytest.approx(s_next - s, rel=1e-14)
    sig = torch.linspace(3.0, 1.0, 6, dtype=F64)
    np.testing.assert_allclose(deis_boundaries(sig, max_order=1, variant=variant).numpy(), 2.0,
                               rtol=1e-12)


def test_each_variant_is_exact_on_its_own_polynomials_only():
    """ρAB integrates drifts polynomial in σ exactly, tAB those polynomial in t(σ)."""
    rng = np.random.default_rng(1)
    levels, s_next = [0.4, 0.7, 1.2, 2.0], 0.2
    for p in range(2, 5):
        poly = np.polynomial.Polynomial(rng.standard_normal(p))  # degree p − 1 ≥ 1
        at = levels[:p]
        in_sigma = poly.integ()(s_next) - poly.integ()(at[0])
        in_t = -quad(lambda s, poly=poly: poly(float(vp_time(s))), s_next, at[0], epsabs=0,
                     epsrel=1e-13)[0]
        rho = np.array(deis_coefficients(at, s_next, variant="rhoab"))
        tab = np.array(deis_coefficients(at, s_next, variant="tab"))
        assert rho @ poly(np.array(at)) == pytest.approx(in_sigma, rel=1e-12, abs=1e-13)
        assert tab @ poly(vp_time(np.array(at))) == pytest.approx(in_t, rel=1e-12, abs=1e-13)
        # ... and not on the other's: the variants are different methods.
        assert abs(rho @ poly(vp_time(np.array(at))) - in_t) > 1e-6
        assert abs(tab @ poly(np.array(at)) - in_sigma) > 1e-6


def test_constant_steps_make_rhoab_the_adams_bashforth_weights():
    h = 0.1
    ab = {2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
          4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    for k, weights in ab.items():
        levels = [1.0 + h * j for j in range(k)]  # σ_i, σ_i + h, … (σ runs down)
        got = np.array(deis_coefficients(levels, 1.0 - h)) / -h
        np.testing.assert_allclose(got, weights, rtol=1e-12)
        tab = np.array(deis_coefficients(levels, 1.0 - h, variant="tab")) / -h
        assert np.abs(tab - weights).max() > 1e-3  # constant in σ is not constant in t
        assert tab.sum() == pytest.approx(1.0, rel=1e-13)


def test_tab_boundaries_use_the_tab_weights():
    sig = torch.tensor([5.0, 2.5, 1.2, 0.6, 0.3, 0.15, 0.07], dtype=F64)
    rho = deis_boundaries(sig, max_order=4).numpy()
    tab = deis_boundaries(sig, max_order=4, variant="tab").numpy()
    assert rho[0] == tab[0] == pytest.approx(2.0)  # the first step is Euler in both
    assert np.abs(rho[1:] - tab[1:]).min() > 1e-6
    for n in range(1, len(sig) - 1):
        back = [float(sig[n - j]) for j in range(min(n, 3) + 1)]
        h = float(sig[n + 1] - sig[n])
        weights = tuple(c / h for c in deis_coefficients(back, float(sig[n + 1]), variant="tab"))
        assert tab[n] == multistep_boundary(weights)


def test_variant_is_checked():
    assert check_variant("tab") == "tab" and check_variant("rhoab") == "rhoab"
    for bad in ("tAB", "rho", "", None, 1):
        with pytest.raises(ValueError, match="`variant` must be one of"):
            check_variant(bad)
    with pytest.raises(ValueError, match="`variant`"):
        deis_coefficients([1.0], 0.5, variant="t")
    with pytest.raises(ValueError, match="non-negative for the tAB"):
        deis_coefficients([1.0, -0.5], 0.5, variant="tab")
