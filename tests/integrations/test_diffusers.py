"""diffusers: the ERK-Guid Heun scheduler against stiffkit's sampler, and VP UNets as denoisers.

Every model is a tiny randomly initialised ``UNet2DModel`` (3×8×8, two blocks, one with
attention) built here; no weights are downloaded. The scheduler's loop and
:func:`stiffkit.diffusion.sample` on :func:`edm_denoiser` run the same operations in float32,
so they must agree bit for bit, with and without ERK-Guid.
"""

import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from stiffkit import analyze  # noqa: E402
from stiffkit.diffusion import edm_sigmas, pf_ode_drift, sample, sample_final  # noqa: E402
from stiffkit.estimators import dominant_eig, jacobian_dense, jvp_operator  # noqa: E402
from stiffkit.estimators.spectrum import sorted_eig  # noqa: E402
from stiffkit.integrations.diffusers import (  # noqa: E402
    EDMERKHeunScheduler,
    denoiser_from_diffusers,
    edm_denoiser,
)

SHAPE = (3, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny convolutions: intra-op threads only contend on a loaded 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _Counted:
    """``F(x, t)`` of the UNet, counting calls."""

    def __init__(self, net):
        self.net, self.calls = net, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.net(x, t).sample


def _noise(batch=2, seed=1):
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _diffusers_loop(scheduler, model, noise):
    x = scheduler.init_noise_sigma * noise
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x).prev_sample
    return x


# ---------------------------------------------------------------- configuration and grid
def test_grid_timesteps_and_layout():
    sch = EDMERKHeunScheduler(sigma_min=0.01, sigma_max=20.0, rho=5.0)
    sch.set_timesteps(5)
    grid = edm_sigmas(5, 0.01, 20.0, 5.0)
    assert torch.equal(sch.sigma_grid, grid)
    s = grid.tolist()
    assert sch.sigmas.tolist() == [s[0], s[1], s[1], s[2], s[2], s[3], s[3], s[4], s[4], 0.0]
    assert sch.timesteps.dtype == torch.float32 and len(sch.timesteps) == 2 * 5 - 1
    want = 0.25 * torch.log(sch.sigmas[:-1].float())
    torch.testing.assert_close(sch.timesteps, want, rtol=0, atol=1e-6)
    assert sch.init_noise_sigma == 20.0 and sch.order == 2 and sch.state_in_first_order
    assert sch.index_for_timestep(sch.timesteps[0]) == 0
    assert sch.index_for_timestep(sch.timesteps[1]) == 2  # repeated: the second (diffusers)
    sch.set_timesteps(sigmas=[3.0, 1.0, 0.5])  # no final 0: every step is Heun, 2M calls
    assert sch.sigmas.tolist() == [3.0, 1.0, 1.0, 0.5, 0.5] and len(sch.timesteps) == 4


@pytest.mark.parametrize("prediction_type, sign", [("epsilon", 1.0), ("v_prediction", -1.0)])
def test_preconditioning(prediction_type, sign):
    sd, sigma = 0.7, torch.tensor(1.3, dtype=torch.float64)
    sch = EDMERKHeunScheduler(sigma_data=sd, prediction_type=prediction_type)
    ones = torch.ones(1, *SHAPE, dtype=torch.float64)
    var = 1.3**2 + sd**2
    c_in = sch.precondition_inputs(ones, sigma)
    c_skip = sch.precondition_outputs(ones, torch.zeros_like(ones), sigma)
    c_out = sch.precondition_outputs(torch.zeros_like(ones), ones, sigma)
    for got, want in ((c_in, 1 / math.sqrt(var)), (c_skip, sd**2 / var),
                      (c_out, sign * 1.3 * sd / math.sqrt(var))):
        torch.testing.assert_close(got, torch.full_like(ones, want), rtol=1e-14, atol=0)
    assert float(sch.precondition_noise(sigma)) == pytest.approx(0.25 * math.log(1.3))


def test_save_pretrained_round_trip(tmp_path):
    sch = EDMERKHeunScheduler(sigma_min=0.01, sigma_max=40.0, sigma_data=0.6, rho=6.0,
                              prediction_type="v_prediction", w_stiff=0.3, w_con=1.5)
    sch.save_pretrained(tmp_path)
    back = EDMERKHeunScheduler.from_pretrained(tmp_path)
    keys = ("sigma_min", "sigma_max", "sigma_data", "rho", "prediction_type", "w_stiff",
            "w_con", "erk_eps")
    assert {k: back.config[k] for k in keys} == {k: sch.config[k] for k in keys}
    sch.set_timesteps(7), back.set_timesteps(7)
    assert torch.equal(sch.sigmas, back.sigmas) and torch.equal(sch.timesteps, back.timesteps)
    assert back._erk == sch._erk


