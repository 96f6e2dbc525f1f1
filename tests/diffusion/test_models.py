"""Tests for ``stiffkit.diffusion.models`` and ``stiffkit.diffusion.training``.

Truth comes from the exact mixture (``GaussianMixture.score`` on exact samples of ``p_σ``),
from autograd of ``log_prob``, and from finite differences of the drift; the shipped
weights are checked against the exact score, and training against itself (determinism)
and against the untrained model (the loss goes down).
"""

import dataclasses
import math

import pytest
import torch

import stiffkit
from stiffkit.diffusion import models, training
from stiffkit.diffusion.mixtures import tree_gmm
from stiffkit.diffusion.models import (
    PRETRAINED_NAMES,
    REGENERATE_COMMAND,
    EnergyDenoiser,
    load_model,
    load_pretrained,
    pretrained_path,
    save_model,
)
from stiffkit.diffusion.training import (
    PRETRAINED_RUNS,
    TrainConfig,
    denoiser_loss,
    ema_exponent,
    learning_rate,
    train,
)

F64 = torch.float64
#: Noise levels of the accuracy checks: the tips resolve (0.05), the branches (0.2), the
#: whole tree is one blob (1.0).
SIGMAS = (0.05, 0.2, 1.0)
#: Upper bounds on the main model's relative score error E‖s_θ − s*‖ / E‖s*‖ at SIGMAS,
#: about 2x the measured values (0.081, 0.035, 0.018 on 2048 exact samples, seed 0; seed 1
#: gives 0.085, 0.035, 0.019). The thin tips make σ = 0.01 hard (measured 0.35), so it is
#: not asserted.
MAIN_REL_ERR_MAX = {0.05: 0.15, 0.2: 0.07, 1.0: 0.04}
#: The CFG guide on its own target A∪B, same convention (measured 0.38, 0.22, 0.078).
CFG_OWN_REL_ERR_MAX = {0.05: 0.6, 0.2: 0.35, 1.0: 0.15}
#: The guides must be at least this many times worse than the main model on class A at
#: σ ≤ 0.2, in relative error and in σ²-weighted loss (measured: AG 4.5x in error and
#: 15x in loss, CFG 5x and 20x or more).
GUIDE_WORSE_FACTOR = 2.0
#: Reduced training budget for the tests.
QUICK = TrainConfig(iterations=24, batch_size=256)
N_EVAL = 2048


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tree_a():
    return tree_gmm("A")


@pytest.fixture(scope="module")
def tree_ab():
    return tree_gmm("AB")


@pytest.fixture(scope="module")
def pretrained():
    return {name: load_pretrained(name) for name in PRETRAINED_NAMES}


@pytest.fixture(scope="module")
def main64():
    """The main model with float64 parameters, for tight derivative identities."""
    return load_pretrained("main", dtype=F64)


@pytest.fixture(scope="module")
def exact(tree_a, tree_ab):
    """``(classes, σ) -> (x, s*)``: 2048 exact samples of ``p_σ`` and their exact score."""
    out = {}
    for classes, gmm in (("A", tree_a), ("AB", tree_ab)):
        for sigma in SIGMAS:
            x = gmm.sample(N_EVAL, sigma, generator=_gen(0))
            out[classes, sigma] = x, gmm.score(x, sigma)
    return out


def _score_errors(model, exact, classes: str, sigma: float) -> tuple[float, float]:
    """Return (E‖s_θ − s*‖ / E‖s*‖, E σ²‖s_θ − s*‖²) on exact samples of ``p_σ``."""
    x, score = exact[classes, sigma]
    err = model.score(x.float(), sigma).to(F64) - score
    rel = float(err.norm(dim=1).mean() / score.norm(dim=1).mean())
    return rel, float(sigma**2 * err.square().sum(dim=1).mean())


# ---------------------------------------------------------------------- shipped weights
def test_shipped_files_are_small_and_carry_metadata(pretrained):
    for name, model in pretrained.items():
        assert pretrained_path(name).stat().st_size < 1_000_000
        config, iteration = PRETRAINED_RUNS[name]
        meta = model.metadata
        assert meta["name"] == name and meta["iteration"] == iteration
        assert meta["train_config"] == config.as_dict() and meta["seed"] == config.seed
        assert meta["torch_version"] and math.isfinite(meta["final_loss"])
        assert model.width == config.width and model.depth == config.depth
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())


