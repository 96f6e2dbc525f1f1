"""The adaptive integrator: tolerance proportionality, controllers, bookkeeping, errors."""

import warnings

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import assume, given
from hypothesis import strategies as st

from stiffkit import solve_adaptive
from stiffkit.integrate.adaptive import error_norm
from stiffkit.problems import symmetric_linear
from stiffkit.tableaux import get_tableau, list_tableaux

F64 = torch.float64
A = torch.tensor([[-1.0, 0.5], [-0.5, -3.0]], dtype=F64)
X0 = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=F64)


def linear(t, x):
    return x @ A.T


def exact(t):
    return X0 @ torch.linalg.matrix_exp(A * t).T


EMBEDDED = [n for n in list_tableaux() if get_tableau(n).is_embedded and get_tableau(n).order >= 3]


@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize("controller", ["i", "pi"])
def test_error_follows_tolerance(name, controller):
    errs = []
    for tol in (1e-4, 1e-7):
        sol = solve_adaptive(linear, X0, (0.0, 3.0), name, rtol=tol, atol=tol,
                             controller=controller)
        errs.append(float((sol.x[-1] - exact(3.0)).abs().max()))
        # Global error stays within a modest multiple of the tolerance.
        assert errs[-1] < 50 * tol
    assert errs[1] < errs[0]


def test_bookkeeping_and_trajectory():
    sol = solve_adaptive(linear, X0, (0.0, 2.0), "dopri5", rtol=1e-6, atol=1e-9)
    traj = sol.trajectory
    n = sol.num_accepted
    assert traj.states.shape == (n + 1, 2, 2) and traj.drifts.shape == (n, 2, 2)
    assert traj.embedded.shape == (n, 2, 2) and traj.pair_states.shape == (n, 2, 2)
    assert float(traj.times[0]) == 0.0 and float(traj.times[-1]) == 2.0
    assert torch.all(traj.steps > 0)
    # FSAL: 6 evaluations per attempted step, plus the first drift and the h0 probe.
    assert sol.nfe == 6 * (sol.num_accepted + sol.num_rejected) + 2
    assert traj.nfe == sol.nfe
    assert torch.all(traj.diagnostics["error_norm"] <= 1.0)
    torch.testing.assert_close(traj.final_drift, linear(2.0, traj.states[-1]))


def test_t_eval_is_hit_exactly_and_backwards_works():
    t_eval = [2.0, 1.5, 0.7, 0.0]
    sol = solve_adaptive(linear, exact(2.0), (2.0, 0.0), "tsit5", rtol=1e-9, atol=1e-11,
                         t_eval=t_eval)
    np.testing.assert_array_equal(sol.t.numpy(), t_eval)
    for t, x in zip(t_eval, sol.x):
        torch.testing.assert_close(x, exact(t), rtol=1e-6, atol=1e-7)


def test_stiff_problem_rejects_steps_and_stays_stable():
    stiff = torch.tensor([[-1000.0, 0.0], [0.0, -1.0]], dtype=F64)
    with pytest.warns(RuntimeWarning, match="stiff: use an implicit method"):
        sol = solve_adaptive(lambda t, x: x @ stiff.T, X0, (0.0, 1.0), "dopri5", rtol=1e-4,
                             atol=1e-6, h0=0.1)
    assert sol.num_rejected > 0
    h = sol.trajectory.steps[5:]
    # Explicit methods are stability-limited: h·|λ| hovers near DOPRI5's 3.3 boundary.
    assert float((h * 1000).median()) < 4.0
    assert torch.isfinite(sol.x).all()


def _textbook_factor(kind, q, err, err_prev):
    """The step factor of an accepted step, written out from HNW II.4 and dopri5.f: safety
    0.9, I control err^(−1/q), PI control err^(−0.85/q)·err_prev^(0.2/q) (β = 0.04 for
    q = 5), error floor 1e-10, clamped to [0.2, 10]."""
    err = max(err, 1e-10)
    raw = 0.9 * (err ** (-1 / q) if kind == "i" else err ** (-0.85 / q) * err_prev ** (0.2 / q))
    return min(10.0, max(0.2, raw))


@given(
    lams=st.lists(st.floats(-5.0, -0.1), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["pi", "i"]),
    name=st.sampled_from(["dopri5", "tsit5", "bogacki_shampine"]),
    rtol=st.floats(1e-8, 1e-4),
    t1=st.floats(0.5, 3.0),
)
def test_step_sizes_follow_the_controller_formula(lams, seed, kind, name, rtol, t1):
    """Replay every accepted step: h_{n+1}/h_n is the controller's factor of the recorded error
    norms, with q = min(order, embedded order) + 1 and the PI memory max(err_{n−1}, 1e-4)."""
    prob = symmetric_linear(lams, seed=seed)
    x0 = torch.tensor(np.random.default_rng(seed).standard_normal((2, len(lams))), dtype=F64)
    sol = solve_adaptive(prob.f, x0, (0.0, t1), name, rtol=rtol, atol=rtol, controller=kind,
                         h0=1e-3)
    assume(sol.num_rejected == 0)  # a rejected attempt's error is not recorded
    tab = get_tableau(name)
    q = min(tab.order, tab.embedded_order) + 1
    h = sol.trajectory.steps.numpy()
    err = sol.trajectory.diagnostics["error_norm"].amax(dim=1).numpy()
    prev = 1e-4
    for n in range(len(h) - 2):  # the last step is clipped to land on t1
        assert h[n + 1] / h[n] == pytest.approx(_textbook_factor(kind, q, err[n], prev), rel=1e-9)
        prev = max(err[n], 1e-4)
    torch.testing.assert_close(sol.x[-1], prob.exact(0.0, t1, x0), rtol=0, atol=200 * rtol)


