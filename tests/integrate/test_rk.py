"""Runge–Kutta steps and the fixed-grid integrator, against analytic truth."""

import math

import numpy as np
import pytest
import torch
from _asymptotics import linear_order_is_measurable
from hypothesis import given
from hypothesis import strategies as st

import stiffkit
from stiffkit import rk_step, solve_fixed
from stiffkit.integrate import fitted_order
from stiffkit.tableaux import get_tableau, list_tableaux
from stiffkit.tableaux.stability import stability_coefficients

ALL = list_tableaux()
EMBEDDED = [n for n in ALL if get_tableau(n).is_embedded]
F64 = torch.float64


# ----------------------------------------------------------------- test problems
class ForcedLinear:
    """x' = A x + Re(u e^{iωt}): non-autonomous, with a closed-form solution.

    x(t) = e^{At}(x0 − p(0)) + p(t), where p(t) = Re((iωI − A)⁻¹ u e^{iωt}).
    """

    def __init__(self):
        self.A = np.array([[-1.0, 0.6], [-0.4, -1.5]])
        self.u = np.array([1.0 + 0.5j, -0.3 + 0.2j])
        self.w = 2.0
        self.At = torch.tensor(self.A, dtype=F64)

    def f(self, t, x):
        phase = np.exp(1j * self.w * np.atleast_1d(t.detach().numpy()))
        forcing = np.real(self.u[None, :] * phase[:, None])
        return x @ self.At.T + torch.tensor(forcing, dtype=x.dtype)

    def particular(self, t):
        v = np.linalg.solve(1j * self.w * np.eye(2) - self.A, self.u)
        return np.real(v * np.exp(1j * self.w * t))

    def exact(self, t0, t1, x0):
        from scipy.linalg import expm

        x0 = x0.numpy()
        out = (x0 - self.particular(t0)) @ expm(self.A * (t1 - t0)).T + self.particular(t1)
        return torch.tensor(out, dtype=F64)


def riccati_f(t, x):
    """x' = −2 t x², exact x(t) = 1/(t² + C) with C = 1/x0 − t0²."""
    return -2.0 * t * x**2 if t.ndim == 0 else -2.0 * t[:, None] * x**2


def riccati_exact(t0, t1, x0):
    C = 1.0 / x0 - t0**2
    return 1.0 / (t1**2 + C)


LINEAR = ForcedLinear()
X0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=F64)


def _measured_order(tab, f, x0, span, exact):
    """Fit the slope over the finest grids whose error is well above roundoff."""
    hs, errs = [], []
    for k in range(0, 14):
        n = 2**k
        try:
            traj = solve_fixed(f, x0, torch.linspace(span[0], span[1], n + 1, dtype=F64), tab)
        except ValueError:  # the coarsest grids may blow up; they are outside the range anyway
            continue
        err = float((traj.states[-1] - exact).abs().max())
        if err < 1e-13:  # O(1) states: roundoff over the steps stays below ~1e-14
            break
        if err < 1e-3:
            hs.append((span[1] - span[0]) / n)
            errs.append(err)
    assert len(hs) >= 3, f"too few points in the asymptotic range for {tab.name}: {errs}"
    return fitted_order(hs[-3:], errs[-3:])


def _methods():
    out = []
    for name in ALL:
        tab = get_tableau(name)
        out.append(pytest.param(tab, id=name))
        if tab.is_embedded:
            out.append(pytest.param(tab.embedded(), id=f"{name}-embedded"))
    return out


@pytest.mark.parametrize("tab", _methods())
def test_convergence_order_on_linear_problem(tab):
    span = (0.0, 2.0)
    # |λ|·T of the test problem: the forcing frequency ω = 2 dominates the spectrum (|λ| ≤ 1.6).
    if not linear_order_is_measurable(tab, scale=2.0 * span[1], floor=1e-13):
        pytest.skip(f"{tab.name}'s asymptotic range lies below float64 roundoff")
    exact = LINEAR.exact(*span, X0)
    assert abs(_measured_order(tab, LINEAR.f, X0, span, exact) - tab.order) <= 0.3