def test_shipped_main_model_matches_exact_score(pretrained, exact):
    for sigma in SIGMAS:
        rel, _ = _score_errors(pretrained["main"], exact, "A", sigma)
        assert rel < MAIN_REL_ERR_MAX[sigma], (sigma, rel)


def test_shipped_cfg_guide_learned_the_union(pretrained, exact):
    for sigma in SIGMAS:
        rel, _ = _score_errors(pretrained["cfg_guide"], exact, "AB", sigma)
        assert rel < CFG_OWN_REL_ERR_MAX[sigma], (sigma, rel)


@pytest.mark.parametrize("guide", ["ag_guide", "cfg_guide"])
def test_guides_are_worse_than_main(pretrained, exact, guide):
    for sigma in (0.05, 0.2):
        main_rel, main_loss = _score_errors(pretrained["main"], exact, "A", sigma)
        guide_rel, guide_loss = _score_errors(pretrained[guide], exact, "A", sigma)
        assert guide_rel > GUIDE_WORSE_FACTOR * main_rel, (sigma, guide_rel, main_rel)
        assert guide_loss > GUIDE_WORSE_FACTOR * main_loss, (sigma, guide_loss, main_loss)


# ---------------------------------------------------------------------- denoiser identities
def test_denoiser_score_drift_identities(main64):
    x = 0.6 * torch.randn(64, 2, dtype=F64, generator=_gen(1))
    sigma = torch.exp(torch.linspace(-6, 2, 64, dtype=F64))  # 0.0025 .. 7.4, per sample
    score = main64.score(x, sigma)
    denoised = main64(x, sigma)
    torch.testing.assert_close(denoised, x + sigma[:, None] ** 2 * score, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(main64.drift(x, sigma), (x - denoised) / sigma[:, None],
                               rtol=1e-9, atol=1e-9)
    # The score is the gradient of log_prob (autograd as the independent route).
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(main64.log_prob(xr, sigma).sum(), xr)
    torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-10)


def test_scalar_and_per_sample_sigma_agree(pretrained):
    model = pretrained["main"]
    x = torch.randn(8, 2, generator=_gen(2))
    for sigma in (0.3, torch.tensor(0.3)):
        torch.testing.assert_close(model(x, sigma), model(x, torch.full((8,), 0.3)))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_shape_dtype_and_no_grad(pretrained, dtype):
    model = pretrained["ag_guide"]
    x = torch.randn(5, 2, generator=_gen(3)).to(dtype)
    with torch.no_grad():
        outs = [model(x, 0.1), model.score(x, 0.1), model.drift(x, 0.1)]
        energy = model.log_prob(x, 0.1)
    for out in outs:
        assert out.shape == x.shape and out.dtype == dtype and not out.requires_grad
    assert energy.shape == (5,) and energy.dtype == dtype
    torch.testing.assert_close(outs[0], model(x, 0.1))  # same values with grad enabled
    assert not model(x, 0.1).requires_grad  # frozen model, plain x: no graph attached


def test_gradients_flow_when_the_caller_asks(pretrained):
    model = pretrained["main"]
    x = torch.randn(4, 2, generator=_gen(4)).requires_grad_(True)
    model(x, 0.2).sum().backward()
    # d/dx_i of sum_j D_j(x_i) = J_iᵀ 1, with J the denoiser's Jacobian at sample i.
    jac = stiffkit.jacobian_dense(lambda s, y: model(y, s), 0.2, x.detach(), jvp_method="vjp")
    torch.testing.assert_close(x.grad, jac.sum(dim=1), rtol=1e-5, atol=1e-6)


