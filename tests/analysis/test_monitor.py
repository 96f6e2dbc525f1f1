"""The torchdiffeq stiffness monitor: transparency, stage identification, Hairer's estimate,
the DOPRI5 stiffness flag on classic problems, and its report formats."""

import warnings

import numpy as np
import pytest
import torch
import torchdiffeq

import stiffkit
from stiffkit import analyze, hairer_stiffness, rk_step
from stiffkit.analysis.columns import COLUMNS
from stiffkit.analysis.monitor import StiffnessMonitor, odeint_monitored
from stiffkit.integrate import RKStep
from stiffkit.integrate.rule import DOPRI8_THRESHOLD, StiffnessRule
from stiffkit.problems import (
    LinearProblem,
    complex_pair_linear,
    robertson,
    symmetric_linear,
    symmetric_with_gap,
    van_der_pol,
)

F64, F32 = torch.float64, torch.float32
LAMBDA = 1000.0
#: Stiff symmetric test system: |λ₁| = 1000, all other |λ| ≤ 1.
STIFF = symmetric_with_gap(6, LAMBDA, 0.001, seed=1)
#: Its mirror image (λ₁ = +1000), stiff and stable when integrated backwards in time.
STIFF_BACKWARD = symmetric_with_gap(6, LAMBDA, 0.001, seed=1, sign=1)
VDP_MU = 1000.0


