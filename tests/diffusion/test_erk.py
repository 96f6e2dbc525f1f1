"""ERK-Guid: its settings, the correction formula and the linear theory it rests on.

Truth: constant linear drifts ``f = Jx`` whose Heun LTE is known in closed form
(docs/theory/embedded_pairs.md, eq. (9)), and the exact dominant eigenpair (the oracle variant).
"""

import dataclasses
import math

import pytest
import torch
from _diffusion_cases import linear_denoiser

import stiffkit
from stiffkit.diffusion.erk import (
    W_STIFF_THEORY,
    ErkGuid,
    check_correction_sign,
    erk_guid_correction,
    mixture_oracle,
    resolve_oracle,
)
from stiffkit.diffusion.noise import mixture_samples
from stiffkit.diffusion.samplers import pf_ode_drift, sample
from stiffkit.diffusion.schedules import edm_sigmas
from stiffkit.estimators import PAIR_EPS

F64 = torch.float64


# ------------------------------------------------------------------------ the settings
def test_erk_guid_settings_are_one_frozen_value():
    cfg = ErkGuid(w_stiff=1.0, w_con=0.5)
    # eps None: the estimators' scale-relative guard (issue 12, defect 3); PAIR_EPS on demand.
    assert (cfg.correction_sign, cfg.eps, cfg.oracle) == (None, None, None)
    assert ErkGuid(eps=PAIR_EPS).eps == 1e-8
    assert cfg.corrects and cfg.needs_pair
    assert cfg.sign_for(+1.0) == 1.0 and ErkGuid(correction_sign=-1).sign_for(+1.0) == -1.0
    assert not ErkGuid().needs_pair and ErkGuid(oracle="dense").needs_pair
    assert not ErkGuid(oracle="dense").corrects
    assert cfg == ErkGuid(w_stiff=1.0, w_con=0.5) and hash(cfg) == hash(ErkGuid(1.0, 0.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.w_stiff = 2.0


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(w_stiff=-1.0), "`w_stiff` must be non-negative"),
     (dict(w_stiff=float("nan")), "`w_stiff`"), (dict(w_con=float("inf")), "`w_con`"),
     (dict(eps=0.0), "`eps` must be positive"), (dict(eps=float("nan")), "`eps`"),
     (dict(correction_sign=2), "`correction_sign`"), (dict(oracle="magic"), "`oracle`")],
)
def test_erk_guid_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ErkGuid(**kwargs)


def test_one_check_of_the_correction_sign_for_settings_and_solvers():
    from stiffkit.diffusion.samplers import Solver
    from stiffkit.diffusion.samplers.euler import euler_step
    from stiffkit.diffusion.samplers.solvers import tableau_boundaries

    assert check_correction_sign(None) is None and check_correction_sign(-1) == -1
    assert check_correction_sign(1.0) == 1.0
    for bad in (0, 0.5, 2, "+1"):
        with pytest.raises(ValueError) as want:
            check_correction_sign(bad)
        assert "`correction_sign` must be -1, +1 or None" in str(want.value)
        with pytest.raises(ValueError) as from_settings:
            ErkGuid(correction_sign=bad)
        with pytest.raises(ValueError) as from_solver:
            Solver("x", euler_step, tableau_boundaries("euler"), correction_sign=bad)
        assert str(from_settings.value) == str(from_solver.value) == str(want.value)


def test_resolve_oracle():
    drift = pf_ode_drift(linear_denoiser(torch.tensor([[2.0, 0.0], [0.0, -5.0]], dtype=F64)))
    assert resolve_oracle(None, drift) is None
    fn = lambda s, x: (x[:, 0], x)  # noqa: E731
    assert resolve_oracle(fn, drift) is fn
    oracle = resolve_oracle("dense", drift)
    rho, v = oracle(torch.tensor(1.0, dtype=F64), torch.ones(3, 2, dtype=F64))
    torch.testing.assert_close(rho, torch.full((3,), 5.0, dtype=F64))
    torch.testing.assert_close(v.abs(), torch.tensor([[0.0, 1.0]] * 3, dtype=F64))
    with pytest.raises(ValueError, match="`oracle`"):
        resolve_oracle("magic", drift)


