"""Tests for the diffusion samplers, ERK-Guid and guidance, against analytic truth first.

Truth: an independent plain EDM Heun loop (bitwise), the exact flow of a single Gaussian
(``x(σ) = μ + (x₀ − μ)·√((s² + σ²)/(s² + σ₀²))`` per eigendirection), constant linear drifts
``f = Jx`` whose Heun LTE is known in closed form (DESIGN.md §4), and polynomials that DEIS
must integrate exactly.
"""

import math

import numpy as np
import pytest
import torch

import stiffkit
from stiffkit.diffusion.erk import W_STIFF_THEORY, erk_guid_correction, mixture_oracle
from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.mixtures import GaussianMixture, random_gmm
from stiffkit.diffusion.noise import initial_noise, mixture_samples, randn_per_sample
from stiffkit.diffusion.samplers import (
    deis_coefficients,
    reference_sample,
    sample,
    sample_final,
)
from stiffkit.diffusion.schedules import edm_sigmas

F64 = torch.float64


class Counting:
    """A denoiser wrapper that counts its calls (the samplers' NFE)."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.denoiser(x, sigma)


def linear_denoiser(J: torch.Tensor):
    """``D(x; σ) = x − σ J x``, so the probability-flow drift is exactly ``f = J x``."""

    def denoiser(x, sigma):
        return x - sigma * (x @ J.T)

    return denoiser


def single_gaussian(mean=(0.3, -0.2), stds=(0.5, 0.05), angle=0.4) -> GaussianMixture:
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=F64)
    cov = rot @ torch.diag(torch.tensor(stds, dtype=F64) ** 2) @ rot.T
    return GaussianMixture(torch.ones(1), torch.tensor([mean], dtype=F64), cov[None])


def exact_single_gaussian_flow(gmm: GaussianMixture, x0, sigma0, sigma1):
    """The exact probability-flow map of one Gaussian from σ₀ to σ₁."""
    e, U = torch.linalg.eigh(gmm.covs[0])
    scale = torch.sqrt((e + sigma1**2) / (e + sigma0**2))  # per eigendirection
    mu = gmm.means[0]
    return mu + ((x0 - mu) @ U * scale) @ U.T


def plain_heun(denoiser, x, sigmas):
    """EDM's Heun sampler written out independently (EDM2 `edm_sampler`, no churn)."""
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        d_cur = (x - denoiser(x, t_cur)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if t_next > 0:
            d_prime = (x_next - denoiser(x_next, t_next)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


def small_tree_like(seed: int) -> GaussianMixture:
    """A cheap multimodal, anisotropic 2-D mixture (the 1016-component mix is ~30× slower)."""
    return random_gmm(2, 32, seed=seed, min_std=0.02, condition=25.0, mean_std=0.5)


@pytest.fixture(scope="module")
def mix():
    return small_tree_like(0)


# ----------------------------------------------------------------------------- grid
@pytest.mark.parametrize("n", [1, 2, 8, 33])
def test_edm_sigmas_formula(n):
    s = edm_sigmas(n, 0.002, 5.0, 7.0)
    assert s.shape == (n + 1,) and float(s[-1]) == 0.0 and float(s[0]) == pytest.approx(5.0)
    if n > 1:
        assert float(s[-2]) == pytest.approx(0.002)
        i = np.arange(n)
        want = (5.0 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 5.0 ** (1 / 7))) ** 7
        np.testing.assert_allclose(s[:-1].numpy(), want, rtol=1e-14)
    assert bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_steps=0), dict(num_steps=2.5), dict(num_steps=4, sigma_min=0.0),
     dict(num_steps=4, sigma_min=1.0, sigma_max=0.5), dict(num_steps=4, rho=float("nan"))],
)
def test_edm_sigmas_bad_input(kwargs):
    with pytest.raises(ValueError):
        edm_sigmas(**kwargs)