def test_jvp_paths_agree_with_finite_differences_and_are_symmetric(main64):
    x = 0.5 * torch.randn(6, 2, dtype=F64, generator=_gen(5))
    sigma = torch.tensor([0.01, 0.03, 0.1, 0.3, 1.0, 3.0], dtype=F64)

    def f(s, y):
        return main64.drift(y, s)

    jac_fwd = stiffkit.jacobian_dense(f, sigma, x, jvp_method="forward")
    jac_vjp = stiffkit.jacobian_dense(f, sigma, x, jvp_method="vjp")
    jac_fd = stiffkit.jacobian_dense(f, sigma, x, jvp_method="fd")
    scale = jac_fwd.abs().amax(dim=(1, 2), keepdim=True)
    assert bool(((jac_fwd - jac_vjp).abs() <= 1e-12 * scale).all())
    assert bool(((jac_fwd - jac_fd).abs() <= 1e-6 * scale).all())
    assert bool(((jac_fwd - jac_fwd.mT).abs() <= 1e-12 * scale).all())
    # One forward-mode product equals the dense Jacobian applied to v.
    v = torch.randn(6, 2, dtype=F64, generator=_gen(6))
    op = stiffkit.jvp_operator(f, sigma, x, method="forward")
    torch.testing.assert_close(op(v), (jac_fwd @ v[:, :, None])[:, :, 0])
    assert op.method == "forward"


def test_forward_mode_works_on_the_float32_model(pretrained):
    x = torch.randn(3, 2, generator=_gen(7))
    op = stiffkit.jvp_operator(lambda s, y: pretrained["main"].drift(y, s), 0.1, x,
                               method="auto")
    jv = op(torch.ones_like(x))
    assert op.method == "forward" and jv.dtype == torch.float32
    vjp = stiffkit.jvp_operator(lambda s, y: pretrained["main"].drift(y, s), 0.1, x,
                                method="vjp")
    torch.testing.assert_close(jv, vjp(torch.ones_like(x)), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- training
def test_exact_score_helper_matches_the_mixture(tree_ab):
    gen = _gen(8)
    sigma = torch.exp(torch.linspace(math.log(1e-3), math.log(10.0), 300, dtype=F64))
    x = tree_ab.sample(300, sigma, generator=gen)
    fast = training._ExactScore(tree_ab)(x, sigma)
    torch.testing.assert_close(fast, tree_ab.score(x, sigma), rtol=1e-10, atol=1e-10)


def test_training_is_deterministic_and_reduces_the_loss(tree_a):
    rng_state = torch.random.get_rng_state()
    first = train(QUICK, snapshots=(8, QUICK.iterations), progress=False)
    second = train(QUICK, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(first.losses, second.losses, rtol=0, atol=0)
    assert set(first.snapshots) == {8, QUICK.iterations}
    for a, b in zip(first.snapshots[QUICK.iterations].state_dict().values(),
                    first.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.snapshots[8].gain, first.model.gain)
    # Nothing depends on the run length: a snapshot is the end of a shorter run (this is
    # how the guides are made, from 512-iteration runs).
    short = train(dataclasses.replace(QUICK, iterations=8), progress=False)
    for a, b in zip(short.model.state_dict().values(), first.snapshots[8].state_dict().values()):
        assert torch.equal(a, b)
    other = train(TrainConfig(iterations=2, batch_size=64, seed=1), progress=False)
    assert not torch.equal(other.model.weights[0], first.model.weights[0])

    # Held-out loss of the EMA model against the untrained model (same initial weights).
    gen = _gen(9)
    sigma = torch.exp(-2.3 + 1.5 * torch.randn(4096, dtype=F64, generator=gen))
    x = tree_a.sample(4096, sigma, generator=gen)
    target = tree_a.score(x, sigma).float()
    untrained = EnergyDenoiser(width=QUICK.width, generator=_gen(QUICK.seed))
    before = float(denoiser_loss(untrained, x.float(), sigma.float(), target).detach())
    after = float(denoiser_loss(first.model, x.float(), sigma.float(), target))
    assert after < 0.8 * before, (before, after)  # measured 0.508 -> 0.352


def test_schedules():
    config = TrainConfig()
    assert learning_rate(config, 0) == learning_rate(config, 512) == 1e-2
    assert learning_rate(config, 2048) == pytest.approx(5e-3)
    gamma = ema_exponent(0.010)
    assert gamma == pytest.approx(96.995, abs=1e-3)
    # The profile τ^γ on [0, 1] has the requested relative standard deviation.
    var = (gamma + 1) / (gamma + 3) - ((gamma + 1) / (gamma + 2)) ** 2
    assert math.sqrt(var) == pytest.approx(0.010, rel=1e-9)


def test_save_load_round_trip(tmp_path, pretrained):
    model = pretrained["cfg_guide"]
    path = save_model(model, tmp_path / "m.pt", metadata={"note": "copy"})
    payload = torch.load(path, weights_only=True)
    assert payload["metadata"]["note"] == "copy"
    loaded = load_model(path)
    x = torch.randn(7, 2, generator=_gen(10))
    assert torch.equal(loaded(x, 0.5), model(x, 0.5))
    assert loaded.metadata["torch_version"] == torch.__version__


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan"), float("inf"),
                                   torch.tensor([0.1, 0.0, 0.2])])