# ------------------------------------------------------------- ERK-Guid, linear theory
def _heun_step_errors(lam: float, h: float, w_stiff: float):
    """Run two Heun steps of f = λx (σ running down) and return the 2nd step's LTE / x."""
    J = torch.tensor([[lam]], dtype=F64)
    x0 = torch.ones(1, 1, dtype=F64)
    sig = torch.tensor([1.0 + 2 * h, 1.0 + h, 1.0], dtype=F64)
    traj = sample(linear_denoiser(J), x0, sig, w_stiff=w_stiff)
    x1, x2 = traj.states[1], traj.states[2]
    return float((math.exp(-h * lam) * x1 - x2) / x1)


def test_w_stiff_theory_cancels_heuns_leading_lte_in_one_dimension():
    lam = 3.0
    for h in (0.05, 0.1, 0.2):
        z = h * lam
        heun = _heun_step_errors(lam, h, 0.0)
        erk = _heun_step_errors(lam, h, W_STIFF_THEORY)
        alpha = 1 - z + z**2 / 2 - math.exp(-z)  # docs/theory/embedded_pairs.md, eq. (10), times z
        assert heun == pytest.approx(-alpha, rel=1e-10)
        # Correction −w² z³: with w² = 1/6 the z³ term cancels, leaving z⁴/24 + O(z⁵).
        # (The 1e-8 guard of ρ̂ and v̂ perturbs the correction by ~1e-8/‖Δx‖ relative.)
        assert erk == pytest.approx(-alpha + z**3 / 6, abs=1e-5 * z**3)
        assert abs(erk) < 0.3 * z * abs(heun)  # ratio (z⁴/24)/(z³/6) = z/4


def test_erk_guid_cancels_lte_along_dominant_direction():
    J = torch.diag(torch.tensor([20.0, 0.2], dtype=F64))
    x0 = torch.tensor([[1.0, 1.0]], dtype=F64)
    h = 0.02  # z₁ = 0.4, z₂ = 0.004
    sig = torch.tensor([1.0 + 2 * h, 1.0 + h, 1.0], dtype=F64)
    out = {}
    for w in (0.0, W_STIFF_THEORY):
        traj = sample(linear_denoiser(J), x0, sig, w_stiff=w)
        x1, x2 = traj.states[1], traj.states[2]
        exact = x1 * torch.exp(-h * torch.diag(J))
        out[w] = (exact - x2)[0]
    z = h * 20.0
    assert abs(float(out[0.0][0])) == pytest.approx(z**3 / 6 * float(x1[0, 0]), rel=0.2)
    assert abs(float(out[W_STIFF_THEORY][0])) < 0.2 * abs(float(out[0.0][0]))
    assert abs(float(out[W_STIFF_THEORY][1] - out[0.0][1])) < 1e-6  # v₂ barely touched


def test_pair_estimate_is_exact_on_linear_drift():
    """The Heun pair at σ_i is the previous Euler point: Δf = J Δx exactly.

    docs/theory/embedded_pairs.md, eq. (12).
    """
    J = torch.tensor([[5.0, 1.0], [1.0, 0.5]], dtype=F64)
    x0 = torch.tensor([[1.0, -2.0], [0.3, 0.7]], dtype=F64)
    sig = torch.tensor([1.2, 1.1, 1.0, 0.9], dtype=F64)
    traj = sample(linear_denoiser(J), x0, sig)  # the estimators' guard, the default
    upstream = sample(linear_denoiser(J), x0, sig, eps=PAIR_EPS)  # the reference code's
    for n in range(2):
        dx = traj.states[n + 1] - traj.pair_states[n]
        df = traj.drifts[n + 1] - traj.pair_drifts[n]
        torch.testing.assert_close(df, dx @ J.T, rtol=1e-12, atol=1e-14)
        pair = (traj.states[n + 1], traj.drifts[n + 1], traj.pair_states[n], traj.pair_drifts[n])
        want = stiffkit.pair_stiffness(*pair)
        torch.testing.assert_close(traj.diagnostics["erk_rho"][n + 1], want, rtol=0, atol=0)
        torch.testing.assert_close(upstream.diagnostics["erk_rho"][n + 1],
                                   stiffkit.pair_stiffness(*pair, eps=PAIR_EPS), rtol=0, atol=0)
    assert torch.isnan(traj.diagnostics["erk_rho"][0]).all()