# --------------------------------------------------------------- plain Heun identity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_w_stiff_is_plain_heun_bit_for_bit(mix, dtype):
    sig = edm_sigmas(8, 0.002, 5.0)
    x0 = mixture_samples(mix, 64, 5.0, dtype=dtype)
    want = plain_heun(mix, x0, sig.to(dtype))
    for w_con in (0.0, 0.5):
        got = sample(mix, x0, sig, w_stiff=0.0, w_con=w_con).states[-1]
        assert torch.equal(got, want)
    got_final, _ = sample_final(mix, x0, sig)
    assert torch.equal(got_final, want)


@pytest.mark.parametrize("solver,expected", [("heun", "2N-1"), ("dpm2", "2N-1"), ("euler", "N"), ("deis", "N")])
def test_nfe_and_zero_extra_evaluations(mix, solver, expected):
    N = 6
    sig = edm_sigmas(N, 0.002, 5.0)
    x0 = mixture_samples(mix, 16, 5.0, dtype=F64)
    want = 2 * N - 1 if expected == "2N-1" else N
    settings = [dict()] if solver == "euler" else [dict(), dict(w_stiff=1.0, w_con=0.1)]
    for kw in settings:
        den = Counting(mix)
        traj = sample(den, x0, sig, solver=solver, **kw)
        assert den.calls == traj.nfe == want


def test_guided_erk_guid_adds_no_network_call(mix):
    guide = small_tree_like(1)
    sig = edm_sigmas(8, 0.002, 5.0)
    x0 = mixture_samples(mix, 16, 5.0, dtype=F64)
    counts = []
    for w_stiff in (0.0, 1.0):
        g = Guided(mix, guide, w=2.0)
        sample(g, x0, sig, w_stiff=w_stiff, w_con=0.5)
        counts.append(dict(g.num_calls))
    assert counts[0] == counts[1] == {"denoiser": 15, "guide": 15}


# ------------------------------------------------------------- convergence, linear
def _linear_errors(solver, Ns):
    gmm = single_gaussian()
    x0 = randn_per_sample(8, (2,), dtype=F64) * 2.0
    errs = []
    for N in Ns:
        sig = edm_sigmas(N, 0.05, 2.0)[:-1]  # stop at σ_min: no final Euler step
        x = sample(gmm, x0, sig, solver=solver).states[-1]
        exact = exact_single_gaussian_flow(gmm, x0, 2.0, 0.05)
        errs.append(float((x - exact).norm(dim=1).max()))
    return np.array(errs)


@pytest.mark.parametrize("solver,order", [("heun", 2), ("dpm2", 2), ("euler", 1), ("deis", 3)])
def test_convergence_order_on_single_gaussian(solver, order):
    Ns = np.array([16, 32, 64, 128])
    errs = _linear_errors(solver, Ns)
    slope = -np.polyfit(np.log(Ns), np.log(errs), 1)[0]
    if solver == "deis":  # variable-step multistep: at least its order minus the start-up
        assert slope > order - 0.5, (slope, errs)
    else:
        assert abs(slope - order) < 0.3, (slope, errs)


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


def test_reference_sample_is_converged_on_single_gaussian():
    gmm = single_gaussian()
    x0 = randn_per_sample(16, (2,), dtype=F64) * 2.0
    sig = edm_sigmas(8, 0.01, 2.0)
    exact = gmm.denoise(exact_single_gaussian_flow(gmm, x0, 2.0, 0.01), 0.01)
    for method in ("rk4", "dopri5"):
        ref = reference_sample(gmm, x0, sig, method=method)
        assert float((ref - exact).norm(dim=1).max()) < 1e-6


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
        alpha = 1 - z + z**2 / 2 - math.exp(-z)  # DESIGN.md: LTE = -alpha(z)·x ... times z/z
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
    """The Heun pair at σ_i is the previous Euler point: Δf = J Δx exactly (DESIGN.md §3)."""
    J = torch.tensor([[5.0, 1.0], [1.0, 0.5]], dtype=F64)
    x0 = torch.tensor([[1.0, -2.0], [0.3, 0.7]], dtype=F64)
    sig = torch.tensor([1.2, 1.1, 1.0, 0.9], dtype=F64)
    traj = sample(linear_denoiser(J), x0, sig)
    for n in range(2):
        dx = traj.states[n + 1] - traj.pair_states[n]
        df = traj.drifts[n + 1] - traj.pair_drifts[n]
        torch.testing.assert_close(df, dx @ J.T, rtol=1e-12, atol=1e-14)
        want = stiffkit.pair_stiffness(traj.states[n + 1], traj.drifts[n + 1],
                                       traj.pair_states[n], traj.pair_drifts[n])
        torch.testing.assert_close(traj.diagnostics["erk_rho"][n + 1], want, rtol=0, atol=0)
    assert torch.isnan(traj.diagnostics["erk_rho"][0]).all()