@pytest.mark.parametrize("kwargs, name", [
    (dict(sigma_min=0.0), "sigma_min"), (dict(sigma_min=90.0), "sigma_min"),
    (dict(sigma_data=-1.0), "sigma_data"), (dict(rho=0.0), "rho"),
    (dict(prediction_type="sample"), "prediction_type"), (dict(w_stiff=-0.1), "w_stiff"),
    (dict(erk_eps=0.0), "erk_eps"),
])
def test_bad_configuration_names_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EDMERKHeunScheduler(**kwargs)


def test_bad_calls():
    sch = EDMERKHeunScheduler()
    with pytest.raises(ValueError, match="num_inference_steps"):
        sch.set_timesteps()
    with pytest.raises(ValueError, match="sigmas"):
        sch.set_timesteps(sigmas=[1.0, 2.0])
    sch.set_timesteps(1)
    x = torch.zeros(1, *SHAPE)
    with pytest.raises(ValueError, match="timestep"):
        sch.step(x, 123.0, x)


# ---------------------------------------------------------------- the loop against sample()
@pytest.mark.parametrize("w_stiff, w_con", [(0.0, 0.0), (0.5, 0.0), (0.5, 0.4)])
def test_loop_equals_stiffkit_sample(unet, w_stiff, w_con):
    n = 4
    sch = EDMERKHeunScheduler(sigma_max=10.0, w_stiff=w_stiff, w_con=w_con)
    sch.set_timesteps(n)
    model, noise = _Counted(unet), _noise()
    with torch.no_grad():
        x = _diffusers_loop(sch, model, noise)
        loop_calls, model.calls = model.calls, 0
        traj = sample(edm_denoiser(model, sch), sch.sigma_grid[0].float() * noise,
                      sch.sigma_grid, w_stiff=w_stiff, w_con=w_con)
    assert loop_calls == model.calls == traj.nfe == 2 * n - 1
    assert torch.equal(x, traj.states[-1])  # bit for bit: the same operations, same order
    with torch.no_grad():  # and the throughput path, which skips the diagnostics
        final, _ = sample_final(edm_denoiser(model, sch), sch.sigma_grid[0].float() * noise,
                                sch.sigma_grid, w_stiff=w_stiff, w_con=w_con)
    assert torch.equal(x, final)
    if w_stiff > 0:  # and ERK-Guid did act
        with torch.no_grad():
            plain = sample(edm_denoiser(model, sch), sch.sigma_grid[0].float() * noise,
                           sch.sigma_grid)
        assert not torch.equal(x, plain.states[-1])
        assert sch.erk_rho is not None and sch.erk_rho.shape == (2,)


def test_heun_grid_without_zero_and_reset():
    # A cheap (x, t) model; a grid without a final 0 makes every step Heun (2M calls).
    weight = torch.linspace(-1.0, 1.0, math.prod(SHAPE)).reshape(1, *SHAPE)

    def model(x, t):
        return torch.tanh(weight * x + t) - 0.3 * x

    sch = EDMERKHeunScheduler(w_stiff=0.6, erk_eps=1e-8)
    grid = [5.0, 2.0, 0.8, 0.3, 0.1]
    sch.set_timesteps(sigmas=grid)
    noise = _noise(3, seed=4)
    first = _diffusers_loop(sch, model, noise)
    sch.set_timesteps(sigmas=grid)  # resets the ERK-Guid state
    again = _diffusers_loop(sch, model, noise)
    traj = sample(edm_denoiser(model, sch), 5.0 * noise, grid, w_stiff=0.6, eps=1e-8)
    assert torch.equal(first, again) and torch.equal(first, traj.states[-1])
    assert traj.nfe == 2 * (len(grid) - 1)