def randn(*shape, dtype=F64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


class Counted(torch.nn.Module):
    """A drift that counts its evaluations and torchdiffeq's accepted/rejected steps."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.evals = self.accepted = self.rejected = 0

    def forward(self, t, x):
        self.evals += 1
        return self.f(t, x)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


def solve_both(f, x0, t, **kwargs):
    """Solve with a bare function and under a monitor.

    Returns both solutions, the bare run's evaluation count, the monitored drift (which
    counts evaluations and, through the monitor, torchdiffeq's steps) and the monitor.
    """
    calls = []

    def bare(t, x):  # no callbacks at all: torchdiffeq's plain path
        calls.append(None)
        return f(t, x)

    ys_plain = torchdiffeq.odeint(bare, x0, t, **kwargs)
    watched = Counted(f)
    mon = StiffnessMonitor(watched, method=kwargs.get("method", "dopri5"))
    ys = torchdiffeq.odeint(mon, x0, t, **kwargs)
    return ys_plain, ys, len(calls), watched, mon


# ------------------------------------------------------------------ transparency
CASES = {
    "stiff_linear": (STIFF.f, 6, (0.0, 0.12)),
    "stiff_linear_backward": (STIFF_BACKWARD.f, 6, (0.12, 0.0)),
    "van_der_pol": (van_der_pol(VDP_MU).f, 2, (0.0, 0.02)),
    "harmonic": (complex_pair_linear([1j]).f, 2, (0.0, 3.0)),
}


@pytest.mark.parametrize("method", ["dopri5", "dopri8"])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("case", list(CASES))
def test_solution_bitwise_and_evaluations_unchanged(case, dtype, method):
    f, dim, span = CASES[case]
    if case == "van_der_pol":
        x0 = torch.tensor([[2.0, 0.0]], dtype=dtype)
    else:
        x0 = randn(3, dim, dtype=dtype)
    t = torch.linspace(*span, 5, dtype=dtype)
    ys_plain, ys, plain_evals, watched, mon = solve_both(f, x0, t, method=method, rtol=1e-6,
                                                         atol=1e-8)
    assert torch.equal(ys, ys_plain)
    assert watched.evals == plain_evals == mon.nfe
    # f's own callbacks are chained, and count the same steps as the monitor.
    assert (mon.num_steps, mon.num_rejected) == (watched.accepted, watched.rejected)
    assert mon.num_steps > 0
    df = mon.frame()
    assert len(df) == mon.num_steps * x0.shape[0]
    # ρ̂ is a number wherever the stage pair is resolved, NaN (flagged) only where not —
    # which float64 never needs here (float32's stiff components decay to roundoff).
    resolved = df.pair_resolved.to_numpy(dtype=bool)
    assert np.isfinite(df.rho_hat[resolved]).all() and (df.rho_hat[resolved] >= 0).all()
    assert df.rho_hat[~resolved].isna().all()
    if dtype == F64:
        assert resolved.all()


@pytest.mark.parametrize(
    "options",
    [
        {"first_step": 1e-4},  # no initial-step probe
        {"jump_t": torch.tensor([0.07, 0.13], dtype=F64)},  # re-evaluates f after the jump
        {"step_t": torch.tensor([0.1], dtype=F64)},
        {"max_step": 2e-3},
    ],
    ids=["first_step", "jump_t", "step_t", "max_step"],
)
def test_solver_options_keep_transparency_and_stage_one(options):
    x0 = randn(2, 6)
    t = torch.tensor([0.0, 0.2], dtype=F64)
    ys_plain, ys, plain_evals, watched, mon = solve_both(STIFF.f, x0, t, rtol=1e-6, atol=1e-8,
                                                         options=options)
    assert torch.equal(ys, ys_plain)
    assert mon.nfe == watched.evals == plain_evals
    assert mon.num_steps == watched.accepted
    # Every step's stage 1 is f at its start (after a jump_t: the re-evaluated one).
    traj = mon.trajectory()
    starts = traj.states[:-1].reshape(-1, 6)
    expected = STIFF.f(0.0, starts).reshape(traj.drifts.shape)
    torch.testing.assert_close(traj.drifts, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------- stage identification
@pytest.mark.parametrize(
    "method, prob, span",
    [
        ("dopri5", STIFF, (0.0, 0.3)),
        ("dopri5", STIFF_BACKWARD, (0.3, 0.0)),
        ("dopri8", STIFF, (0.0, 0.3)),
    ],
    ids=["dopri5", "dopri5_backward", "dopri8"],
)
def test_recorded_stages_are_rk_step_stages(method, prob, span):
    x0 = randn(3, 6)
    t = torch.tensor(span, dtype=F64)
    _, mon = odeint_monitored(prob.f, x0, t, method=method, rtol=1e-6, atol=1e-8, keep="stages")
    traj, rho = mon.trajectory(), mon.frame().rho_hat.to_numpy().reshape(mon.num_steps, 3)
    tab = mon.tableau
    assert traj.stage_g.shape == (mon.num_steps, tab.num_stages, 3, 6)
    assert (np.sign(traj.steps.numpy()) == np.sign(span[1] - span[0])).all()
    for n in range(0, mon.num_steps, 7):
        t_n, h_n = traj.times[n], traj.times[n + 1] - traj.times[n]
        step = rk_step(prob.f, t_n, traj.states[n], h_n, tab)
        scale = float(traj.states[n].abs().max())
        torch.testing.assert_close(torch.stack(step.g), traj.stage_g[n], rtol=0, atol=1e-13 * scale)
        torch.testing.assert_close(torch.stack(step.k), traj.stage_k[n], rtol=0,
                                   atol=1e-13 * scale * LAMBDA)
        # ρ̂ is hairer_stiffness of the recorded step, bit for bit ...
        recorded = RKStep(traj.stage_g[n, -1], None, None, tuple(traj.stage_k[n]),
                          tuple(traj.stage_g[n]), t_n, h_n, tab.num_stages - 1)
        assert np.array_equal(hairer_stiffness(recorded, tab).numpy(), rho[n])
        # ... and of stiffkit's own step from the same (t, x, h), up to rounding.
        np.testing.assert_allclose(hairer_stiffness(step, tab).numpy(), rho[n], rtol=1e-6)


# ------------------------------------------------------------------ Hairer's estimate
@pytest.mark.parametrize(
    "prob, max_error",
    [
        (STIFF, 0.01),
        (LinearProblem(np.diag([-LAMBDA, -1.0, -0.5, -0.2])), 0.01),
        # |λ₂| = 10: the slow modes' share of Δg is larger (measured max 0.92 %, median 0.11 %).
        (symmetric_with_gap(6, LAMBDA, 0.01, seed=2), 0.02),
    ],
    ids=["gap_1e-3", "diagonal", "gap_1e-2"],
)
def test_hairer_estimate_is_lambda_max_once_stability_limited(prob, max_error):
    x0 = randn(1, prob.dim, seed=3)
    _, mon = odeint_monitored(prob.f, x0, torch.tensor([0.0, 0.6], dtype=F64), rtol=1e-5, atol=1e-7)
    df = mon.frame()
    limited = (df.t > 0.05) & (df.h * LAMBDA >= 3.0)  # h|λ₁| near the boundary 3.31
    assert limited.sum() > 100
    rel = (df.rho_hat[limited] / LAMBDA - 1).abs()
    assert rel.max() <= max_error and rel.median() <= 0.005
    # A Rayleigh quotient of J² (docs/theory/proposition1.md, eq. (3)): never above |λ₁|.
    assert (df.rho_hat <= LAMBDA * (1 + 1e-9)).all()
    # h oscillates about the boundary (half the tests positive), yet the count only grows.
    onset = mon.stiff_onset.item()
    assert onset < 0.2 and df.stiff[df.t >= onset].all()


def test_batched_estimate_bounded_and_per_sample():
    x0 = randn(4, 6, seed=4)
    t = torch.tensor([0.0, 0.6], dtype=F64)
    _, mon = odeint_monitored(STIFF.f, x0, t, rtol=1e-5, atol=1e-7)
    df = mon.frame()
    assert (df.rho_hat <= LAMBDA * (1 + 1e-9)).all()
    late = df[df.t > 0.2]
    assert (late.groupby("sample").rho_hat.median() / LAMBDA - 1).abs().max() < 0.01
    onset = mon.stiff_onset
    assert onset.shape == (4,) and onset.dtype == F64 and torch.isfinite(onset).all()


# -------------------------------------------------------------- classic problems
@pytest.fixture(scope="module")
def vdp_run():
    """Van der Pol, μ = 1000, from the slow manifold at x₁ = 1.11 through one jump."""
    x1 = 1.11
    x0 = torch.tensor([[x1, x1 / (VDP_MU * (1 - x1**2))]], dtype=F64)  # x₂ on the manifold
    prob = van_der_pol(VDP_MU)
    t = torch.tensor([0.0, 12.1], dtype=F64)
    _, mon = odeint_monitored(prob.f, x0, t, rtol=1e-6, atol=1e-8)
    df, traj = mon.frame(), mon.trajectory()
    start, end = traj.states[:-1, 0].numpy(), traj.states[1:, 0].numpy()
    # Jump: |x₂| = |dx₁/dt| is O(μ) there and O(1/μ) on the slow branches.
    jump = (np.abs(start[:, 1]) > 1) | (np.abs(end[:, 1]) > 1)
    stiff_part = VDP_MU * np.abs(1 - start[:, 0] ** 2)  # |∂f₂/∂x₂|, the stiff eigenvalue there
    slow = (np.abs(start[:, 1]) < 0.01) & (stiff_part > 100)
    return mon, df, jump, slow, stiff_part


def test_van_der_pol_flags_slow_branch_not_jump(vdp_run):
    mon, df, jump, slow, stiff_part = vdp_run
    ind, stiff = df.stiffness_indicator.to_numpy(), df.stiff.to_numpy()
    jump_steps = np.flatnonzero(jump)
    assert len(jump_steps) > 20 and np.all(np.diff(jump_steps) == 1)  # exactly one jump
    t_jump, t_landed = df.t[jump_steps[0]], df.t_next[jump_steps[-1]]
    pre = slow & (df.t < t_jump).to_numpy()
    post = slow & (df.t > t_landed).to_numpy()
    assert pre.sum() > 200 and post.sum() > 50
    # Resolved jump: accuracy-limited steps, the flag stays off.
    assert not stiff[jump].any()
    assert np.median(ind[jump]) < 0.25 and (ind[jump] < 1).mean() >= 0.9
    # Slow branches: stability-limited (indicator ≈ 1), ρ̂ ≈ the stiff eigenvalue, flagged.
    for branch in (pre, post):
        assert 0.85 <= np.median(ind[branch]) <= 1.15
        assert abs(np.median(df.rho_hat[branch] / stiff_part[branch]) - 1) < 0.05
        assert stiff[branch].mean() > 0.6
    assert mon.stiff_onset.item() < t_jump
    assert df.stiff[df.t > t_landed].any()  # fires again after landing


def test_robertson_is_flagged():
    prob = robertson()
    x0 = torch.tensor(np.array([prob.x0]), dtype=F64)
    _, mon = odeint_monitored(prob.f, x0, torch.tensor([0.0, 0.3], dtype=F64), rtol=1e-6, atol=1e-8)
    df, traj = mon.frame(), mon.trajectory()
    onset = mon.stiff_onset.item()
    assert 0 < onset < 0.1
    late = (df.t > 0.1).to_numpy()
    assert df.stiff[late].all()
    lam = np.array([np.abs(np.linalg.eigvals(prob.jac(0.0, x))).max()
                    for x in traj.states[1:, 0].numpy()])
    np.testing.assert_allclose(df.rho_hat[late], lam[late], rtol=0.1)


@pytest.mark.parametrize(
    "prob, T",
    [(complex_pair_linear([1j]), 20.0), (symmetric_linear([-1.0, -2.0, -5.0]), 10.0)],
    ids=["harmonic_oscillator", "mildly_damped"],
)
def test_non_stiff_problems_stay_quiet(prob, T):
    _, mon = odeint_monitored(prob.f, randn(4, prob.dim), torch.tensor([0.0, T], dtype=F64),
                              rtol=1e-6, atol=1e-8)
    df = mon.frame()
    assert df.stiffness_indicator.max() < 0.5
    assert (df.iasti == 0).all() and not df.stiff.any()
    assert torch.isnan(mon.stiff_onset).all()


# ------------------------------------------------------- the rule, as the monitor runs it
def test_custom_rule_is_used():
    x0 = randn(1, 6)
    t = torch.tensor([0.0, 0.2], dtype=F64)
    tol = {"rtol": 1e-5, "atol": 1e-7}
    _, default = odeint_monitored(STIFF.f, x0, t, **tol)
    _, strict = odeint_monitored(STIFF.f, x0, t, **tol, rule=StiffnessRule(count=10_000))
    _, loose = odeint_monitored(STIFF.f, x0, t, **tol, rule=StiffnessRule(threshold=1.0, count=3))
    assert torch.isnan(strict.stiff_onset).all()
    assert loose.stiff_onset.item() < default.stiff_onset.item()
    assert StiffnessMonitor(STIFF.f, method="dopri8").rule.threshold == DOPRI8_THRESHOLD


# ------------------------------------------------------------------ reports
def test_analyze_reproduces_monitor_rho():
    x0 = randn(3, 6, seed=5)
    t = torch.tensor([0.0, 0.3], dtype=F64)
    _, mon = odeint_monitored(STIFF.f, x0, t, rtol=1e-6, atol=1e-8)
    df, traj = mon.frame(), mon.trajectory()
    steps = list(range(0, mon.num_steps, 10))
    ref = analyze(traj, reference="dense", steps=steps)
    ours = df[df.step.isin(steps)].reset_index(drop=True)
    assert list(df.columns[: len(COLUMNS)]) == list(ref.columns[: len(COLUMNS)]) == list(COLUMNS)
    for col in ("step", "sample", "t", "rho_hat", "t_next"):
        np.testing.assert_array_equal(ref[col].to_numpy(), ours[col].to_numpy(), err_msg=col)
    # analyze takes h = |t_next − t|, the monitor torchdiffeq's dt: equal up to rounding.
    for col in ("h", "h_rho", "stiffness_indicator"):
        np.testing.assert_allclose(ref[col].to_numpy(), ours[col].to_numpy(), rtol=1e-12,
                                   err_msg=col)
    np.testing.assert_allclose(ref.lambda_max, LAMBDA, rtol=1e-9)
    reference_columns = list(COLUMNS)[list(COLUMNS).index("lambda_max"):]
    assert df[reference_columns].isna().all().all()  # no reference in the monitor's frame
    assert df.attrs["stability_boundary"] == pytest.approx(3.3066, abs=1e-4)
    assert df.attrs["nfe"] == mon.nfe and traj.nfe == mon.nfe


@pytest.mark.parametrize(("method", "boundary"), [("dopri5", 3.3066), ("dopri8", 5.1666)])
def test_analyze_on_monitor_trajectory_has_a_finite_stability_boundary(method, boundary):
    # The trajectory carries the method's registered tableau, so analyze divides h·ρ̂ by
    # the real boundary (an unregistered name would give a silent NaN indicator).
    x0 = randn(2, 6, seed=6)
    _, mon = odeint_monitored(STIFF.f, x0, torch.tensor([0.0, 0.3], dtype=F64), method=method,
                              rtol=1e-6, atol=1e-8)
    ref = analyze(mon.trajectory(), reference=None, lte=False)
    assert ref.attrs["stability_boundary"] == pytest.approx(boundary, abs=1e-4)
    assert ref.attrs["stability_boundary"] == mon.stability_boundary
    assert np.isfinite(ref.stiffness_indicator).all() and len(ref) == 2 * mon.num_steps
    df = mon.frame()
    np.testing.assert_allclose(ref.stiffness_indicator, df.stiffness_indicator, rtol=1e-12)


def test_trajectory_layout():
    x0 = randn(2, 6)
    t = torch.tensor([0.0, 0.1, 0.2], dtype=F64)
    _, mon = odeint_monitored(STIFF.f, x0, t, rtol=1e-6, atol=1e-8)
    traj, N = mon.trajectory(), mon.num_steps
    assert traj.states.shape == (N + 1, 2, 6) and traj.times.dtype == F64
    assert traj.pair_states.shape == traj.pair_drifts.shape == (N, 2, 6)
    assert traj.stage_g is None and traj.tableau is stiffkit.get_tableau("dopri5_shampine")
    assert torch.equal(traj.states[0], x0)
    assert traj.times[0] == 0 and traj.times[-1] >= 0.2  # the last internal step may pass t[-1]
    torch.testing.assert_close(traj.final_drift, STIFF.f(0.0, traj.states[-1]))
    # A new solve replaces the record, even from the same initial state.
    torchdiffeq.odeint(mon, x0, torch.tensor([0.0, 0.05], dtype=F64), rtol=1e-6, atol=1e-8)
    assert 0 < mon.num_steps < N and mon.trajectory().num_steps == mon.num_steps
    torchdiffeq.odeint(mon, x0[:1], torch.tensor([0.0, 0.05], dtype=F64), rtol=1e-6, atol=1e-8)
    assert mon.trajectory().batch_size == 1


def test_unbatched_state_is_a_batch_of_one():
    x0 = randn(6)
    t = torch.tensor([0.0, 0.3], dtype=F64)
    A = torch.tensor(STIFF.A)
    ys1, mon1 = odeint_monitored(lambda t, x: A @ x, x0, t, rtol=1e-6, atol=1e-8, batched=False)
    ys2, mon2 = odeint_monitored(STIFF.f, x0[None], t, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ys1, ys2[:, 0])
    df1, df2 = mon1.frame(), mon2.frame()
    assert len(df1) == len(df2) == mon1.num_steps
    np.testing.assert_allclose(df1.rho_hat, df2.rho_hat, rtol=1e-10)
    traj = mon1.trajectory()
    assert traj.states.shape == (mon1.num_steps + 1, 1, 6) and mon1.stiff_onset.shape == (1,)
    ref = analyze(traj, reference="dense", lte=False, steps=[0, 5])
    np.testing.assert_allclose(ref.lambda_max, LAMBDA, rtol=1e-9)


def test_keep_scalars_records_no_states():
    _, mon = odeint_monitored(STIFF.f, randn(2, 6), torch.tensor([0.0, 0.2], dtype=F64),
                              rtol=1e-6, atol=1e-8, keep="scalars")
    assert len(mon.frame()) == 2 * mon.num_steps
    assert not mon._record.states
    with pytest.raises(ValueError, match="`trajectory` needs the states"):
        mon.trajectory()


def test_odeint_adjoint_gradients_unchanged():
    with torch.random.fork_rng():  # the layers' initialisation must not touch others' RNG
        torch.manual_seed(0)
        layers = (torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        net = torch.nn.Sequential(*layers).double()

    class Drift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, x):
            return self.net(x)

    x0, t = randn(4, 3), torch.tensor([0.0, 1.0], dtype=F64)
    grads = []
    for func in (Drift(), StiffnessMonitor(Drift())):
        net.zero_grad()
        torchdiffeq.odeint_adjoint(func, x0, t, rtol=1e-7, atol=1e-9)[-1].square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    assert func.num_steps > 0 and len(func.frame()) == 4 * func.num_steps  # record kept


# ------------------------------------------------------------------ bad input
def test_bad_input_raises():
    f = STIFF.f
    with pytest.raises(ValueError, match="`method` 'bosh3' is not supported"):
        StiffnessMonitor(f, method="bosh3")
    for method in ("fehlberg2", "adaptive_heun", "rk4", "dop853"):
        with pytest.raises(ValueError, match="`method`"):
            StiffnessMonitor(f, method=method)
    with pytest.raises(TypeError, match="`method`"):
        StiffnessMonitor(f, method=5)
    with pytest.raises(TypeError, match="`f`"):
        StiffnessMonitor("not a function")
    with pytest.raises(ValueError, match="`keep`"):
        StiffnessMonitor(f, keep="everything")
    with pytest.raises(TypeError, match="`rule`"):
        StiffnessMonitor(f, rule=3.25)
    with pytest.raises(ValueError, match="`eps`"):
        StiffnessMonitor(f, eps=-1.0)


def test_misuse_raises():
    x0, t = randn(2, 6), torch.tensor([0.0, 0.1], dtype=F64)
    mon = StiffnessMonitor(STIFF.f)
    for read in (mon.frame, mon.trajectory, lambda: mon.stiff_onset):
        with pytest.raises(ValueError, match="needs a recorded solve"):
            read()
    with pytest.raises(ValueError, match="`f` must return a tensor of the state's shape"):
        torchdiffeq.odeint(StiffnessMonitor(lambda t, x: x.sum(1)), x0, t)
    with pytest.raises(ValueError, match="built for `method`='dopri5'"):
        torchdiffeq.odeint(StiffnessMonitor(STIFF.f), x0, t, method="bosh3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchdiffeq: "Solver 'rk4' does not support callbacks"
        with pytest.raises(ValueError, match="does not report accepted and rejected steps"):
            torchdiffeq.odeint(StiffnessMonitor(STIFF.f), x0, t, method="rk4",
                               options={"step_size": 0.01})
    with pytest.raises(TypeError, match="tuple states"):
        torchdiffeq.odeint(StiffnessMonitor(lambda t, x: x), (x0, x0), t)
    with pytest.raises(ValueError, match="batched=False"):
        torchdiffeq.odeint(StiffnessMonitor(lambda t, x: -x), torch.tensor(1.0, dtype=F64), t)