def test_correction_formula_matches_design():
    g = torch.Generator().manual_seed(0)
    f, dx, df = (torch.randn(4, 3, 2, generator=g, dtype=F64) for _ in range(3))
    h, w, w_con = 0.3, 0.8, 0.5
    c = erk_guid_correction(f, h, w_stiff=w, w_con=w_con, dx=dx, df=df)
    rho = df.flatten(1).norm(dim=1) / (dx.flatten(1).norm(dim=1) + 1e-8)
    v = df / (df.flatten(1).norm(dim=1) + 1e-8)[:, None, None]
    beta = (rho > w_con).double()
    want = -h * beta[:, None, None] * (w * h * rho[:, None, None]) ** 2 * (v * f).sum((1, 2), keepdim=True) * v
    torch.testing.assert_close(c.delta, want, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(c.rho, rho)
    torch.testing.assert_close(c.delta_norm, want.flatten(1).norm(dim=1), rtol=1e-13, atol=1e-15)
    # Given ρ and a unit v (the oracle's form), the same formula with v spelled out.
    u = df / df.flatten(1).norm(dim=1)[:, None, None]
    o = erk_guid_correction(f, h, w_stiff=w, w_con=w_con, rho=rho, v=u)
    want_o = -h * beta[:, None, None] * (w * h * rho[:, None, None]) ** 2 * (u * f).sum((1, 2), keepdim=True) * u
    torch.testing.assert_close(o.delta, want_o, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(o.delta_norm, want_o.flatten(1).norm(dim=1), rtol=1e-13, atol=1e-15)


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


# ------------------------------------------------------------ seeds and batches
def test_per_sample_seeds_make_samples_batch_independent(mix):
    sig = edm_sigmas(6, 0.002, 5.0)
    small = initial_noise(8, (2,), 5.0, dtype=F64)
    big = initial_noise(40, (2,), 5.0, dtype=F64)
    assert torch.equal(small, big[:8])
    assert torch.equal(mixture_samples(mix, 8, 5.0), mixture_samples(mix, 40, 5.0)[:8])
    assert torch.equal(initial_noise([3, 7], (2,), 5.0), initial_noise(8, (2,), 5.0)[[3, 7]])
    xs = sample(mix, small, sig, w_stiff=1.0, w_con=0.2).states[-1]
    xb = sample(mix, big, sig, w_stiff=1.0, w_con=0.2).states[-1]
    torch.testing.assert_close(xs, xb[:8], rtol=1e-12, atol=1e-12)
    again = sample(mix, small, sig, w_stiff=1.0, w_con=0.2).states[-1]
    assert torch.equal(xs, again)


def test_trajectory_feeds_analyze(mix):
    sig = edm_sigmas(6, 0.002, 5.0)
    x0 = mixture_samples(mix, 8, 5.0, dtype=F64)
    traj = sample(mix, x0, sig, w_stiff=0.5)
    assert traj.states.shape == (7, 8, 2) and torch.equal(traj.states[0], x0)
    assert traj.time_name == "sigma" and traj.tableau == "heun_euler"
    df = stiffkit.analyze(traj, reference="dense", symmetric=True, lte=False)
    assert len(df) == 6 * 8
    # analyze's rho_hat of step n (at σ_{n+1}) is the ρ̂ ERK-Guid used at step n + 1.
    rho = df.pivot(index="step", columns="sample", values="rho_hat").to_numpy()
    np.testing.assert_allclose(rho[:4], traj.diagnostics["erk_rho"][1:5].numpy(), rtol=1e-12)
    assert np.isfinite(df["lambda_max"]).all()
    assert set(df.columns) >= {"erk_rho", "erk_beta", "erk_correction_norm"}


def test_callback_sees_every_step(mix):
    seen = []
    sig = edm_sigmas(5, 0.002, 5.0)
    x0 = mixture_samples(mix, 4, 5.0, dtype=F64)
    traj = sample(mix, x0, sig, callback=lambda d: seen.append((d["i"], d["x_next"])))
    assert [i for i, _ in seen] == list(range(5))
    assert torch.equal(seen[-1][1], traj.states[-1])


# --------------------------------------------------------------------- guidance
def test_guidance_composition(mix):
    guide = small_tree_like(1)
    x = mixture_samples(mix, 16, 0.3, dtype=F64)
    d, dg = mix(x, 0.3), guide(x, 0.3)
    torch.testing.assert_close(Guided(mix, guide, 2.5)(x, 0.3), dg + 2.5 * (d - dg))
    off = Guided(mix, guide, 1.0)
    assert torch.equal(off(x, 0.3), d) and off.num_calls == {"denoiser": 1, "guide": 0}
    assert torch.equal(Guided(mix, guide, 0.0)(x, 0.3), dg)


def test_guidance_bad_input(mix):
    with pytest.raises(ValueError, match="`guide`"):
        Guided(mix, lambda x, s: x[:, :1], 2.0)(torch.zeros(3, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="`guide`"):
        Guided(mix, lambda x, s: mix(x, s).float(), 2.0)(torch.zeros(3, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="`w`"):
        Guided(mix, mix, float("inf"))
    with pytest.raises(TypeError, match="`guide`"):
        Guided(mix, "not a model", 2.0)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "sigmas,match",
    [([5.0], "at least 2"), ([5.0, 1.0, 2.0, 0.0], "decreasing"), ([5.0, 0.0, 0.0], "decreasing"),
     ([5.0, float("nan"), 0.0], "NaN"), ([5.0, -1.0], "positive"), ([[5.0, 1.0]], "1-D")],
)
def test_bad_grids(mix, sigmas, match):
    with pytest.raises(ValueError, match=match):
        sample(mix, torch.zeros(2, 2, dtype=F64), sigmas)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(solver="rk45"), "`solver`"), (dict(w_stiff=-1.0), "`w_stiff`"),
     (dict(w_stiff=float("nan")), "`w_stiff`"), (dict(solver="euler", w_stiff=1.0), "euler"),
     (dict(eps=0.0), "`eps`"), (dict(correction_sign=2), "`correction_sign`"),
     (dict(oracle="magic"), "`oracle`"), (dict(solver="deis", max_order=5), "`max_order`")],
)
def test_bad_sampler_arguments(mix, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(mix, torch.zeros(2, 2, dtype=F64), edm_sigmas(4, 0.002, 5.0), **kwargs)


def test_bad_states_and_denoisers(mix):
    sig = edm_sigmas(4, 0.002, 5.0)
    with pytest.raises(ValueError, match="`x_init`"):
        sample(mix, torch.tensor([[float("nan"), 0.0]], dtype=F64), sig)
    with pytest.raises(ValueError, match="`x_init`"):
        sample(mix, torch.zeros(3, dtype=F64), sig)
    with pytest.raises(ValueError, match="`denoiser`.*shape"):
        sample(lambda x, s: x[:, :1], torch.zeros(2, 2, dtype=F64), sig)
    with pytest.raises(ValueError, match="`denoiser`.*dtype"):
        sample(lambda x, s: x.float(), torch.zeros(2, 2, dtype=F64), sig)
    with pytest.raises(TypeError, match="`denoiser`"):
        sample(None, torch.zeros(2, 2, dtype=F64), sig)