# ---------------------------------------------------------------- VP UNets as denoisers
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_vp_denoiser_recovers_x0_from_exact_prediction(prediction_type):
    # A model that knows x0 and ε returns the exact target: D must give x0 back, and see t.
    ddpm = diffusers.DDPMScheduler(prediction_type=prediction_type)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, *SHAPE, generator=g), torch.randn(2, *SHAPE, generator=g)
    k = torch.tensor([37, 700])
    x_t = ddpm.add_noise(x0, eps, k)
    target = {"epsilon": eps, "sample": x0,
              "v_prediction": ddpm.get_velocity(x0, eps, k)}[prediction_type]
    seen = {}

    def oracle(x_in, t):
        seen["t"], seen["x_in"] = t, x_in
        return target

    den = denoiser_from_diffusers(oracle, ddpm)
    abar = ddpm.alphas_cumprod[k]
    sigma = ((1 - abar) / abar).sqrt()
    x = x_t / abar.sqrt().reshape(-1, 1, 1, 1)  # the EDM state x0 + σ ε
    torch.testing.assert_close(den(x, sigma), x0, rtol=0, atol=2e-5)
    torch.testing.assert_close(seen["t"], k.float(), rtol=0, atol=1e-3)
    torch.testing.assert_close(seen["x_in"], x_t, rtol=0, atol=1e-5)


def test_sigma_t_interpolation():
    den = denoiser_from_diffusers(lambda x, t: x, diffusers.DDIMScheduler())
    t = torch.tensor([0.0, 0.25, 10.5, 998.9, 999.0], dtype=torch.float64)
    torch.testing.assert_close(den.sigma_to_t(den.t_to_sigma(t)), t, rtol=0, atol=1e-9)
    assert float(den.sigma_to_t(torch.tensor(1e4))) == 999.0  # clamped to the schedule
    assert den.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-4)


def test_vp_denoiser_bad_scheduler():
    with pytest.raises(ValueError, match="alphas_cumprod"):
        denoiser_from_diffusers(lambda x, t: x, EDMERKHeunScheduler())
    zero_snr = diffusers.DDPMScheduler(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        denoiser_from_diffusers(lambda x, t: x, zero_snr)


class _StiffUNet(torch.nn.Module):
    """The UNet's ε plus a strong linear mode ``a ⟨u, x⟩ u``.

    A randomly initialised UNet's dominant Jacobian eigenvalues are complex pairs, where
    power iteration cannot converge (by design); the added mode gives a real, well
    separated dominant eigenvalue near ``c_in · a`` while every product still runs through
    the UNet and its attention.
    """

    def __init__(self, net, a=20.0):
        super().__init__()
        self.net, self.a = net, a
        u = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(9))
        self.register_buffer("u", u / u.norm())

    def forward(self, x, t):
        coef = (x * self.u).flatten(1).sum(1).reshape(-1, 1, 1, 1)
        return self.net(x, t).sample + self.a * coef * self.u


def test_power_iteration_agrees_with_dense_jacobian(unet):
    den = denoiser_from_diffusers(_StiffUNet(unet), diffusers.DDPMScheduler())
    drift = pf_ode_drift(den)
    sigma = torch.tensor(1.0)
    x = math.sqrt(2.0) * _noise(1, seed=5)
    op = jvp_operator(drift, sigma, x)
    op(torch.ones_like(x))
    assert op.method == "vjp"  # forward mode fails through the attention block, falls back
    jac = jacobian_dense(drift, sigma, x)  # [1, 192, 192]
    assert jac.shape == (1, 192, 192)
    values, _ = sorted_eig(jac.double())
    assert abs(values[0, 0].imag) < 1e-6 and abs(values[0, 0]) > 2 * abs(values[0, 1])
    eig = dominant_eig(drift, sigma, x, method="power", tol=1e-5, max_iter=100)
    assert bool(eig.converged.all())
    assert float(eig.value[0]) == pytest.approx(float(values[0, 0].real), rel=1e-4)


def test_analyze_runs_on_a_sampled_trajectory(unet):
    den = denoiser_from_diffusers(_StiffUNet(unet), diffusers.DDPMScheduler())
    grid = edm_sigmas(3, sigma_min=den.sigma_min, sigma_max=20.0)
    traj = sample(den, 20.0 * _noise(1, seed=6), grid, w_stiff=0.3)
    assert traj.nfe == 5 and bool(torch.isfinite(traj.states[-1]).all())
    report = analyze(traj, reference="power", lte=False, steps=[1])
    assert len(report) == 1
    row = report.iloc[0]
    assert math.isfinite(row["lambda_max"]) and math.isfinite(row["rho_hat"])
