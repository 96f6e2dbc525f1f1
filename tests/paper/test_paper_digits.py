"""Tests for ``stiffkit.paper.digits``: the digits world and its sampler-quality runs."""

import numpy as np
import pandas as pd
import pytest
import torch

from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.noise import SEED_STRIDE, run_seeds
from stiffkit.diffusion.samplers import reference_sample
from stiffkit.paper.digits import (
    CHUNK,
    REAL_LABEL,
    SWEEP_SEED_OFFSET,
    DigitsWorld,
    best_weights,
    compare_digits,
    digits_world,
    guidance_sweep,
)
from stiffkit.paper.quality import Method, run_method

N_STEPS = 4
REF_STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world():
    return digits_world({"cfg": 2.5, "ag": 1.5})


@pytest.fixture(scope="module")
def frame(world):
    plan = [(N_STEPS, Method("Heun")), (N_STEPS, Method("Heun, gate high", w_con=50.0)),
            (N_STEPS, Method("ERK", w_stiff=0.5)),
            (N_STEPS, Method("ERK oracle", w_stiff=0.5, oracle="power", oracle_iter=3)),
            (N_STEPS, Method("CFG", "cfg"))]
    return compare_digits(world, plan, num_samples=24, seed=2, num_bootstrap=10,
                          reference_steps=REF_STEPS)


def test_initial_state_is_per_sample_and_labels_are_uniform_digits(world):
    x, labels = world.initial_state(run_seeds(5, 2000))
    assert x.shape == (2000, 1, 8, 8) and x.dtype == torch.float32
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    counts = torch.bincount(labels, minlength=10)
    assert counts.numel() == 10 and int(counts.min()) > 140 and int(counts.max()) < 260
    assert abs(float(x.std()) / 80.0 - 1) < 0.02  # σ_max · N(0, I)
    x_few, labels_few = world.initial_state(run_seeds(5, 7))
    assert torch.equal(x_few, x[:7]) and torch.equal(labels_few, labels[:7])


def test_sigmas_are_edm_from_80(world):
    s = world.sigmas(8)
    assert s.shape == (9,) and float(s[0]) == 80.0 and float(s[-1]) == 0.0
    assert float(s[-2]) == pytest.approx(0.002)