@pytest.mark.parametrize("name", ["bogacki_shampine", "dopri5", "tsit5", "dop853"])
def test_fsal_stage_is_the_drift_at_the_accepted_state_after_rejections(name):
    """A rejected step leaves x unchanged, so the first stage of the retry must still be
    f(t_n, x_n), not the rejected attempt's last stage."""
    sol = solve_adaptive(linear, X0, (0.0, 3.0), name, rtol=1e-6, atol=1e-9, h0=2.0)
    traj = sol.trajectory
    assert sol.num_rejected >= 1
    for t, x, f in zip(traj.times[:-1], traj.states[:-1], traj.drifts):
        torch.testing.assert_close(f, linear(t, x), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(traj.final_drift, linear(3.0, traj.states[-1]), rtol=1e-14,
                               atol=1e-15)
    torch.testing.assert_close(sol.x[-1], exact(3.0), rtol=0, atol=1e-5)


def test_agrees_with_torchdiffeq_dopri5():
    ours = solve_adaptive(linear, X0, (0.0, 3.0), "dopri5_shampine", rtol=1e-10, atol=1e-12)
    theirs = torchdiffeq.odeint(linear, X0, torch.tensor([0.0, 3.0], dtype=F64), rtol=1e-10,
                                atol=1e-12)
    torch.testing.assert_close(ours.x[-1], theirs[-1], rtol=1e-8, atol=1e-9)


def test_dop853_combined_error_estimate():
    a = solve_adaptive(linear, X0, (0.0, 3.0), "dop853", rtol=1e-8, atol=1e-10)
    b = solve_adaptive(linear, X0, (0.0, 3.0), "dop853", rtol=1e-8, atol=1e-10, use_aux_error=True)
    for sol in (a, b):
        assert float((sol.x[-1] - exact(3.0)).abs().max()) < 1e-7
    with pytest.raises(ValueError, match="`use_aux_error`"):
        solve_adaptive(linear, X0, (0.0, 1.0), "dopri5", use_aux_error=True)


def test_error_norm_is_per_sample_rms():
    err = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    x = torch.zeros(2, 2)
    out = error_norm(err, x, x, rtol=1.0, atol=1.0)
    torch.testing.assert_close(out, torch.tensor([np.sqrt(12.5), 0.0], dtype=torch.float32))


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(tableau="rk4"), ValueError, "must be an embedded pair"),
        (dict(rtol=0.0), ValueError, "`rtol` must be positive"),
        (dict(atol=float("nan")), ValueError, "`atol`"),
        (dict(controller="pid"), ValueError, "`controller`"),
        (dict(t_span=(1.0, 1.0)), ValueError, "`t_span` must have two different ends"),
        (dict(t_eval=[0.0, 2.0]), ValueError, "`t_eval` must lie within"),
        (dict(t_eval=[0.5, 0.2]), ValueError, "`t_eval` must be strictly monotone"),
        (dict(h0=-1.0), ValueError, "`h0` must be positive"),
        (dict(max_steps=3), RuntimeError, "`max_steps` = 3 reached"),
    ],
)
def test_bad_arguments(kwargs, exc, message):
    args = dict(t_span=(0.0, 1.0), tableau="dopri5")
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        solve_adaptive(linear, X0, args.pop("t_span"), args.pop("tableau"), **args)


def test_nan_drift_at_the_initial_state_is_named():
    with pytest.raises(ValueError, match="`f` returned NaN or Inf at the initial state"):
        solve_adaptive(lambda t, x: x * float("nan"), X0, (0.0, 1.0))


def test_drift_undefined_beyond_a_point_is_reported_not_hidden_as_underflow():
    # Finite for t < 0.5, NaN beyond: every step that crosses 0.5 fails, whatever its size.
    def f(t, x):
        return torch.where(t < 0.5, -x, torch.full_like(x, float("nan")))

    with pytest.raises(RuntimeError, match="`f` returned NaN or Inf at every step size"):
        solve_adaptive(f, X0, (0.0, 1.0), rtol=1e-6, atol=1e-9)


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="`x0` has an empty batch"):
        solve_adaptive(linear, X0[:0], (0.0, 1.0))


