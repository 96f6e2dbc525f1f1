"""LTE against the linear theory, alignment trends, and `stiffkit.analyze`."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
import torchdiffeq
from hypothesis import given
from hypothesis import strategies as st

import stiffkit
from stiffkit import analyze, local_truncation_error, rk_step, solve_fixed
from stiffkit.analysis.columns import COLUMNS
from stiffkit.estimators.lte import alignment, eigen_coefficients, reference_step
from stiffkit.problems import symmetric_linear

F64 = torch.float64


def alpha(z):
    """docs/theory/embedded_pairs.md, eq. (10): α(z) = (1 − z + z²/2 − e^{−z}) / z."""
    return (1 - z + z**2 / 2 - np.exp(-z)) / z


@st.composite
def forced_symmetric(draw):
    n = draw(st.integers(2, 4))
    lam = draw(st.lists(st.floats(-30.0, -0.2), min_size=n, max_size=n))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    prob = symmetric_linear(np.array(lam), c=rng.standard_normal(n), seed=seed)
    x = torch.tensor(rng.standard_normal((2, n)), dtype=F64)
    h = draw(st.floats(0.005, 0.1))
    return prob, x, h


@given(forced_symmetric())
def test_heun_lte_equals_linear_theory(system):
    """σ decreasing (step −h): LTE_Heun = −h Σ_k α(z_k) ⟨f, v_k⟩ v_k, z_k = hλ_k."""
    prob, x, h = system
    step = rk_step(prob.f, 0.0, x, -h, "heun_euler")
    lte = prob.exact(0.0, -h, x) - step.x
    lam, V = np.asarray(prob.eigenvalues), np.asarray(prob.eigenvectors)
    f = prob.f(0.0, x).numpy()
    expected = -h * ((f @ V) * alpha(h * lam)) @ V.T
    scale = np.abs(f).max() * h * (1 + h * np.abs(lam).max()) ** 3
    np.testing.assert_allclose(lte.numpy(), expected, rtol=0, atol=1e-10 * scale + 1e-14)
    # The library's LTE with a converged dopri5 reference agrees.
    res = local_truncation_error(prob.f, 0.0, x, -h, "heun_euler", reference="dopri5")
    np.testing.assert_allclose(res.lte.numpy(), expected, rtol=0, atol=1e-9 * scale + 1e-11)


def _augmented(prob):
    # x' = A x + c is linear autonomous in (x, 1): exact LTEs via the augmented matrix.
    n = prob.dim
    M = np.zeros((n + 1, n + 1))
    M[:n, :n], M[:n, n] = prob.A, prob.c
    return M, n


def test_exact_reference_with_forcing_matches_exact_solution():
    prob = symmetric_linear(np.array([-5.0, -0.5]), c=np.array([1.0, -2.0]), seed=2)
    x = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    M, n = _augmented(prob)
    xa = torch.cat([x, torch.ones(3, 1, dtype=F64)], dim=1)
    ref = reference_step(lambda t, y: y @ torch.tensor(M).T, 0.0, xa, 0.3, method="exact", matrix=M)
    torch.testing.assert_close(ref[:, :n], prob.exact(0.0, 0.3, x))
    # 64 RK4 substeps leave ~1e-9 of error on this problem; 256 put it far below atol.
    for method, kw in (("dopri5", {}), ("rk4", {"substeps": 256})):
        approx = reference_step(prob.f, 0.0, x, 0.3, method=method, **kw)
        torch.testing.assert_close(approx, prob.exact(0.0, 0.3, x), rtol=1e-8, atol=1e-9)


def test_alignment_grows_with_the_dominant_step():
    """cos(LTE, v₁) and cos(Δf, v₁) increase towards 1 as the dominant z grows."""
    x = torch.randn(256, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    h = 0.02
    cos_lte, cos_df = [], []
    for lam1 in (2.0, 10.0, 40.0, 100.0):
        prob = symmetric_linear(np.array([-lam1, -1.0, -0.5]), seed=5)
        M = np.asarray(prob.A)
        traj = solve_fixed(prob.f, x, torch.tensor([0.0, -h, -2 * h], dtype=F64), "heun_euler")
        df = analyze(traj, reference="dense", symmetric=True, lte_method="exact", matrix=M)
        first = df[df.step == 0]
        cos_lte.append(first.cos_lte_v1.median())
        cos_df.append(first.cos_df_v1.median())
    assert np.all(np.diff(cos_lte) > 0) and np.all(np.diff(cos_df) > 0)
    assert cos_lte[-1] > 0.99 and cos_df[-1] > 0.99


def test_analyze_reproduces_analytic_columns_on_linear_problem():
    lam = np.array([-50.0, -15.0, -3.0, -1.0])
    prob = symmetric_linear(lam, seed=7)
    x0 = torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
    grid = torch.linspace(0.0, 0.1, 6, dtype=F64)
    traj = solve_fixed(prob.f, x0, grid, "heun_euler")
    df = analyze(traj, reference="dense", symmetric=True, lte_method="exact", matrix=prob.A)
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert len(df) == 5 * 5
    # The last step has no f(x_N) (Heun is not FSAL): its estimate is left empty, not faked.
    assert df[df.step == 4].rho_hat.isna().all() and df[df.step < 4].rho_hat.notna().all()
    np.testing.assert_allclose(df.lambda_max, 50.0, rtol=1e-12)
    np.testing.assert_allclose(df.lambda_real, -50.0, rtol=1e-12)
    np.testing.assert_allclose(df.h_lambda, 50.0 * 0.02, rtol=1e-12)
    assert df.rho_hat.dropna().between(1.0 - 1e-9, 50.0 + 1e-9).all()
    # The LTE column equals the analytic formula at every step (forward step h > 0:
    # LTE = h Σ β(z_k)⟨f, v_k⟩ v_k with β(z) = (e^z − 1 − z − z²/2)/z).
    V = np.asarray(prob.eigenvectors)
    for n in range(5):
        x = traj.states[n].numpy()
        f = x @ prob.A.T
        z = 0.02 * lam
        beta = (np.exp(z) - 1 - z - z**2 / 2) / z
        expected = np.linalg.norm(0.02 * ((f @ V) * beta) @ V.T, axis=1)
        np.testing.assert_allclose(df[df.step == n].lte_norm, expected, rtol=1e-9)
    # The estimate is cheap: the reference agrees with the power-iteration path.
    df_power = analyze(traj, reference="power", lte=False)
    np.testing.assert_allclose(df_power.lambda_max, 50.0, rtol=1e-6)
    assert df.attrs["reference"] == "dense" and df.attrs["stability_boundary"] == pytest.approx(2.0)


def test_analyze_on_torchdiffeq_output_and_subsets():
    prob = symmetric_linear(np.array([-20.0, -1.0]), seed=1)
    x0 = torch.randn(3, 2, dtype=F64)
    t = torch.linspace(0, 0.5, 6, dtype=F64)
    ys = torchdiffeq.odeint(prob.f, x0, t, method="rk4", options=dict(step_size=0.01))
    # Each saved interval is ten rk4 substeps, not one step of a tableau: no `tableau`.
    traj = stiffkit.Trajectory.from_states(t, ys, prob.f)
    df = analyze(traj, steps=[0, 2], samples=[1])
    assert len(df) == 2 and set(df.step) == {0, 2} and set(df["sample"]) == {1}
    assert df.rho_hat.isna().all()  # no pair data in plain torchdiffeq output
    np.testing.assert_allclose(df.lambda_max, 20.0, rtol=1e-10)
    # Ten rk4 substeps of h·|λ| = 0.2 per output interval: error ≈ 10·0.2⁵/120 ≈ 3e-5.
    assert (df.lte_norm < 1e-4).all()


def test_analyze_carries_diagnostics_and_plots():
    import matplotlib.pyplot as plt

    prob = symmetric_linear(np.array([-30.0, -2.0]), seed=4)
    x0 = torch.randn(8, 2, dtype=F64)
    traj = solve_fixed(prob.f, x0, torch.linspace(0, 0.3, 11, dtype=F64), "rk4")
    df = analyze(traj, reference="dense", symmetric=True, progress=False)
    ax = stiffkit.plotting.plot_stiffness(df)
    assert ax.get_yscale() == "log"
    ax2 = stiffkit.plotting.plot_estimate_vs_reference(df)
    assert "correlation" in ax2.get_title()
    plt.close("all")


def test_eigen_coefficients_and_alignment():
    v = torch.tensor([[3.0, 4.0]], dtype=F64)
    E = torch.eye(2, dtype=F64)[None]
    torch.testing.assert_close(eigen_coefficients(v, E), torch.tensor([[3.0, 4.0]], dtype=F64))
    al = alignment(torch.tensor([[0.0, -1.0]], dtype=F64), lte=v)
    torch.testing.assert_close(al["lte"], torch.tensor([0.8], dtype=F64))
    with pytest.raises(ValueError, match="`eigenvectors`"):
        eigen_coefficients(v, torch.eye(3, dtype=F64)[None])
    with pytest.raises(ValueError, match="`dx`"):
        alignment(torch.zeros(1, 2), dx=torch.zeros(1, 3))


def test_analyze_bad_input():
    prob = symmetric_linear(np.array([-2.0, -1.0]), seed=0)
    traj = solve_fixed(prob.f, torch.randn(2, 2, dtype=F64), torch.linspace(0, 1, 3), "heun_euler")
    with pytest.raises(TypeError, match="`trajectory`"):
        analyze("not a trajectory")
    with pytest.raises(ValueError, match="`reference`"):
        analyze(traj, reference="magic")
    with pytest.raises(ValueError, match="`steps`"):
        analyze(traj, steps=[5])
    no_f = stiffkit.Trajectory.from_states(traj.times, traj.states)
    with pytest.raises(ValueError, match="no `f`"):
        analyze(no_f)
    with pytest.raises(ValueError, match="`h` must be nonzero"):
        reference_step(prob.f, 0.0, traj.states[0], 0.0)
    with pytest.raises(ValueError, match="`method`"):
        reference_step(prob.f, 0.0, traj.states[0], 0.1, method="euler")


# ------------------------------------------------------------- stability boundaries
@pytest.mark.parametrize("how", ["fixed", "adaptive"])
def test_analyze_takes_the_boundary_from_the_solvers_tableau(how):
    from stiffkit.integrate import solve_adaptive
    from stiffkit.tableaux import real_stability_interval

    prob = symmetric_linear(np.array([-30.0, -2.0]), seed=2)
    x0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    if how == "fixed":
        traj = solve_fixed(prob.f, x0, torch.linspace(0, 0.2, 6, dtype=F64), "rk4")
        want = real_stability_interval("rk4")
    else:
        traj = solve_adaptive(prob.f, x0, (0.0, 0.5), "dopri5", rtol=1e-6, atol=1e-8).trajectory
        want = real_stability_interval("dopri5")
    df = analyze(traj, reference="dense", symmetric=True, lte=False)
    assert df.attrs["stability_boundary"] == pytest.approx(want, rel=1e-15)
    assert df.attrs["tableau"] == traj.tableau.name
    assert np.isfinite(df["stability_boundary"]).all()
    np.testing.assert_allclose(df["stability_boundary"], want, rtol=1e-15)
    ok = df["rho_hat"].notna()
    assert ok.any()
    np.testing.assert_allclose(df.loc[ok, "stiffness_indicator"],
                               df.loc[ok, "h_rho"] / want, rtol=1e-15)


def test_analyze_refuses_a_pair_without_a_boundary():
    prob = symmetric_linear(np.array([-2.0, -1.0]), seed=0)
    traj = solve_fixed(prob.f, torch.randn(2, 2, dtype=F64), torch.linspace(0, 1, 3), "heun_euler")
    bare = stiffkit.Trajectory(times=traj.times, states=traj.states, drifts=traj.drifts,
                               pair_states=traj.pair_states, pair_drifts=traj.pair_drifts,
                               f=traj.f)
    with pytest.raises(ValueError, match="no stability boundary"):
        analyze(bare, reference=None, lte=False)
    # Without pair data there is no indicator to form: the boundary is marked unknown.
    plain = stiffkit.Trajectory.from_states(traj.times, traj.states, prob.f)
    df = analyze(plain, reference=None, lte=False)
    assert df.attrs["stability_boundary"] is None and df.attrs["tableau"] is None
    assert df["rho_hat"].isna().all() and df["stability_boundary"].isna().all()
    # Per-step boundaries of the trajectory win over the tableau's.
    own = stiffkit.Trajectory(times=traj.times, states=traj.states, drifts=traj.drifts,
                              pair_states=traj.pair_states, pair_drifts=traj.pair_drifts,
                              f=traj.f, tableau=traj.tableau,
                              stability_boundaries=torch.tensor([1.0, 4.0], dtype=F64))
    df = analyze(own, reference=None, lte=False)
    np.testing.assert_array_equal(df.attrs["stability_boundary"], [1.0, 4.0])
    np.testing.assert_array_equal(df.groupby("step")["stability_boundary"].first(), [1.0, 4.0])


def test_unconverged_power_iteration_is_flagged_not_reported():
    # x' = A x with a dominant complex pair ±10i: power iteration cannot converge.
    from stiffkit.problems import complex_pair_linear

    prob = complex_pair_linear([10j], real=[-1.0])
    x0 = torch.randn(3, prob.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    traj = solve_fixed(prob.f, x0, torch.linspace(0.0, 0.05, 3, dtype=torch.float64), "heun_euler")
    power = analyze(traj, reference="power", lte=False)
    assert not power["reference_converged"].any()
    assert power["lambda_max"].isna().all() and power["h_lambda"].isna().all()
    dense = analyze(traj, reference="dense", lte=False)
    assert dense["reference_converged"].all()
    np.testing.assert_allclose(dense["lambda_max"], 10.0, rtol=1e-10)


@pytest.mark.parametrize("solver", ["heun", "dpm2"])
def test_analyze_sampler_output_never_evaluates_below_the_grid(solver):
    # Regression (issue 12, defect 7): the dopri5 LTE reference used to step past the last
    # level σ = 0.002, evaluating the mixture at a negative σ, and analyze crashed.
    from stiffkit.diffusion import edm_sigmas, ring_gmm, sample

    x0 = 5.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    frame = analyze(sample(ring_gmm(), x0, edm_sigmas(6, 0.002, 5), solver=solver))
    assert len(frame) == 6 * 64
    into_zero = frame["step"] == 5  # the final step to σ = 0 has no ODE reference: NaN
    assert np.isfinite(frame.loc[~into_zero, "lte_norm"]).all()
    assert frame.loc[into_zero, "lte_norm"].isna().all()


def _small_trajectory():
    A = torch.tensor([[-3.0, 0.0], [0.0, -1.0]], dtype=F64)
    return solve_fixed(lambda t, x: x @ A.T, torch.ones(3, 2, dtype=F64),
                       torch.linspace(0, 1, 5, dtype=F64), "rk4")


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(steps=[1.5]), ValueError, "`steps` must be a non-negative integer"),
        (dict(steps="ab"), TypeError, "`steps` must be an iterable of indices"),
        (dict(steps=2), TypeError, "`steps` must be an iterable of indices"),
        (dict(samples=[10]), ValueError, r"`samples` must lie in \[-3, 3\)"),
        (dict(samples=[0.5]), ValueError, "`samples` must be an integer >= -3"),
        (dict(samples="a"), TypeError, "`samples` must be a slice"),
        (dict(samples=[]), ValueError, "`samples` selects no sample"),
        (dict(samples=[True, False]), ValueError, "`samples` as a mask must have 3 entries"),
        (dict(stiff_threshold=float("nan")), ValueError, "`stiff_threshold` must be a finite"),
        (dict(stiff_threshold=0.0), ValueError, "`stiff_threshold` must be a finite number > 0"),
        (dict(stiff_threshold="a"), ValueError, "`stiff_threshold` must be a real number"),
        (dict(lte_method="bad"), ValueError, "`lte_method` must be 'dopri5', 'rk4' or 'exact'"),
        (dict(reference="power", generator=3), TypeError, "`generator` must be a torch.Generator"),
    ],
)
def test_bad_arguments_are_named_before_any_work(kwargs, exc, message):
    """Issue 12: steps=[1.5] ran step 1, a NaN threshold made every step non-stiff, bad
    samples were numpy IndexErrors, `lte_method` was reported as `method`."""
    with pytest.raises(exc, match=message):
        analyze(_small_trajectory(), **kwargs)


def test_sample_selections_that_worked_still_work():
    traj = _small_trajectory()
    for samples, want in [(-1, [2]), ([0, -1], [0, 2]), (slice(1, None), [1, 2]),
                          ([True, False, True], [0, 2]), (np.array([1]), [1])]:
        df = analyze(traj, samples=samples, reference=None, lte=False)
        assert sorted(set(df["sample"])) == want


@pytest.mark.parametrize("reference", ["dense", "power", "arpack", None])
def test_drift_with_trainable_parameters(reference):
    """A neural ODE in training: its parameters require grad, so every tensor `analyze` derives
    from the drift does; the table must come out as for the frozen drift (it raised before)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x0 = torch.randn(4, 3)
    t = torch.linspace(0.0, 1.0, 6)
    live = stiffkit.solve_fixed(lambda s, x: net(x), x0, t, "heun_euler")
    got = stiffkit.analyze(live, reference=reference, generator=torch.Generator().manual_seed(1))
    for p in net.parameters():
        p.requires_grad_(False)
    frozen = stiffkit.solve_fixed(lambda s, x: net(x), x0, t, "heun_euler")
    want = stiffkit.analyze(frozen, reference=reference,
                            generator=torch.Generator().manual_seed(1))
    pd.testing.assert_frame_equal(got, want)
    assert got["lte_norm"].notna().all()