def test_denoisers_match_the_model_and_guidance_formulas(world):
    x, labels = world.initial_state(run_seeds(0, CHUNK + 9))  # two chunks
    x = x / 80.0 * 0.7  # a moderate noise level
    sigma = torch.tensor(0.7)
    main = world.main
    cond = main(x, sigma, labels)
    uncond = main(x, sigma, None)
    weak = world.ag_guide(x, sigma, labels)
    torch.testing.assert_close(world.denoiser("none", labels=labels)(x, sigma), cond,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(world.denoiser("cfg", labels=labels)(x, sigma),
                               uncond + 2.5 * (cond - uncond), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(world.denoiser("ag", labels=labels)(x, sigma),
                               weak + 1.5 * (cond - weak), rtol=1e-4, atol=1e-4)
    assert world.denoiser("cfg", labels=labels, w=4.0).w == 4.0
    assert isinstance(world.denoiser("ag", labels=labels), Guided)
    torch.testing.assert_close(world.denoiser("none")(x, sigma), uncond, rtol=1e-5, atol=1e-5)


def test_bad_inputs_name_the_argument(world):
    x, labels = world.initial_state(run_seeds(0, 4))
    with pytest.raises(ValueError, match="guidance"):
        world.denoiser("dpm", labels=labels)
    with pytest.raises(ValueError, match="labels"):
        world.denoiser("none", labels=torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="labels"):
        world.denoiser("none", labels=labels[:3])(x, 1.0)
    with pytest.raises(ValueError, match="Unknown guidance"):
        world.with_weights(pag=2.0)
    with pytest.raises(ValueError, match="weights"):
        world.with_weights(cfg=-1.0)
    with pytest.raises(ValueError, match="weights"):
        DigitsWorld(world.main, world.ag_guide, {"cfg": 2.0})
    with pytest.raises(TypeError, match="ag_guide"):
        DigitsWorld(world.main, "guide")
    with pytest.raises(TypeError, match="world"):
        compare_digits("world", [(4, Method("Heun"))], num_samples=4)
    with pytest.raises(TypeError, match="plan"):
        compare_digits(world, [(4, "Heun")], num_samples=4)
    with pytest.raises(ValueError, match="plan"):
        compare_digits(world, [], num_samples=4)
    with pytest.raises(ValueError, match="num_samples"):
        compare_digits(world, [(4, Method("Heun"))], num_samples=SWEEP_SEED_OFFSET + 1)
    with pytest.raises(ValueError, match="weights"):
        guidance_sweep(world, {"pag": [2.0]})
    with pytest.raises(ValueError, match="oracle_iter"):
        Method("bad", w_stiff=0.5, oracle="dense", oracle_iter=3)


def test_with_weights_replaces_only_the_given_weight(world):
    other = world.with_weights(cfg=3.0)
    assert other.weights == {"cfg": 3.0, "ag": 1.5} and world.weights["cfg"] == 2.5
    assert other.main is world.main


def test_oracle_iterations_are_counted_as_network_calls(world):
    x, labels = world.initial_state(run_seeds(1, 6))
    run = run_method(world, Method("o", w_stiff=0.5, oracle="power", oracle_iter=3), x, N_STEPS,
                     labels=labels)
    # Heun's pair exists from the second step to the last solver step: N − 2 steps, each
    # spending 1 … oracle_iter JVPs (power iteration stops once every sample has converged).
    assert run.nfe == 2 * N_STEPS - 1
    assert run.nfe + (N_STEPS - 2) <= run.network_calls <= run.nfe + 3 * (N_STEPS - 2)
    one = run_method(world, Method("o", w_stiff=0.5, oracle="power", oracle_iter=1), x, N_STEPS,
                     labels=labels)
    assert one.network_calls == one.nfe + (N_STEPS - 2)


def test_compare_rows_floor_and_shared_scores(frame):
    assert list(frame["method"]) == ["Heun", "Heun, gate high", "ERK", "ERK oracle", "CFG",
                                     REAL_LABEL]
    runs = frame[frame["method"] != REAL_LABEL]
    floor = frame[frame["method"] == REAL_LABEL].iloc[0]
    assert (runs["nfe"] == 2 * N_STEPS - 1).all() and (runs["n"] == 24).all()
    assert (runs["n_truth"] == 1797).all()
    assert floor["n"] == 898 and floor["n_truth"] == 899 and (frame["n_floor"] == 898).all()
    for name in ("fd", "precision", "recall", "class_consistency", "sw"):
        assert (frame[f"{name}_floor"] == floor[name]).all(), name
    assert 0.9 < floor["class_consistency"] <= 1.0
    assert np.isnan(floor["endpoint_error_mean"])
    a, b = runs.iloc[0], runs.iloc[1]  # w_stiff = 0: the gate changes nothing
    for col in ("fd", "sw", "endpoint_error_mean", "class_consistency"):
        assert a[col] == b[col], col
    assert runs.iloc[2]["fd"] != a["fd"]
    for col in ("fd", "fd_lo", "fd_hi", "precision", "recall", "class_consistency", "sw",
                "endpoint_error_mean"):
        assert np.isfinite(runs[col]).all(), col
    assert (runs["fd"] > floor["fd"]).all()  # 4 steps are far from the data


def test_endpoint_error_is_the_distance_to_the_converged_solve(world, frame):
    x, labels = world.initial_state(run_seeds(2, 24))
    run = run_method(world, Method("ERK", w_stiff=0.5), x, N_STEPS, labels=labels)
    ref = reference_sample(world.denoiser("none", labels=labels), x, world.sigmas(N_STEPS),
                           num_steps=REF_STEPS)
    want = float((run.samples - ref).flatten(1).norm(dim=1).mean())
    got = frame.set_index("method").loc["ERK", "endpoint_error_mean"]
    assert got == pytest.approx(want, rel=1e-5)


def test_guidance_sweep_uses_other_samples_and_w1_is_unguided(world):
    sweep = guidance_sweep(world, {"cfg": [1.0, 3.0], "ag": [1.0]}, num_steps=N_STEPS,
                           num_samples=16, seed=2, num_bootstrap=0)
    assert list(sweep["guidance"]) == ["cfg", "cfg", "ag"]
    assert list(sweep["guidance_weight"]) == [1.0, 3.0, 1.0]
    assert (sweep["nfe"] == 2 * N_STEPS - 1).all() and sweep["endpoint_error_mean"].isna().all()
    # w = 1 is the conditional model alone, whichever the guide.
    assert sweep.iloc[0]["fd"] == sweep.iloc[2]["fd"]
    assert sweep.iloc[0]["fd"] != sweep.iloc[1]["fd"]
    # Its samples are not the table's: seeds offset by SWEEP_SEED_OFFSET.
    x, labels = world.initial_state(range(2 * SEED_STRIDE + SWEEP_SEED_OFFSET,
                                          2 * SEED_STRIDE + SWEEP_SEED_OFFSET + 16))
    x_table, _ = world.initial_state(run_seeds(2, 16))
    assert not torch.equal(x, x_table)
    from stiffkit.diffusion.metrics import evaluate_images
    from stiffkit.diffusion.mixtures.digits import digits_images
    from stiffkit.diffusion.noise import sub_seed

    samples = run_method(world, Method("h"), x, N_STEPS, labels=labels).samples
    score = evaluate_images(samples, digits_images(8)[0].float(), labels=labels, noise_floor=False,
                            seed=sub_seed(np.random.SeedSequence(2).spawn(3)[2]),
                            num_bootstrap=0)
    assert float(score["fd"].iloc[0]) == pytest.approx(sweep.iloc[0]["fd"], rel=1e-9)


def test_best_weights_picks_the_lowest_fd():
    sweep = pd.DataFrame({"guidance": ["cfg", "cfg", "ag", "ag"],
                          "guidance_weight": [1.5, 3.0, 1.5, 2.0], "fd": [9.0, 4.0, 2.0, np.nan]})
    assert best_weights(sweep) == {"ag": 1.5, "cfg": 3.0}
    with pytest.raises(ValueError, match="column"):
        best_weights(sweep.drop(columns="fd"))
    with pytest.raises(ValueError, match="finite"):
        best_weights(sweep.assign(fd=np.nan))
