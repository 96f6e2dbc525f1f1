"""Tests for ``stiffkit.paper.alignment`` against a Gaussian with a closed-form flow.

Data ``N(μ, S)``, ``S = diag(s₁², s₂²)``: the denoiser is linear, ``D = μ + S(S + σ²)⁻¹(x − μ)``,
the drift ``f = σ (S + σ²)⁻¹ (x − μ)`` has the diagonal Jacobian ``λ_k = σ/(s_k² + σ²)``
(eigenvectors: the axes), and the probability-flow ODE is solved exactly by
``x_k(σ') − μ_k = √((s_k² + σ'²)/(s_k² + σ²)) (x_k(σ) − μ_k)``.
"""

import math

import numpy as np
import pytest
import torch

from stiffkit.diffusion.samplers import sample
from stiffkit.diffusion.schedules import edm_sigmas
from stiffkit.paper.alignment import (
    ALIGNMENT_COLUMNS,
    heun_alignment,
    sorted_eigh,
    toy_alignment,
)

MU = torch.tensor([0.3, -0.2], dtype=torch.float64)
S2 = torch.tensor([0.02**2, 0.4**2], dtype=torch.float64)  # thin axis 0: the stiff one


def denoiser(x, sigma):
    return MU + S2 / (S2 + sigma**2) * (x - MU)


def drift(sigma, x):
    return sigma / (S2 + sigma**2) * (x - MU)


def jacobian(sigma, x):
    return torch.diag_embed((sigma / (S2 + sigma**2)).expand(x.shape[0], 2))


def exact_flow(x, sigma, sigma_next):
    return MU + torch.sqrt((S2 + sigma_next**2) / (S2 + sigma**2)) * (x - MU)


def _cos_axis0(v):
    return (v[:, 0].abs() / v.norm(dim=1)).numpy()


@pytest.fixture(scope="module")
def trajectory():
    gen = torch.Generator().manual_seed(3)
    x0 = 2.0 * torch.randn(16, 2, dtype=torch.float64, generator=gen)
    return sample(denoiser, x0, edm_sigmas(10, 0.002, 2.0))