@pytest.mark.parametrize("tab", _methods())
def test_convergence_order_on_nonlinear_problem(tab):
    """A nonlinear, non-autonomous check that the order is at least the declared one.

    Only a lower bound: the high-order pairs (DOPRI5, Tsit5, DOP853) have principal
    error coefficients so small that in float64 the error reaches roundoff before the
    asymptotic slope is reached, so they measure 5.4, 5.4 and 9.1 here. The exact
    order conditions (test_order_conditions.py) pin the order itself.
    """
    x0 = torch.tensor([[1.0], [0.5]], dtype=F64)
    span = (0.0, 1.5)
    exact = riccati_exact(0.0, 1.5, x0)
    assert _measured_order(tab, riccati_f, x0, span, exact) >= tab.order - 0.3


# ------------------------------------------------------------ linear step = R(hJ)
@st.composite
def linear_systems(draw):
    n = draw(st.integers(1, 4))
    vals = draw(st.lists(st.floats(-3, 3), min_size=n * n, max_size=n * n))
    h = draw(st.floats(0.01, 1.0) | st.floats(-1.0, -0.01))
    x = draw(st.lists(st.floats(-2, 2), min_size=2 * n, max_size=2 * n))
    return np.array(vals).reshape(n, n), h, np.array(x).reshape(2, n)


@given(linear_systems(), st.sampled_from(ALL))
def test_linear_step_equals_stability_polynomial(system, name):
    J, h, x = system
    coeffs = [float(c) for c in stability_coefficients(name)]
    R = sum(c * np.linalg.matrix_power(h * J, k) for k, c in enumerate(coeffs))
    Jt = torch.tensor(J, dtype=F64)
    step = rk_step(lambda t, y: y @ Jt.T, 0.0, torch.tensor(x, dtype=F64), h, name)
    expected = x @ R.T
    scale = 1 + np.abs(expected).max() + np.abs(x).max() * np.linalg.norm(h * J, 2) ** len(coeffs)
    np.testing.assert_allclose(step.x.numpy(), expected, rtol=0, atol=1e-12 * scale)


@given(linear_systems(), st.sampled_from([n for n in ALL if get_tableau(n).fsal]))
def test_fsal_last_stage_is_the_next_steps_first(system, name):
    """FSAL: x_{n+1} = x_n + h Σ b_i k_i is the last stage argument, so k_s = J x_{n+1} is the
    next step's k_1; a fixed-grid solve that reuses it takes 3 steps of R(hJ) exactly
    (|R|(h|J|) bounds the rounding)."""
    J, h, x = system
    Jt, x0 = torch.tensor(J, dtype=F64), torch.tensor(x, dtype=F64)
    f = lambda t, y: y @ Jt.T  # noqa: E731
    b = get_tableau(name).numpy()["b"]
    step = rk_step(f, 0.0, x0, h, name)
    k, x1 = [kk.numpy() for kk in step.k], step.x.numpy()
    size = np.abs(x) + abs(h) * sum(abs(bi) * np.abs(ki) for bi, ki in zip(b, k))  # roundoff
    np.testing.assert_allclose(x1, x + h * sum(bi * ki for bi, ki in zip(b, k)), rtol=0,
                               atol=1e-13 * (1 + size.max()))
    np.testing.assert_allclose(k[-1], x1 @ J.T, rtol=0,
                               atol=1e-13 * (1 + (np.abs(x1) @ np.abs(J).T).max()))
    coeffs = [float(c) for c in stability_coefficients(name)]
    R = sum(c * np.linalg.matrix_power(h * J, p) for p, c in enumerate(coeffs))
    R_abs = sum(abs(c) * np.linalg.matrix_power(np.abs(h * J), p) for p, c in enumerate(coeffs))
    traj = solve_fixed(f, x0, torch.tensor([0.0, h, 2 * h, 3 * h], dtype=F64), name)
    assert traj.nfe == 3 * len(b) - 2
    for n in range(3):
        want = x @ np.linalg.matrix_power(R, n).T @ J.T
        bound = np.abs(x) @ np.linalg.matrix_power(R_abs, n).T @ np.abs(J).T
        np.testing.assert_allclose(traj.drifts[n].numpy(), want, rtol=0,
                                   atol=1e-12 * (1 + bound.max()))


