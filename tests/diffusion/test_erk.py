"""ERK-Guid: its settings, the correction formula and the linear theory it rests on.

Truth: constant linear drifts ``f = Jx`` whose Heun LTE is known in closed form
(docs/theory/embedded_pairs.md, eq. (9)), and the exact dominant eigenpair (the oracle variant).
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from _diffusion_cases import linear_denoiser
from hypothesis import assume, given
from hypothesis import strategies as st

import stiffkit
from stiffkit.diffusion.erk import (
    W_STIFF_THEORY,
    ErkGuid,
    check_correction_sign,
    erk_guid_correction,
)
from stiffkit.diffusion.samplers import sample
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


def test_relative_guard_correction_is_the_design_formula_from_squared_sums():
    """eps=None: the coefficient w²h³⟨Δf, f⟩/‖Δx‖² (squared sums, one GEMV) is the formula with
    ρ̂ and v̂ spelled out; an unresolved pair (‖Δx‖ at roundoff of ‖x‖) and a gated one get
    nothing; `state` and its norm `scale` give the same result."""
    g = torch.Generator().manual_seed(3)
    f, dx, df, x = (torch.randn(6, 3, 2, generator=g, dtype=F64) for _ in range(4))
    dx[1] = x[1] * 1e-17  # unresolved: below 16 ulps of ‖x‖
    df[2] = 0.1 * dx[2]  # ρ̂ = 0.1 < w_con: gated off
    h, w, w_con = 0.3, 0.8, 0.5
    got = erk_guid_correction(f, h, w_stiff=w, w_con=w_con, dx=dx, df=df, eps=None, state=x)
    by_norm = erk_guid_correction(f, h, w_stiff=w, w_con=w_con, dx=dx, df=df, eps=None,
                                  scale=x.flatten(1).norm(dim=1))
    rho = df.flatten(1).norm(dim=1) / dx.flatten(1).norm(dim=1)
    v = df / df.flatten(1).norm(dim=1)[:, None, None]
    beta = (rho > w_con).double()
    beta[1] = 0.0
    want = (-h * beta[:, None, None] * (w * h * rho[:, None, None]) ** 2
            * (v * f).sum((1, 2), keepdim=True) * v)
    torch.testing.assert_close(got.delta, want, rtol=1e-13, atol=1e-15)
    assert got.beta.tolist() == beta.tolist() and got.delta[1:3].abs().max() == 0
    assert torch.isnan(got.rho[1]) and not torch.isnan(got.rho[[0, 2, 3, 4, 5]]).any()
    torch.testing.assert_close(got.rho[[0, 2, 3, 4, 5]], rho[[0, 2, 3, 4, 5]], rtol=1e-14,
                               atol=0)
    torch.testing.assert_close(got.delta_norm, want.flatten(1).norm(dim=1), rtol=1e-13,
                               atol=1e-15)
    torch.testing.assert_close(by_norm.delta, got.delta, rtol=1e-15, atol=0)
    # A per-sample step is each sample's scalar step.
    hs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=F64)
    per = erk_guid_correction(f, hs, w_stiff=w, w_con=w_con, dx=dx, df=df, eps=None, state=x)
    for i in (0, 3, 5):
        one = erk_guid_correction(f, float(hs[i]), w_stiff=w, w_con=w_con, dx=dx, df=df,
                                  eps=None, state=x)
        torch.testing.assert_close(per.delta[i], one.delta[i], rtol=1e-15, atol=0)


def test_relative_guard_edge_cases():
    f = torch.ones(2, 3, dtype=F64)
    dx, x = torch.full((2, 3), 0.1, dtype=F64), torch.ones(2, 3, dtype=F64)
    kw = dict(w_stiff=1.0, dx=dx, eps=None, state=x)
    # Δf = 0 with a gate every ρ passes: no correction (0, not 0/0).
    still = erk_guid_correction(f, 0.1, w_con=-1.0, df=torch.zeros(2, 3, dtype=F64), **kw)
    assert still.delta.abs().max() == 0 and still.rho.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="`scale` or the `state`, not both"):
        erk_guid_correction(f, 0.1, w_con=0.0, df=dx, scale=torch.ones(2, dtype=F64), **kw)
    with pytest.raises(ValueError, match="needs the states' `scale`"):
        erk_guid_correction(f, 0.1, w_stiff=1.0, w_con=0.0, dx=dx, df=dx, eps=None)
    with pytest.raises(ValueError, match=r"`state` must have shape \(2, 3\)"):
        erk_guid_correction(f, 0.1, w_stiff=1.0, w_con=0.0, dx=dx, df=dx, eps=None,
                            state=torch.ones(2, 4, dtype=F64))


def test_relative_guard_in_float32_needs_squares_in_range():
    """The documented limit of the squared sums: in float32 a pair whose ‖Δx‖² underflows
    (‖Δx‖ ≈ 1e-25) counts as unresolved; float64 resolves it and corrects."""
    x = torch.tensor([[1e-24, 2e-24]], dtype=F64)
    dx, df, f = 0.1 * x, -5.0 * x, torch.tensor([[1e-24, 1e-24]], dtype=F64)
    kw = dict(w_stiff=1.0, w_con=0.0, eps=None)
    lost = erk_guid_correction(f.float(), 0.1, dx=dx.float(), df=df.float(), state=x.float(),
                               **kw)
    assert torch.isnan(lost.rho).all() and lost.delta.abs().max() == 0
    kept = erk_guid_correction(f, 0.1, dx=dx, df=df, state=x, **kw)
    torch.testing.assert_close(kept.rho, torch.tensor([50.0], dtype=F64), rtol=1e-12, atol=0)
    assert kept.delta.abs().max() > 0


@st.composite
def linear_pairs(draw):
    """A symmetric J = Q diag(λ) Qᵀ, a pair (Δx, Δf = JΔx), a drift f and the settings."""
    n = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lam = rng.uniform(-30.0, 30.0, n)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    dx, f = rng.standard_normal((2, 3, n))
    h, w = draw(st.floats(1e-3, 0.5)), draw(st.floats(0.0, 2.0))
    return lam, q, dx, dx @ (q * lam) @ q.T, f, h, w, draw(st.sampled_from([-1.0, 1.0]))


@given(linear_pairs())
def test_correction_on_a_linear_drift_is_the_closed_form(case):
    """delta = sign·h·(w h ρ̂)²⟨v̂, f⟩v̂ with ρ̂ = ‖JΔx‖/‖Δx‖ and v̂ = JΔx/‖JΔx‖ (numpy); it is
    even in the pair; for Δx along the dominant eigenvector q₁ it is the oracle's correction
    with (|λ₁|, q₁)."""
    lam, q, dx, df, f, h, w, sign = case
    t = lambda a: torch.tensor(a, dtype=F64)  # noqa: E731
    kw = dict(w_stiff=w, w_con=0.0, sign=sign, eps=1e-300)
    got = erk_guid_correction(t(f), h, dx=t(dx), df=t(df), **kw)
    rho = np.linalg.norm(df, axis=1) / np.linalg.norm(dx, axis=1)
    v = df / np.linalg.norm(df, axis=1, keepdims=True)
    want = (sign * h * (w * h * rho) ** 2 * (v * f).sum(1))[:, None] * v
    size = h * (w * h * rho[:, None]) ** 2 * np.linalg.norm(f, axis=1, keepdims=True)
    np.testing.assert_allclose(got.delta.numpy(), want, rtol=0, atol=1e-13 * size.max() + 1e-300)
    np.testing.assert_allclose(got.rho.numpy(), rho, rtol=1e-13)
    flipped = erk_guid_correction(t(f), h, dx=-t(dx), df=-t(df), **kw)
    torch.testing.assert_close(flipped.delta, got.delta, rtol=0, atol=1e-15 * size.max())
    # Along q₁ the pair is exact: ρ̂ = |λ₁| and v̂ = ±q₁.
    k = int(np.argmax(np.abs(lam)))
    q1 = q[:, k]
    along = np.outer([0.3, -2.0, 1.7], q1)
    pair = erk_guid_correction(t(f), h, dx=t(along), df=t(lam[k] * along), **kw)
    oracle = erk_guid_correction(t(f), h, rho=t(np.full(3, abs(lam[k]))),
                                 v=t(np.tile(q1, (3, 1))), **kw)
    np.testing.assert_allclose(pair.delta.numpy(), oracle.delta.numpy(), rtol=0,
                               atol=1e-12 * h * (w * h * abs(lam[k])) ** 2 * np.abs(f).sum()
                               + 1e-300)


def test_correction_needs_a_pair_or_an_eigenpair():
    f = torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="`dx` and `df`"):
        erk_guid_correction(f, 0.1, w_stiff=1.0, w_con=0.0, rho=torch.ones(2, dtype=F64))


@given(
    lam=st.floats(-3.0, 3.0).filter(lambda v: abs(v) > 0.1),
    gaps=st.lists(st.floats(0.05, 0.6), min_size=3, max_size=6),
    w=st.floats(0.1, 1.0),
    sign=st.sampled_from([-1, 1]),
)
def test_deis_correction_uses_the_previous_step_size(lam, gaps, w, sign):
    """DEIS's pair (x_n − x_{n−1}, f_n − f_{n−1}) spans the previous step: with max_order = 1
    (Euler steps) on f = λx every corrected step is
    x_{n+1} = x_n (1 + (σ_{n+1} − σ_n) λ + sign·w² h_{n−1}³ λ³), h_{n−1} = σ_{n−1} − σ_n."""
    sig = np.cumsum([0.1] + gaps)[::-1].copy()  # uneven, positive
    euler = [1 + (sig[i + 1] - sig[i]) * lam for i in range(len(gaps))]
    erk = [0.0] + [sign * w**2 * (sig[i - 1] - sig[i]) ** 3 * lam**3 for i in range(1, len(gaps))]
    grow = np.add(euler, erk)
    # A state that stops moving (or vanishes) leaves the next pair without a direction.
    assume(np.all(np.abs(grow) > 1e-3) and np.all(np.abs(grow - 1) > 1e-3))
    x0 = torch.tensor([[1.0], [-0.4]], dtype=F64)
    traj = sample(linear_denoiser(torch.tensor([[lam]], dtype=F64)), x0, torch.tensor(sig),
                  solver="deis", max_order=1, w_stiff=w, correction_sign=sign, eps=1e-300)
    for i in range(len(gaps)):  # one step at a time, from the state the sampler reached
        x = traj.states[i]
        size = x.abs() * (abs(euler[i]) + abs(erk[i]) + 1)
        assert bool(((traj.states[i + 1] - x * grow[i]).abs() <= 1e-12 * size).all())


@pytest.mark.parametrize("h", [-0.1, 0.0, float("nan")])
def test_correction_refuses_a_non_positive_step(h):
    # Issue 12 (small ones): h < 0 used to flip the correction's sign silently.
    f = dx = df = torch.ones(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="`h` must be a positive step size"):
        erk_guid_correction(f, h, w_stiff=1.0, w_con=0.0, dx=dx, df=df)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [(dict(w_stiff="a"), ValueError, "`w_stiff` must be a real number"),
     (dict(w_stiff=None), ValueError, "`w_stiff` must be a real number"),
     (dict(w_stiff=True), ValueError, "`w_stiff` must be a real number"),
     (dict(w_stiff=torch.tensor([1.0, 2.0])), ValueError, "`w_stiff` must be a real number"),
     (dict(w_con="a"), ValueError, "`w_con` must be a real number"),
     (dict(eps="a"), ValueError, "`eps` must be a real number"),
     (dict(correction_sign=True), ValueError, "`correction_sign` must be -1, \\+1 or None")],
)
def test_erk_guid_names_non_numbers(kwargs, exc, match):
    """Issue 12: float() errors before; w_stiff = True and correction_sign = True passed."""
    with pytest.raises(exc, match=match):
        ErkGuid(**kwargs)


@pytest.mark.parametrize(
    "change, exc, match",
    [(dict(h="a"), TypeError, "`h` must be a real number"),
     (dict(h=float("inf")), ValueError, "`h` must be a positive step size"),
     (dict(h=torch.ones(3)), ValueError, r"`h` must be a scalar or have shape \[batch\]"),
     (dict(w_stiff=-1.0), ValueError, "`w_stiff` must be a finite number >= 0"),
     (dict(w_stiff=float("nan")), ValueError, "`w_stiff` must be a finite number"),
     (dict(w_con=float("nan")), ValueError, "`w_con` must be a finite number"),
     (dict(sign=0), ValueError, "`sign` must be -1 or \\+1"),
     (dict(sign=5), ValueError, "`sign` must be -1 or \\+1"),
     (dict(eps=-1.0), ValueError, "`eps` must be a finite number >= 0"),
     (dict(f=[1.0]), TypeError, "`f` must be a torch.Tensor"),
     (dict(dx=torch.ones(1, 3, dtype=F64)), ValueError, r"`dx` must have shape \(2, 3\)"),
     (dict(df=torch.full((2, 3), float("nan"), dtype=F64)), ValueError, "`df` contains NaN"),
     (dict(f=torch.ones(0, 3, dtype=F64), dx=None, df=None, rho=torch.ones(0, dtype=F64),
           v=torch.ones(0, 3, dtype=F64)), ValueError, "`f` has an empty batch"),
     (dict(dx=None, df=None, rho=torch.ones(3, dtype=F64), v=torch.ones(2, 3, dtype=F64)),
      ValueError, r"`rho` must have shape \(2,\)")],
)
def test_correction_names_bad_arguments(change, exc, match):
    """Issue 12: w_stiff = −1, a sign of 0 or 5, eps = −1 and mismatched shapes gave silently
    wrong corrections; strings and per-sample steps raised float() errors."""
    args = dict(f=torch.ones(2, 3, dtype=F64), h=0.1, w_stiff=1.0, w_con=0.0,
                dx=torch.full((2, 3), 0.1, dtype=F64), df=torch.full((2, 3), 0.2, dtype=F64))
    args.update(change)
    with pytest.raises(exc, match=match):
        erk_guid_correction(args.pop("f"), args.pop("h"), **args)


def test_correction_takes_a_per_sample_step():
    f, dx, df = (torch.full((2, 3), v, dtype=F64) for v in (1.0, 0.1, 0.2))
    kw = dict(w_stiff=1.0, w_con=0.0, dx=dx, df=df)
    per_sample = erk_guid_correction(f, torch.tensor([0.1, 0.2], dtype=F64), **kw)
    for i, h in enumerate((0.1, 0.2)):
        torch.testing.assert_close(per_sample.delta[i], erk_guid_correction(f, h, **kw).delta[i])