def test_matches_closed_form(trajectory):
    df = heun_alignment(trajectory, substeps=64)
    N, B = trajectory.num_steps, trajectory.batch_size
    assert list(df.columns) == list(ALIGNMENT_COLUMNS)
    assert sorted(df["step"].unique()) == list(range(1, N - 1)) and len(df) == B * (N - 2)
    assert df.attrs["jacobian"] == "jvp-dense"
    for i, part in df.groupby("step"):
        sig, sig_next = trajectory.times[i], trajectory.times[i + 1]
        lam = (sig / (S2 + sig**2)).numpy()
        np.testing.assert_allclose(part["lambda_1"], lam[0], rtol=1e-12)
        np.testing.assert_allclose(part["lambda_2"], lam[1], rtol=1e-12)
        np.testing.assert_allclose(part["h"], float(sig - sig_next), rtol=1e-15)
        # The pair: the previous step's Euler point, rebuilt independently.
        x_prev, sig_prev = trajectory.states[i - 1], trajectory.times[i - 1]
        x_e = x_prev - (sig_prev - sig) * drift(sig_prev, x_prev)
        x = trajectory.states[i]
        dx, df_ = x - x_e, drift(sig, x) - drift(sig, x_e)
        np.testing.assert_allclose(part["dx_norm"], dx.norm(dim=1).numpy(), rtol=1e-10)
        np.testing.assert_allclose(part["cos_dx_v1"], _cos_axis0(dx), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(part["cos_df_v1"], _cos_axis0(df_), rtol=1e-8, atol=1e-12)
        # LTE of the Heun step against the exact flow.
        h = sig_next - sig
        x_h = x + 0.5 * h * (drift(sig, x) + drift(sig_next, x + h * drift(sig, x)))
        lte = exact_flow(x, sig, sig_next) - x_h
        np.testing.assert_allclose(part["lte_norm"], lte.norm(dim=1).numpy(), rtol=1e-6)
        np.testing.assert_allclose(part["cos_lte_v1"], _cos_axis0(lte), rtol=1e-6, atol=1e-9)


def test_rho_hat_is_the_samplers_and_obeys_proposition_1(trajectory):
    df = heun_alignment(trajectory, lte=False)
    erk = trajectory.diagnostics["erk_rho"][1:-1].reshape(-1).numpy()
    np.testing.assert_allclose(df["rho_hat"], erk, rtol=1e-14)
    # Both pair points lie at σ_i and f is linear in x there: ρ̂ is a Rayleigh quotient of J².
    lam1 = df["lambda_max"].to_numpy()
    assert (df["rho_hat"] <= lam1 * (1 + 1e-9)).all()
    # The lower bound |λ₁|·cos(Δx, v₁) of Proposition 1, on the recorded norms.
    ratio = df["df_norm"] / df["dx_norm"]
    assert (ratio >= lam1 * df["cos_dx_v1"] * (1 - 1e-9)).all()
    # Δf = J Δx amplifies the v₁ component by λ₁/λ₂ > 1: it always aligns better than Δx.
    assert (df["cos_df_v1"] >= df["cos_dx_v1"] - 1e-12).all()
    assert df[["lte_norm", "cos_lte_v1"]].isna().all().all()


def test_closed_form_jacobian_and_directions(trajectory):
    dirs = {"axis": lambda s, x: torch.tensor([1.0, 0.0], dtype=x.dtype).expand_as(x),
            "diag": lambda s, x: torch.ones_like(x)}
    a = heun_alignment(trajectory, jacobian=jacobian, directions=dirs, lte=False)
    b = heun_alignment(trajectory, lte=False)
    assert a.attrs["jacobian"] == "closed-form"
    np.testing.assert_allclose(a["lambda_1"], b["lambda_1"], rtol=1e-12)
    np.testing.assert_allclose(a["cos_df_v1"], b["cos_df_v1"], rtol=1e-12)
    np.testing.assert_allclose(a["cos_axis_v1"], 1.0, rtol=1e-14)
    np.testing.assert_allclose(a["cos_diag_v1"], 1 / math.sqrt(2), rtol=1e-14)
    assert (a["asymmetry"] == 0).all()


def test_lte_is_of_the_plain_heun_step_even_with_erk_guid(trajectory):
    corrected = sample(denoiser, trajectory.states[0], trajectory.times, w_stiff=1.0)
    assert not torch.equal(corrected.states[-2], trajectory.states[-2])
    df = heun_alignment(corrected, substeps=64, steps=[3])
    x, sig, sig_next = corrected.states[3], corrected.times[3], corrected.times[4]
    h = sig_next - sig
    x_h = x + 0.5 * h * (drift(sig, x) + drift(sig_next, x + h * drift(sig, x)))
    lte = exact_flow(x, sig, sig_next) - x_h
    np.testing.assert_allclose(df["lte_norm"], lte.norm(dim=1).numpy(), rtol=1e-6)


def test_sorted_eigh_orders_by_modulus():
    jac = torch.tensor([[[1.0, 0.0], [0.0, -3.0]]], dtype=torch.float64)
    values, vectors, asym = sorted_eigh(jac)
    np.testing.assert_allclose(values[0].numpy(), [-3.0, 1.0])
    np.testing.assert_allclose(vectors[0, 0].abs().numpy(), [0.0, 1.0], atol=1e-15)
    assert float(asym[0]) == 0
    _, _, asym = sorted_eigh(torch.tensor([[[1.0, 1.0], [0.0, 1.0]]]))
    assert float(asym[0]) == pytest.approx(math.sqrt(2 / 3))
    with pytest.raises(ValueError, match="jac"):
        sorted_eigh(torch.ones(2, 3))


def test_rejects_bad_input(trajectory):
    euler = sample(denoiser, trajectory.states[0], trajectory.times, solver="euler")
    with pytest.raises(ValueError, match="pair"):
        heun_alignment(euler)
    with pytest.raises(ValueError, match="steps"):
        heun_alignment(trajectory, steps=[0])
    with pytest.raises(ValueError, match="steps"):
        heun_alignment(trajectory, steps=[trajectory.num_steps - 1])  # the final Euler step
    with pytest.raises(TypeError):
        heun_alignment("not a trajectory")


@pytest.fixture
def one_thread():
    # Tiny batched ops: intra-op threads only contend on a shared CPU (10× slower measured).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_toy_alignment_models_and_columns(one_thread):
    from stiffkit.paper.toy import toy_world

    world = toy_world(torch.float64)
    df = toy_alignment(world, [5, 9, 11], [4, 5], substeps=2)
    assert set(df["model"]) == {"learned", "exact"} and set(df["num_steps"]) == {4, 5}
    assert len(df) == 2 * 3 * ((4 - 2) + (5 - 2))
    assert set(df["seed"]) == {5, 9, 11}
    cos = [c for c in df.columns if c.startswith("cos_")]
    learned, exact = df[df.model == "learned"], df[df.model == "exact"]
    assert np.isfinite(learned[cos].to_numpy()).all()
    assert exact["cos_ag_v1"].isna().all() and np.isfinite(exact["cos_cfg_v1"]).all()
    assert ((df[cos].fillna(0) >= 0) & (df[cos].fillna(0) <= 1 + 1e-12)).all().all()
    assert (learned["asymmetry"] < 1e-10).all()  # the learned drift is a gradient field
    # The same seeds start both models at the same points.
    first = df[df.step == 1].groupby("model")["sigma"].first()
    assert first["learned"] == first["exact"]
    with pytest.raises(ValueError, match="models"):
        toy_alignment(world, [0], 4, models=["bogus"])


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(lte_method="bad"), ValueError, "`lte_method` must be 'dopri5', 'rk4' or 'exact'"),
        (dict(substeps=0), ValueError, "`substeps` must be a positive integer"),
        (dict(substeps=2.5), ValueError, "`substeps` must be a positive integer"),
        (dict(steps="a"), TypeError, "`steps` must be an iterable of step indices"),
        (dict(jacobian=3), TypeError, "`jacobian` must be callable"),
        (dict(jacobian=lambda s, x: torch.zeros(1, 3, 3, dtype=torch.float64)), ValueError,
         r"`jacobian` must return \[batch, n, n\] = \[16, 2, 2\]"),
        (dict(directions=[1]), TypeError, "`directions` must map names to callables"),
        (dict(directions={"a": 3}), TypeError, r"`directions\['a'\]` must be callable"),
    ],
)
def test_heun_alignment_names_bad_arguments(trajectory, kwargs, exc, message):
    """Issue 12: substeps 0 was reported as a bad grid `t`, the rest were raw errors."""
    with pytest.raises(exc, match=message):
        heun_alignment(trajectory, **kwargs)