# ------------------------------------------------------- embedded estimate ~ error
@st.composite
def negative_definite(draw):
    n = draw(st.integers(1, 4))
    lam = draw(st.lists(st.floats(0.5, 3.0), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**31 - 1))
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    x = np.random.default_rng(seed + 1).standard_normal((2, n))
    return -(q * np.array(lam)) @ q.T, x


def _tracking_start(tab):
    """Return (z0, leading error constant, q) for test_embedded_error_tracks_true_local_error.

    The asymptotic range ends where the next term of the error expansion matters:
    |z| ≈ |C_q| / |C_{q+1}| in the exact stability coefficients (tiny for Fehlberg 1(2),
    whose order-1 error constant is 1/512). Steps start well inside it.
    """
    q = min(tab.order, tab.embedded_order)
    low = stability_coefficients(tab, embedded=tab.embedded_order < tab.order)
    low = np.array([float(v) for v in low] + [0] * 3)
    exp = np.array([1 / math.factorial(k) for k in range(len(low))])
    lead = abs(exp[q + 1] - low[q + 1])
    return min(0.4, 0.2 * lead / max(abs(exp[q + 2] - low[q + 2]), 1e-300)), lead, q


#: Pairs whose lower-order local error at the smallest step, z0/8, stays above float64 roundoff
#: (1e-14 on O(1) states). RK8(7)13M's order-7 error there is ~5e-19: its asymptotic range
#: lies below roundoff (the next-lowest, DOP853, sits at 2e-13).
def _trackable(name):
    z0, lead, q = _tracking_start(get_tableau(name))
    return lead * (z0 / 8) ** (q + 1) >= 1e-14


TRACKABLE = [n for n in EMBEDDED if _trackable(n)]


@given(negative_definite(), st.sampled_from(TRACKABLE))
def test_embedded_error_tracks_true_local_error(system, name):
    """As h → 0, (x − x̂) equals the local error of the lower-order solution to leading
    order: their relative gap shrinks like O(h)."""
    from scipy.linalg import expm

    J, x = system
    tab = get_tableau(name)
    low_is_embedded = tab.embedded_order < tab.order
    Jt, xt = torch.tensor(J, dtype=F64), torch.tensor(x, dtype=F64)
    gaps = []
    z0, _, _ = _tracking_start(tab)
    for z in z0 / 2.0 ** np.arange(4):
        h = z / np.abs(np.linalg.eigvalsh(J)).max()
        step = rk_step(lambda t, y: y @ Jt.T, 0.0, xt, h, tab)
        exact = torch.tensor(x @ expm(h * J).T, dtype=F64)
        true_low = exact - (step.x_hat if low_is_embedded else step.x)
        estimate = step.error if low_is_embedded else -step.error
        gap = (estimate - true_low).norm() / true_low.norm()
        gaps.append(float(gap))
    # The gap is O(h): in the asymptotic range each halving halves it (≤ 0.7×
    # asserted), until roundoff takes over around 1e-2 for DOP853's tiny local error.
    assert gaps[-1] <= max(0.7 * gaps[-2], 1e-2)
    assert gaps[-1] < 0.5


# ------------------------------------------------------------- batch consistency
def _nonlinear(t, x):
    return torch.tanh(x) * torch.cos(3 * x.flip(-1)) - 0.5 * x + t