def test_rtol_below_roundoff_warns_and_is_clamped():
    x0 = X0.float()
    with pytest.warns(RuntimeWarning, match="`rtol` = 1e-12 is below 100 ulps"):
        sol = solve_adaptive(lambda t, x: -x, x0, (0.0, 1.0), rtol=1e-12, atol=1e-12)
    clamped = solve_adaptive(lambda t, x: -x, x0, (0.0, 1.0),
                             rtol=100 * torch.finfo(torch.float32).eps, atol=1e-12)
    assert sol.num_accepted == clamped.num_accepted < 500


# ------------------------------------------------------- stiffness detection (defect 8)
STIFF_A = torch.tensor([[-1e5, 0.0], [0.0, -1.0]], dtype=F64)


def _stiff(t, x):
    return x @ STIFF_A.T


def test_a_clearly_stiff_problem_stops_early_when_asked():
    # Regression (issue 12, defect 8): λ = −1e5 over [0, 10] ground on to `max_steps`. With
    # on_stiff="raise", Hairer's test stops it within a few dozen steps, as DOPRI5 does.
    from stiffkit.integrate.adaptive import StiffnessDetected

    calls = []

    def f(t, x):
        calls.append(None)
        return _stiff(t, x)

    with pytest.raises(StiffnessDetected, match="stiff: use an implicit method"):
        solve_adaptive(f, X0, (0.0, 10.0), "dopri5", rtol=1e-6, atol=1e-9, on_stiff="raise")
    assert len(calls) < 500  # vs ~3e5 evaluations to reach t = 10
    with pytest.raises(RuntimeError, match="max_steps.*became stiff at t = .*implicit method"):
        with pytest.warns(RuntimeWarning, match="stiff"):
            solve_adaptive(_stiff, X0, (0.0, 10.0), "dopri5", max_steps=300)


@pytest.mark.parametrize("tableau", ["dopri5", "tsit5", "dop853", "heun_euler"])
def test_stiffness_warning_fires_on_stiff_and_not_on_smooth_problems(tableau):
    with pytest.warns(RuntimeWarning, match="seems to have become stiff"):
        solve_adaptive(_stiff, X0, (0.0, 0.05), tableau, rtol=1e-6, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_adaptive(linear, X0, (0.0, 3.0), tableau, rtol=1e-6, atol=1e-9)
        solve_adaptive(_stiff, X0, (0.0, 0.05), tableau, rtol=1e-6, atol=1e-9, on_stiff="ignore")


def test_stiffness_thresholds_and_bad_options():
    from stiffkit.integrate.rule import StiffnessRule, stiffness_threshold
    from stiffkit.tableaux import real_stability_interval

    assert stiffness_threshold("dopri5") == 3.25
    ratio = stiffness_threshold("tsit5") / real_stability_interval("tsit5")
    assert ratio == pytest.approx(3.25 / 3.3066)
    with pytest.raises(ValueError, match="`on_stiff`"):
        solve_adaptive(linear, X0, (0.0, 1.0), on_stiff="loud")
    with pytest.raises(TypeError, match="`stiffness_rule`"):
        solve_adaptive(linear, X0, (0.0, 1.0), stiffness_rule=3.25)
    # A stricter rule (more positive tests) fires later: never within a short stiff run.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_adaptive(_stiff, X0, (0.0, 0.05), rtol=1e-6, atol=1e-9,
                       stiffness_rule=StiffnessRule(count=10_000))


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(f=None), TypeError, "`f` must be callable"),
        (dict(rtol="1e-3"), ValueError, "`rtol` must be a real number"),
        (dict(atol=None), ValueError, "`atol` must be a real number"),
        (dict(rtol=torch.tensor([1e-3, 1e-3])), ValueError, "`rtol` must be a real number"),
        (dict(t_span=(0.0,)), ValueError, r"`t_span` must be a pair \(t0, t1\)"),
        (dict(t_span=None), ValueError, "`t_span` must be a pair"),
        (dict(t_span="ab"), ValueError, "`t_span` must be a pair"),
        (dict(t_span=(0.0, 1j)), ValueError, "`t_span` must be a real number"),
        (dict(t_eval=[0.0, float("nan")]), ValueError, "`t_eval` contains NaN or Inf"),
        (dict(t_eval=[]), ValueError, "`t_eval` must be a non-empty 1-D sequence"),
        (dict(t_eval=[[0.0, 0.5]]), ValueError, "`t_eval` must be a non-empty 1-D sequence"),
        (dict(t_eval="ab"), TypeError, "`t_eval` must be a sequence of times"),
        (dict(h0="a"), ValueError, "`h0` must be a real number"),
        (dict(max_steps=0), ValueError, "`max_steps` must be a positive integer"),
        (dict(max_steps=2.5), ValueError, "`max_steps` must be a positive integer"),
        (dict(max_steps=None), ValueError, "`max_steps` must be a positive integer"),
        (dict(f=lambda t, x: x.float()), ValueError, "`f` returned dtype torch.float32"),
    ],
)
def test_bad_arguments_are_named_before_any_step(kwargs, exc, message):
    """Issue 12: these were raw errors, a max_steps of 2.5 ran 3 steps, and a NaN in
    `t_eval` looped forever."""
    args = dict(f=linear, t_span=(0.0, 1.0))
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        solve_adaptive(args.pop("f"), X0, args.pop("t_span"), **args)