def test_correction_formula_matches_design():
    g = torch.Generator().manual_seed(0)
    f, dx, df = (torch.randn(4, 3, 2, generator=g, dtype=F64) for _ in range(3))
    h, w, w_con = 0.3, 0.8, 0.5
    c = erk_guid_correction(f, h, w_stiff=w, w_con=w_con, dx=dx, df=df)
    rho = df.flatten(1).norm(dim=1) / (dx.flatten(1).norm(dim=1) + 1e-8)
    v = df / (df.flatten(1).norm(dim=1) + 1e-8)[:, None, None]
    beta = (rho > w_con).double()
    want = (-h * beta[:, None, None] * (w * h * rho[:, None, None]) ** 2
            * (v * f).sum((1, 2), keepdim=True) * v)
    torch.testing.assert_close(c.delta, want, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(c.rho, rho)
    torch.testing.assert_close(c.delta_norm, want.flatten(1).norm(dim=1), rtol=1e-13, atol=1e-15)
    # Given ρ and a unit v (the oracle's form), the same formula with v spelled out.
    u = df / df.flatten(1).norm(dim=1)[:, None, None]
    o = erk_guid_correction(f, h, w_stiff=w, w_con=w_con, rho=rho, v=u)
    want_o = (-h * beta[:, None, None] * (w * h * rho[:, None, None]) ** 2
              * (u * f).sum((1, 2), keepdim=True) * u)
    torch.testing.assert_close(o.delta, want_o, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(o.delta_norm, want_o.flatten(1).norm(dim=1), rtol=1e-13, atol=1e-15)


def test_correction_needs_a_pair_or_an_eigenpair():
    f = torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="`dx` and `df`"):
        erk_guid_correction(f, 0.1, w_stiff=1.0, w_con=0.0, rho=torch.ones(2, dtype=F64))


# ------------------------------------------------------------------- oracle variant
def test_oracle_equals_pair_when_the_pair_is_exact():
    """In 1-D the pair's ρ̂ and v̂ are exact, so the oracle run matches the ERK-Guid run."""
    J = torch.tensor([[4.0]], dtype=F64)
    x0 = torch.tensor([[1.0], [-0.5]], dtype=F64)
    sig = torch.tensor([1.3, 1.2, 1.1, 1.0, 0.9], dtype=F64)
    eps = 1e-300  # the guard only perturbs ρ̂ and v̂ by ~eps/‖Δx‖
    a = sample(linear_denoiser(J), x0, sig, w_stiff=0.5, eps=eps)
    b = sample(linear_denoiser(J), x0, sig, w_stiff=0.5, eps=eps, oracle="dense")
    torch.testing.assert_close(a.states, b.states, rtol=1e-13, atol=1e-15)


def test_mixture_oracle_matches_generic_dense_oracle(mix):
    sig = edm_sigmas(6, 0.002, 5.0)
    x0 = mixture_samples(mix, 32, 5.0, dtype=F64)
    a = sample(mix, x0, sig, w_stiff=1.0, oracle=mixture_oracle(mix))
    b = sample(mix, x0, sig, w_stiff=1.0, oracle="dense")
    torch.testing.assert_close(a.states, b.states, rtol=1e-7, atol=1e-9)
    assert not torch.allclose(a.states[-1], sample(mix, x0, sig, w_stiff=1.0).states[-1])


@pytest.mark.parametrize("h", [-0.1, 0.0, float("nan")])
def test_correction_refuses_a_non_positive_step(h):
    # Issue 12 (small ones): h < 0 used to flip the correction's sign silently.
    f = dx = df = torch.ones(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="`h` must be a positive step size"):
        erk_guid_correction(f, h, w_stiff=1.0, w_con=0.0, dx=dx, df=df)