def test_bad_sigma(pretrained, sigma):
    x = torch.zeros(3, 2)
    for method in ("forward", "score", "drift", "log_prob"):
        with pytest.raises(ValueError, match="`sigma`"):
            getattr(pretrained["main"], method)(x, sigma)


def test_bad_x_and_names(pretrained, tmp_path, monkeypatch):
    model = pretrained["main"]
    with pytest.raises(ValueError, match="`x`"):
        model(torch.tensor([[0.0, float("nan")]]), 0.1)
    for shape in [(4,), (4, 3), (2, 2, 2)]:
        with pytest.raises(ValueError, match="`x`"):
            model(torch.zeros(shape), 0.1)
    with pytest.raises(TypeError, match="`x`"):
        model(torch.zeros(2, 2, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError, match="`sigma`"):
        model(torch.zeros(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="`name`"):
        load_pretrained("guide")
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=REGENERATE_COMMAND):
        load_pretrained("main")
    with pytest.raises(ValueError, match="`width`"):
        TrainConfig(width=0)
    with pytest.raises(ValueError, match="`classes`"):
        TrainConfig(classes="C")
    with pytest.raises(ValueError, match="`snapshots`"):
        train(QUICK, snapshots=(QUICK.iterations + 1,), progress=False)


def _saved(tmp_path, **changes):
    """Write a small model's file, then apply `changes` to its payload."""
    from stiffkit.diffusion.models import EnergyDenoiser, save_model

    path = save_model(EnergyDenoiser(width=8, depth=2), tmp_path / "m.pt")
    if changes:
        payload = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if value is None:
                del payload[key]
            else:
                payload[key] = value(payload[key]) if callable(value) else value
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("content", [b"broken", b"", b"\x80\x02", b"PK\x03\x04garbage"])
def test_load_model_names_the_path_of_a_garbled_file(tmp_path, content):
    # A few bytes of garbage raised a bare IndexError from torch's unpickler (found while
    # building the digits loader, which shares the reader now).
    path = tmp_path / "garbled.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}.*not a readable weight file"):
        load_model(path)


def test_load_model_names_the_path_of_a_truncated_file(tmp_path):
    from stiffkit.diffusion.models import load_model

    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path}.*not a readable weight file"):
        load_model(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable weight file"):
        load_model(path)


def test_load_model_reports_a_missing_entry(tmp_path):
    from stiffkit.diffusion.models import load_model

    with pytest.raises(ValueError, match=r"lacks the entries \['state_dict'\]"):
        load_model(_saved(tmp_path, state_dict=None))


def test_load_model_refuses_nan_weights(tmp_path):
    from stiffkit.diffusion.models import load_model

    def poison(state):
        first = next(iter(state))
        state[first] = torch.full_like(state[first], float("nan"))
        return state

    with pytest.raises(ValueError, match="NaN or Inf weights"):
        load_model(_saved(tmp_path, state_dict=poison))


def test_load_model_refuses_weights_of_another_architecture(tmp_path):
    from stiffkit.diffusion.models import load_model

    def wider(arch):
        return {**arch, "width": 16}

    with pytest.raises(ValueError, match="does not hold weights of an EnergyDenoiser"):
        load_model(_saved(tmp_path, architecture=wider))


def test_corrupt_shipped_weights_say_how_to_regenerate(tmp_path, monkeypatch):
    import stiffkit.diffusion.models as models

    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:50])
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="python -m stiffkit.diffusion.training"):
        models.load_model(path)