@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.sampled_from(ALL))
def test_step_is_batch_consistent(batch, seed, name):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 2, generator=g, dtype=F64)
    full = rk_step(_nonlinear, 0.3, x, 0.1, name)
    for i in range(batch):
        alone = rk_step(_nonlinear, 0.3, x[i : i + 1], 0.1, name)
        assert torch.equal(full.x[i], alone.x[0])
        if full.error is not None:
            assert torch.equal(full.error[i], alone.error[0])


def test_per_sample_step_sizes():
    def f(t, x):  # t is [batch] when the step sizes are per sample
        return _nonlinear(t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t, x)

    x = torch.randn(3, 2, dtype=F64)
    h = torch.tensor([0.1, -0.2, 0.05], dtype=F64)
    full = rk_step(f, 0.0, x, h, "dopri5")
    for i in range(3):
        alone = rk_step(f, 0.0, x[i : i + 1], float(h[i]), "dopri5")
        torch.testing.assert_close(full.x[i], alone.x[0], rtol=0, atol=1e-15)


# ----------------------------------------------------------- evaluation contract
class Recorder:
    """A mock vector field that records where each stage was evaluated."""

    def __init__(self):
        self.calls = []

    def __call__(self, t, x):
        self.calls.append((t.clone(), x.clone()))
        return torch.sin(x) + t


@pytest.mark.parametrize("name", ALL)
def test_exactly_s_evaluations_at_the_tableau_points(name):
    tab = get_tableau(name)
    rec = Recorder()
    x = torch.randn(4, 2, dtype=F64)
    step = rk_step(rec, 0.5, x, 0.2, tab)
    assert len(rec.calls) == tab.num_stages == step.num_evals
    c = tab.numpy()["c"]
    for i, (t, g) in enumerate(rec.calls):
        assert float(t) == pytest.approx(0.5 + c[i] * 0.2, abs=1e-15)
        assert torch.equal(g, step.g[i])
    if tab.fsal:
        # The last stage is f(t + h, x_new): reuse saves one evaluation next step.
        assert torch.equal(step.g[-1], step.x)
        rec2 = Recorder()
        step2 = rk_step(rec2, 0.7, step.x, 0.2, tab, k1=step.k[-1])
        assert len(rec2.calls) == tab.num_stages - 1 == step2.num_evals


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_in_place_writes_and_dtype_preserved(dtype):
    x = torch.randn(5, 3, dtype=dtype)
    before = x.clone()
    step = rk_step(_nonlinear, 0.0, x, 0.1, "dopri5")
    assert torch.equal(x, before)
    assert step.x.dtype == dtype and step.x_hat.dtype == dtype and step.error.dtype == dtype
    assert step.x.shape == x.shape


def test_step_is_differentiable():
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: rk_step(_nonlinear, 0.1, y, 0.2, "tsit5").x, (x,))
    w = torch.tensor(0.7, dtype=F64, requires_grad=True)
    out = rk_step(lambda t, y: -w * y, 0.0, x.detach(), 0.1, "rk4").x.sum()
    out.backward()
    assert w.grad is not None and torch.isfinite(w.grad)


def test_error_equals_difference_of_solutions():
    x = torch.randn(3, 2, dtype=F64)
    step = rk_step(_nonlinear, 0.0, x, 0.3, "dopri5")
    torch.testing.assert_close(step.error, step.x - step.x_hat, rtol=0, atol=1e-15)
    plain = rk_step(_nonlinear, 0.0, x, 0.3, "rk4")
    assert plain.x_hat is None and plain.error is None


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(x=torch.tensor([[float("nan"), 0.0]])), ValueError, "`x` contains NaN"),
        (dict(h=0.0), ValueError, "`h` must be nonzero"),
        (dict(h=float("inf")), ValueError, "`h` contains NaN or Inf"),
        (dict(t=torch.zeros(3)), ValueError, "`t` must be a scalar or have shape"),
        (dict(f=lambda t, x: x[:, :1]), ValueError,
         "`f` must return a tensor of the state's shape"),
        (dict(x=[[1.0, 2.0]]), TypeError, "`x` must be a torch.Tensor"),
        (dict(x=torch.ones(2, dtype=torch.int64)), TypeError, "floating dtype"),
        (dict(k1=torch.zeros(1, 2)), ValueError, "`k1` must have the state's shape"),
        (dict(tableau="nope"), ValueError, "Unknown tableau"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, exc, message):
    args = dict(f=_nonlinear, t=0.0, x=torch.ones(2, 2), h=0.1, tableau="rk4")
    args.update(kwargs)
    k1 = args.pop("k1", None)
    with pytest.raises(exc, match=message):
        rk_step(args["f"], args["t"], args["x"], args["h"], args["tableau"], k1=k1)


