"""Cheap stiffness estimates against the linear theory (docs/theory/proposition1.md)."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import stiffkit
from stiffkit import (
    hairer_stiffness,
    pair_stiffness,
    rk_step,
    solve_adaptive,
    stiffness_indicator,
)
from stiffkit._utils import flat_cosine, flat_norm, secant_ratio
from stiffkit.estimators import PAIR_EPS, embedded_stiffness, pair_directions
from stiffkit.problems import jordan_like_linear, symmetric_linear

F64 = torch.float64


@st.composite
def symmetric_systems(draw, n_max=5):
    """A symmetric J with known spectrum, a forcing c and a batch of states."""
    n = draw(st.integers(2, n_max))
    lam = draw(st.lists(st.floats(-60.0, -0.1), min_size=n, max_size=n, unique=True))
    assume(min(abs(a - b) for i, a in enumerate(lam) for b in lam[i + 1 :]) > 1e-3)
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    prob = symmetric_linear(np.array(lam), c=rng.standard_normal(n), seed=seed)
    x = torch.tensor(rng.standard_normal((3, n)), dtype=F64)
    h = draw(st.floats(1e-3, 0.05))
    return prob, x, h


def heun_pair(prob, x, h):
    """Heun's step as in docs/theory/embedded_pairs.md, eq. (8) (σ decreasing).

    x_E = x − h f, x_H = x − h/2 (f + f_E).
    """
    step = rk_step(prob.f, 0.0, x, -h, "heun_euler")
    x_E, x_H = step.x_hat, step.x
    return step, x_E, x_H


@given(symmetric_systems())
def test_heun_euler_pair_identities(system):
    prob, x, h = system
    J = torch.tensor(prob.A, dtype=F64)
    _, x_E, x_H = heun_pair(prob, x, h)
    f = prob.f(0.0, x)
    dx = x_H - x_E
    df = prob.f(0.0, x_H) - prob.f(0.0, x_E)
    scale = 1 + float(f.abs().max()) * (1 + float(J.abs().max()) * h) ** 3
    # Δx = (h²/2) J f and Δf = J Δx, exactly up to roundoff.
    torch.testing.assert_close(dx, (h**2 / 2) * f @ J.T, rtol=0, atol=1e-13 * scale)
    torch.testing.assert_close(df, dx @ J.T, rtol=0, atol=1e-12 * scale)


@given(symmetric_systems())
def test_pair_stiffness_within_spectrum_and_proposition_1(system):
    prob, x, h = system
    lam = np.abs(np.asarray(prob.eigenvalues))
    _, x_E, x_H = heun_pair(prob, x, h)
    f_E, f_H = prob.f(0.0, x_E), prob.f(0.0, x_H)
    rho = pair_stiffness(x_H, f_H, x_E, f_E, eps=0.0).numpy()
    dx = (x_H - x_E).numpy()
    assume(np.linalg.norm(dx, axis=1).min() > 1e-200)
    tol = 1e-9 * lam.max()
    assert np.all(rho >= lam.min() - tol) and np.all(rho <= lam.max() + tol)
    # Proposition 1 with the measured alignment ε of Δx with v₁.
    v1 = np.asarray(prob.eigenvectors)[:, np.argmax(lam)]
    cos2 = (dx @ v1) ** 2 / np.sum(dx**2, axis=1)
    lower = lam.max() * np.sqrt(cos2)
    assert np.all(rho >= lower - tol)


def test_pair_stiffness_guard_and_directions():
    x = torch.randn(4, 3, dtype=F64)
    f = torch.randn(4, 3, dtype=F64)
    rho = pair_stiffness(x, f, x, f, eps=PAIR_EPS)
    assert torch.equal(rho, torch.zeros(4, dtype=F64))  # absolute guard: identical points give 0
    v_f, v_x = pair_directions(x, f, x, f, eps=PAIR_EPS)
    assert torch.equal(v_f, torch.zeros_like(x)) and torch.equal(v_x, torch.zeros_like(x))
    # The default, scale-relative guard: identical points carry no information — NaN.
    assert pair_stiffness(x, f, x, f).isnan().all()
    v_f, v_x = pair_directions(x, f, x, f)
    assert v_f.isnan().all() and v_x.isnan().all()
    y = x + torch.randn(4, 3, dtype=F64)
    g = f + torch.randn(4, 3, dtype=F64)
    v_f, v_x = pair_directions(y, g, x, f)
    torch.testing.assert_close(v_f.norm(dim=1), torch.ones(4, dtype=F64))
    torch.testing.assert_close(flat_cosine(v_x, y - x), torch.ones(4, dtype=F64))


def test_pair_stiffness_is_the_shared_secant_ratio():
    gen = torch.Generator().manual_seed(2)
    x, f, dx, df = (torch.randn(4, 2, 3, generator=gen, dtype=F64) for _ in range(4))
    y, g = x + dx, f + df
    for eps in (PAIR_EPS, 1e-3):
        expected = secant_ratio(g - f, y - x, eps)
        assert torch.equal(pair_stiffness(y, g, x, f, eps=eps), expected)
        assert torch.equal(secant_ratio(g - f, y - x, eps, norm_df=flat_norm(g - f)), expected)
    # eps = 0: the denominator is clamped instead, so identical points still give 0.
    assert torch.equal(pair_stiffness(x, f, x, f, eps=0.0), torch.zeros(4, dtype=F64))
    assert torch.equal(pair_stiffness(y, g, x, f, eps=0.0), flat_norm(g - f) / flat_norm(y - x))
    for dtype in (torch.float32, F64):  # the docstring's promise holds in float32 too
        z = torch.zeros(3, 2, dtype=dtype)
        assert torch.equal(secant_ratio(z, z, 0.0), torch.zeros(3, dtype=dtype))


def test_drift_difference_aligns_better_than_solution_difference():
    # docs/theory/embedded_pairs.md, eqs. (11)–(12): Δf weights eigencomponent k by z_k², Δx by z_k.
    prob = symmetric_linear(np.array([-40.0, -8.0, -2.0]), seed=3)
    x = torch.randn(64, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    _, x_E, x_H = heun_pair(prob, x, 0.02)
    v_f, v_x = pair_directions(x_H, prob.f(0.0, x_H), x_E, prob.f(0.0, x_E))
    v1 = torch.tensor(np.asarray(prob.eigenvectors)[:, 0], dtype=F64).expand(64, 3)
    cf, cx = flat_cosine(v_f, v1).abs(), flat_cosine(v_x, v1).abs()
    assert torch.all(cf >= cx - 1e-12)
    assert float(cf.median()) > float(cx.median())


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4)),
         "`x_a` and `x_b`"),
        ((torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2)),
         "`x_a` and `f_a`"),
        ((torch.full((2, 3), float("nan")), torch.zeros(2, 3), torch.zeros(2, 3),
          torch.zeros(2, 3)), "`x_a` contains NaN"),
    ],
)
def test_pair_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        pair_stiffness(*args)


# ------------------------------------------------------------- Hairer's estimate
@pytest.mark.parametrize("name, rtol", [("dopri5", 0.01), ("tsit5", 0.01), ("dop853", 0.03)])
@pytest.mark.parametrize("x0", [[1.0, 1.0], [0.3, -2.0]])
def test_hairer_estimate_is_exact_on_stiff_diagonal_once_stability_limited(name, rtol, x0):
    """Hairer's stage difference recovers |λ₁| = 1000 on x' = diag(−1000, −1) x.

    Measured: DOPRI5 and Tsit5 are within 1 % on ≥ 99.8 % of the stability-limited steps
    (median 0.6 %); DOP853's 12/13 stage pair is biased low by ~1.7 % (the non-stiff
    component contaminates its stage difference more), hence its 3 % bound.
    """
    lam = torch.tensor([-1000.0, -1.0], dtype=F64)
    with pytest.warns(RuntimeWarning, match="stiff: use an implicit method"):  # it is stiff
        sol = solve_adaptive(lambda t, x: x * lam, torch.tensor([x0], dtype=F64), (0.0, 2.0),
                             name, rtol=1e-4, atol=1e-7)
    df = stiffkit.analyze(sol.trajectory, reference=None, lte=False)
    late = df[df.t > 0.2]  # the stiff transient has decayed: steps are stability-limited
    assert len(late) > 100
    assert (late.h_rho > 0.5 * stiffkit.real_stability_interval(name)).mean() > 0.99
    dev = (late.rho_hat / 1000.0 - 1.0).abs()
    assert dev.median() <= rtol
    assert (dev <= rtol).mean() >= 0.95


def test_hairer_stiffness_from_a_step_and_fallbacks():
    prob = symmetric_linear(np.array([-300.0, -1.0]), seed=0)
    x = torch.randn(5, 2, dtype=F64)
    step = rk_step(prob.f, 0.0, x, 0.01, "dopri5")
    rho = hairer_stiffness(step, "dopri5")
    assert torch.all(rho <= 300 + 1e-9) and torch.all(rho >= 1 - 1e-9)
    # Heun has no two stages at one abscissa: clear error, then the documented fallback.
    heun = rk_step(prob.f, 0.0, x, 0.01, "heun_euler")
    with pytest.raises(ValueError, match="no two stages at the same abscissa"):
        hairer_stiffness(heun, "heun_euler")
    calls = []

    def counted(t, y):
        calls.append(1)
        return prob.f(t, y)

    rho_emb = embedded_stiffness(counted, heun)
    assert len(calls) == 2  # f(x̂) and f(x): one extra evaluation beyond the next step's
    assert torch.all(rho_emb <= 300 + 1e-9) and torch.all(rho_emb >= 1 - 1e-9)
    with pytest.raises(ValueError, match="no embedded"):
        embedded_stiffness(counted, rk_step(prob.f, 0.0, x, 0.01, "rk4"))
    ind = stiffness_indicator(0.01, rho, "dopri5")
    torch.testing.assert_close(ind, 0.01 * rho / stiffkit.real_stability_interval("dopri5"))


def test_non_normal_failure_mode_is_documented():
    """For a strongly non-normal J, ρ̂ = ‖JΔx‖/‖Δx‖ is bounded by ‖J‖₂, not by ρ(J)
    (docs/theory/proposition1.md, eq. (7)): the estimate leaves [min|λ|, max|λ|], which cannot
    happen for a
    symmetric J. Demonstrated, not hidden."""
    prob = jordan_like_linear(-2.0, 500.0, 3)
    J = np.asarray(prob.A)
    spectral_radius = np.abs(np.linalg.eigvals(J)).max()  # = 2
    norm2 = np.linalg.norm(J, 2)  # ≈ 500
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, dtype=F64, generator=g)
    # Heun's own pair: Δx = (h²/2) J f with f = J x.
    step = rk_step(prob.f, 0.0, x, 1e-4, "heun_euler")
    rho = pair_stiffness(step.x, prob.f(0.0, step.x), step.x_hat, prob.f(0.0, step.x_hat)).numpy()
    assert np.median(rho) > 2 * spectral_radius
    # A generic pair of nearby points: ρ̂ ≈ ‖J‖₂, hundreds of times the spectral radius.
    y = x + 1e-3 * torch.randn(64, 3, dtype=F64, generator=g)
    rho_generic = pair_stiffness(y, prob.f(0.0, y), x, prob.f(0.0, x)).numpy()
    assert np.median(rho_generic) > 50 * spectral_radius
    assert np.all(rho <= norm2 * (1 + 1e-9)) and np.all(rho_generic <= norm2 * (1 + 1e-9))


@pytest.mark.parametrize("scale", [1.0, 1e-6, 1e-9, 1e-30, 1e30])
def test_rho_hat_does_not_depend_on_the_states_scale(scale):
    # Regression (issue 12, defect 3): the absolute guard 1e-8 gave ρ̂ = 50 at unit scale,
    # 28.5 at 1e-6 and 0.07 at 1e-9 on x' = −50x. The default guard is relative.
    x_a = scale * torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    x_b = x_a * (1 - 50 * 1e-3)  # an Euler step of x' = −50x, h = 1e-3
    rho = pair_stiffness(x_a, -50 * x_a, x_b, -50 * x_b)
    torch.testing.assert_close(rho, torch.full((5,), 50.0, dtype=F64), rtol=1e-10, atol=0)
    assert pair_stiffness(x_a, -50 * x_a, x_b, -50 * x_b, eps=PAIR_EPS)[0] < 50  # the bias


def test_rho_hat_in_float32_is_resolved_or_nan_never_zero():
    # float32, h = 1e-7: the absolute guard returned exactly 0 (stiffness flag silently off).
    x_a = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    for h, resolved in ((1e-5, True), (1e-9, False)):
        x_b = x_a * (1 - 50 * h)
        rho = pair_stiffness(x_a, -50 * x_a, x_b, -50 * x_b)
        if resolved:
            torch.testing.assert_close(rho, torch.full((6,), 50.0), rtol=0.05, atol=0)
        else:
            assert rho.isnan().all()  # Δx below roundoff: no information, flagged
        assert not (rho == 0).any()


def test_relative_guard_threshold_is_sixteen_ulps_of_the_larger_state():
    from stiffkit._utils import RESOLUTION_ULPS

    x_a = torch.tensor([[3.0, 4.0]], dtype=F64)  # ‖x_a‖ = 5
    floor = RESOLUTION_ULPS * torch.finfo(F64).eps * 5.0
    above = x_a + torch.tensor([[1.1 * floor, 0.0]], dtype=F64)
    below = x_a + torch.tensor([[0.9 * floor, 0.0]], dtype=F64)
    f = torch.zeros_like(x_a)
    assert torch.isfinite(pair_stiffness(above, f + 1, x_a, f)).all()
    assert pair_stiffness(below, f + 1, x_a, f).isnan().all()


def test_stage_estimates_use_the_relative_guard_by_default():
    # hairer_stiffness / embedded_stiffness on a tiny-scale linear problem: ρ̂ = |λ| still,
    # as at unit scale (the embedded pair's Δx ~ (hλ)⁵‖x‖ carries relative roundoff ~1e-6).
    prob = symmetric_linear(np.array([-50.0, -50.0]), seed=0)
    x = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    fifty = torch.full((3,), 50.0, dtype=F64)
    for scale in (1.0, 1e-12):
        step = rk_step(prob.f, 0.0, scale * x, 1e-3, "dopri5")
        torch.testing.assert_close(hairer_stiffness(step, "dopri5"), fifty, rtol=1e-8, atol=0)
        torch.testing.assert_close(embedded_stiffness(prob.f, step), fifty, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda x, s: stiffkit.pair_stiffness(x, x, 2 * x, 2 * x, eps=float("inf")), ValueError,
         "`eps` must be a finite number >= 0"),
        (lambda x, s: stiffkit.pair_stiffness(x, x, 2 * x, 2 * x, eps="a"), ValueError,
         "`eps` must be a real number"),
        (lambda x, s: stiffkit.pair_stiffness(x[:0], x[:0], x[:0], x[:0]), ValueError,
         "`x_a` has an empty batch"),
        (lambda x, s: stiffkit.hairer_stiffness(None, "dopri5"), TypeError,
         "`step` must be an RKStep"),
        (lambda x, s: embedded_stiffness(None, s), TypeError, "`f` must be callable"),
        (lambda x, s: embedded_stiffness(lambda t, y: -y, None), TypeError,
         "`step` must be an RKStep"),
        (lambda x, s: embedded_stiffness(lambda t, y: -y, s, f_new=x[:1]), ValueError,
         "`f_new` and `f` must have the same shape"),
        (lambda x, s: embedded_stiffness(lambda t, y: y[:1], s), ValueError,
         "`f` must return a tensor of the state's shape"),
        (lambda x, s: stiffkit.stiffness_indicator("a", torch.ones(3, dtype=F64), "rk4"),
         TypeError, "`h` must be a real number"),
        (lambda x, s: stiffkit.stiffness_indicator(float("nan"), torch.ones(3), "rk4"),
         ValueError, "`h` contains NaN or Inf"),
        (lambda x, s: stiffkit.stiffness_indicator(torch.ones(2), torch.ones(3), "rk4"),
         ValueError, r"`h` must be a scalar or have shape \[batch\] = \[3\]"),
        (lambda x, s: stiffkit.stiffness_indicator(0.1, torch.ones(3, dtype=torch.int64), "rk4"),
         TypeError, "`rho` must have a floating dtype"),
    ],
)
def test_bad_input_is_named(call, exc, message):
    """Issue 12: eps = inf gave a silent ρ̂ = 0, an integer ρ̂ an integer indicator of 0, a
    non-step an AttributeError, f_new's shape was reported as `f_a`'s."""
    x = torch.ones(3, 2, dtype=F64)
    step = stiffkit.rk_step(lambda t, y: -y, 0.0, x, 0.1, "dopri5")
    with pytest.raises(exc, match=message):
        call(x, step)