@pytest.mark.parametrize(
    "args, kwargs, exc, message",
    [
        ((None, [0, 1], 4), {}, TypeError, "`world` must be a ToyWorld"),
        (("world", [], 4), {}, ValueError, "`seeds` must hold at least one seed"),
        (("world", 3, 4), {}, TypeError, "`seeds` must be a sequence of seeds"),
        (("world", [0.5], 4), {}, TypeError, "`seeds` must hold integers"),
        (("world", [0, 1], 2), {}, ValueError, "`num_steps` must be an integer >= 3"),
        (("world", [0, 1], []), {}, ValueError, "`num_steps` must hold at least one grid"),
        (("world", [0, 1], 2.5), {}, TypeError, "`num_steps` must be an int or a sequence"),
        (("world", [0, 1], 4), dict(models="exact"), TypeError, "`models` must be a sequence"),
        (("world", [0, 1], 4), dict(models=[]), ValueError, "`models` must be drawn from"),
    ],
)
def test_toy_alignment_names_bad_arguments(args, kwargs, exc, message):
    """Issue 12: models="exact" iterated its letters, num_steps=1 and empty lists failed deep
    inside pandas / numpy, a float seed was truncated."""
    from stiffkit.paper import toy_world

    world = toy_world(torch.float64) if args[0] == "world" else args[0]
    with pytest.raises(exc, match=message):
        toy_alignment(world, *args[1:], **kwargs)