# ------------------------------------------------------------------ solve_fixed
def test_solve_fixed_records_the_trajectory():
    x0 = torch.randn(3, 2, dtype=F64)
    grid = torch.linspace(0, 1, 6, dtype=F64)
    traj = solve_fixed(_nonlinear, x0, grid, "heun_euler", record_stages=True)
    assert torch.equal(traj.times, grid)
    assert traj.states.shape == (6, 3, 2) and traj.drifts.shape == (5, 3, 2)
    assert traj.embedded.shape == (5, 3, 2) and traj.stage_k.shape == (5, 2, 3, 2)
    assert traj.nfe == 10 and traj.tableau.name == "heun_euler"
    h = grid[1] - grid[0]
    # Heun/Euler: the paired point is the Euler point x_n + h f(x_n) = x̂_{n+1}.
    torch.testing.assert_close(traj.pair_states, traj.states[:-1] + h * traj.drifts)
    torch.testing.assert_close(traj.pair_states, traj.embedded)
    torch.testing.assert_close(traj.drifts[1], _nonlinear(grid[1], traj.states[1]))


def test_solve_fixed_fsal_reuse_and_backward_grid():
    x0 = torch.randn(2, 2, dtype=F64)
    grid = torch.linspace(1, 0, 5, dtype=F64)  # decreasing
    traj = solve_fixed(_nonlinear, x0, grid, "dopri5")
    assert traj.nfe == 7 + 3 * 6
    torch.testing.assert_close(traj.final_drift, _nonlinear(grid[-1], traj.states[-1]))
    assert torch.all(traj.steps < 0)


@pytest.mark.parametrize("grid", [[0.0], [0.0, 1.0, 0.5], [0.0, float("nan")]])
def test_solve_fixed_rejects_bad_grids(grid):
    with pytest.raises(ValueError, match="`t`"):
        solve_fixed(_nonlinear, torch.ones(1, 2), torch.tensor(grid), "rk4")


def test_solve_fixed_reports_where_an_unstable_solution_blew_up():
    """Euler at h·|λ| = 100 (far outside its interval [-2, 0]) overflows; the error names the
    point."""
    x0 = torch.ones(3, 1, dtype=torch.float64)
    t = torch.linspace(0.0, 40.0, 401, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"became NaN or Inf at grid point \d+ .*stability region"):
        stiffkit.solve_fixed(lambda t, x: -1000.0 * x, x0, t, "euler")
    # Inside the stability interval the same grid is fine.
    traj = stiffkit.solve_fixed(lambda t, x: -15.0 * x, x0, t, "euler")
    torch.testing.assert_close(traj.states[-1], x0 * (1 - 1.5) ** 400)


def test_torchdiffeqs_rk4_is_the_three_eighths_rule():
    # Issue 12 (small ones): torchdiffeq's method="rk4" is Kutta's 3/8 rule, stiffkit's "rk38";
    # stiffkit's "rk4" is the classical method and differs from it at O(h⁵) per step.
    import torchdiffeq

    def f(t, y):
        return torch.sin(t) * y - y**3

    x0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    theirs = torchdiffeq.odeint(f, x0, t, method="rk4")
    assert torch.equal(solve_fixed(f, x0, t, "rk38").states, theirs)
    assert (solve_fixed(f, x0, t, "rk4").states - theirs).abs().max() > 1e-6
