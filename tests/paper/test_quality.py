"""Tests for ``stiffkit.paper.quality``: runs of sampler settings scored on the toy world."""

import math

import numpy as np
import pytest
import torch

from stiffkit.diffusion.erk import W_STIFF_THEORY
from stiffkit.diffusion.samplers import reference_sample, sample_final
from stiffkit.paper.quality import (
    EXACT_LABEL,
    PAPER_SETTINGS,
    SEED_STRIDE,
    Method,
    compare,
    paper_setting,
    run_method,
    time_methods,
)
from stiffkit.paper.toy import toy_world

N_STEPS = 4
N_SAMPLES = 48
REF_STEPS = 16  # RK4 steps of the reference solve: plenty for these checks, and cheap


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny batches: a second intra-op thread only adds contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world():
    return toy_world()


@pytest.fixture(scope="module")
def frame(world):
    plan = [
        (N_STEPS, Method("Heun")),
        (N_STEPS, Method("Heun, gate high", w_con=50.0)),
        (N_STEPS, Method("ERK theory", w_stiff=W_STIFF_THEORY)),
        (N_STEPS, Method("ERK oracle", w_stiff=W_STIFF_THEORY, oracle="dense")),
        (N_STEPS, Method("CFG", "cfg")),
    ]
    return compare(world, plan, num_samples=N_SAMPLES, seed=3, num_bootstrap=20,
                   reference_steps=REF_STEPS)


def test_paper_settings_match_the_reference_script():
    assert paper_setting(8) == (0.5, 0.1)
    assert paper_setting(16) == (0.75, 0.3)
    assert paper_setting(16, guided=True) == (0.75, 0.5)
    assert paper_setting(32, guided=True) == (1.0, 0.5)
    assert set(PAPER_SETTINGS) == {(False, 8), (False, 16), (False, 32), (True, 16), (True, 32)}
    with pytest.raises(ValueError, match="no guided setting"):
        paper_setting(8, guided=True)


def test_method_validates_its_arguments():
    with pytest.raises(ValueError, match="guidance"):
        Method("x", guidance="classifier")
    with pytest.raises(ValueError, match="w_stiff"):
        Method("x", w_stiff=-0.1)
    with pytest.raises(ValueError, match="w_con"):
        Method("x", w_con=float("nan"))
    assert not Method("Heun").erk and Method("o", oracle="dense").erk


def test_run_method_counts_gates_and_reduces_to_heun(world):
    x0 = world.initial_state(range(32))
    heun = run_method(world, Method("Heun"), x0, N_STEPS)
    never = run_method(world, Method("never", w_stiff=1.0, w_con=1e6), x0, N_STEPS)
    always = run_method(world, Method("always", w_stiff=1.0, w_con=0.0), x0, N_STEPS)
    assert heun.nfe == never.nfe == always.nfe == 2 * N_STEPS - 1 == heun.network_calls
    assert math.isnan(heun.gate_rate) and never.gate_rate == 0.0 and always.gate_rate == 1.0
    assert torch.equal(never.samples, heun.samples)
    assert not torch.equal(always.samples, heun.samples)
    assert heun.rho_median > 0


def test_run_method_times_the_sampler_alone(world, monkeypatch):
    import stiffkit.paper.quality as quality

    ticks = iter([10.0, 11.5])  # a fake clock: the sampler "takes" exactly 1.5 s
    monkeypatch.setattr(quality.time, "perf_counter", lambda: next(ticks))
    run = run_method(world, Method("Heun"), world.initial_state(range(4)), N_STEPS)
    assert run.seconds == 1.5


def test_compare_rows_costs_and_floors(frame):
    runs = frame[frame["method"] != EXACT_LABEL]
    exact = frame[frame["method"] == EXACT_LABEL]
    assert len(runs) == 5 and len(exact) == 1
    assert (runs["nfe"] == 2 * N_STEPS - 1).all()
    calls = runs.set_index("method")["network_calls"]
    assert calls["ERK oracle"] > calls["Heun"] == 2 * N_STEPS - 1  # JVPs of the oracle
    assert (frame["sw_floor"] == exact["sw"].iloc[0]).all()
    assert np.isnan(exact["endpoint_error_mean"].iloc[0]) and (frame["n"] == N_SAMPLES).all()
    # The gate never opens at w_con = 50 on a 4-step grid: bit-identical samples, same scores.
    a, b = (runs[runs["method"] == m].iloc[0] for m in ("Heun", "Heun, gate high"))
    for col in ("endpoint_error_mean", "sw", "nll_mean", "precision", "recall"):
        assert a[col] == b[col]
    erk = runs[runs["method"] == "ERK theory"].iloc[0]
    assert erk["endpoint_error_mean"] != a["endpoint_error_mean"]
    finite = runs[["endpoint_error_mean", "sw", "nll_mean", "recall", "sampler_seconds"]]
    assert np.isfinite(finite.to_numpy(dtype=float)).all()


def test_compare_endpoint_error_is_against_the_same_odes_converged_solve(world, frame):
    x0 = world.initial_state(range(3 * SEED_STRIDE, 3 * SEED_STRIDE + N_SAMPLES))
    for guidance, label in (("none", "ERK theory"), ("cfg", "CFG")):
        den = world.denoiser(guidance)
        ref = reference_sample(den, x0, world.sigmas(N_STEPS), num_steps=REF_STEPS)
        w_stiff = W_STIFF_THEORY if label.startswith("ERK") else 0.0
        x, _ = sample_final(den, x0, world.sigmas(N_STEPS), w_stiff=w_stiff)
        expected = torch.linalg.vector_norm((x - ref).double(), dim=1).mean().item()
        got = frame.loc[frame["method"] == label, "endpoint_error_mean"].item()
        assert got == pytest.approx(expected, rel=1e-6)


def test_compare_is_reproducible_and_seeded(world, frame):
    plan = [(N_STEPS, Method("Heun"))]
    cols = ["endpoint_error_mean", "sw", "nll_mean", "recall"]
    kw = dict(num_samples=N_SAMPLES, num_bootstrap=20, include_exact=False,
              reference_steps=REF_STEPS)
    again = compare(world, plan, seed=3, **kw)
    np.testing.assert_array_equal(again[cols].to_numpy(), frame.loc[[0], cols].to_numpy())
    other = compare(world, plan, seed=4, **kw)
    assert not np.array_equal(other[cols].to_numpy(), again[cols].to_numpy())
    assert len(again) == 1 and "sw_floor" in again and np.isnan(again["sw_floor"]).all()


def test_time_methods_returns_the_per_entry_minimum_after_a_warm_up(world, monkeypatch):
    import stiffkit.paper.quality as quality

    plan = [(N_STEPS, Method("Heun")), (N_STEPS, Method("ERK", w_stiff=0.5))]
    script = iter([9.0,  # warm-up of the one (guidance, oracle) pair: not timed
                   3.0, 5.0,  # round 1: Heun, ERK
                   2.0, 7.0,  # round 2
                   4.0, 6.0])  # round 3
    calls = []

    class _Timed:
        def __init__(self, seconds):
            self.seconds = seconds

    def fake_run(world, method, x_init, num_steps):
        calls.append((method.label, len(x_init)))
        return _Timed(next(script))

    monkeypatch.setattr(quality, "run_method", fake_run)
    seconds = time_methods(world, plan, num_samples=16, repeats=3)
    assert seconds == [2.0, 5.0]
    assert calls[0] == ("Heun", 2)  # the warm-up runs on two samples
    assert calls[1:] == [("Heun", 16), ("ERK", 16)] * 3
    with pytest.raises(ValueError, match="repeats"):
        time_methods(world, plan, num_samples=16, repeats=0)


def test_compare_basic_intervals_reflect_the_spread(world):
    plan = [(N_STEPS, Method("Heun"))]
    kw = dict(num_samples=N_SAMPLES, seed=3, num_bootstrap=20, include_exact=False,
              reference_steps=REF_STEPS)
    pct, basic = compare(world, plan, **kw), compare(world, plan, ci="basic", **kw)
    for col in ("sw", "endpoint_error_mean"):
        v = pct[col].item()
        assert basic[col].item() == v
        assert basic[f"{col}_lo"].item() == pytest.approx(2 * v - pct[f"{col}_hi"].item())


def test_compare_rejects_bad_arguments(world):
    with pytest.raises(TypeError, match="plan"):
        compare(world, [(4, "Heun")], num_samples=8)
    with pytest.raises(ValueError, match="num_samples"):
        compare(world, [(4, Method("Heun"))], num_samples=1)
    with pytest.raises(ValueError, match="seed"):
        compare(world, [(4, Method("Heun"))], num_samples=8, seed=-1)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: Method(None), ValueError, "`label` must be a non-empty string"),
        (lambda: Method("x", oracle="bad"), ValueError, "`oracle` must be None or one of"),
        (lambda: Method("x", solver="bad"), ValueError, "`solver` must be one of"),
        (lambda: Method("x", solver="euler", w_stiff=1.0), ValueError,
         "`solver='euler'` has no embedded pair"),
        (lambda: paper_setting(8.7), ValueError, "`num_steps` must be a positive integer"),
        (lambda: compare(None, [(8, Method("x"))], num_samples=8), TypeError,
         "`world` must be a ToyWorld"),
        (lambda: compare(toy_world(), 3, num_samples=8), TypeError,
         "`plan` must be an iterable"),
        (lambda: compare(toy_world(), [], num_samples=8), ValueError,
         "`plan` must hold at least one"),
        (lambda: compare(toy_world(), [(4, Method("x"))], num_samples=8, reference_steps=0),
         ValueError, "`reference_steps` must be a positive integer"),
        (lambda: compare(toy_world(), [(4, Method("x"))], num_samples=8, seed=10**13),
         ValueError, "`seed` must be at most MAX_RUN_SEED"),
    ],
)
def test_bad_arguments_are_named_before_sampling(call, exc, message):
    """Issue 12: paper_setting(8.7) answered for 8 steps, unknown oracles and solvers were
    accepted until sampling, an empty plan was a pandas KeyError."""
    with pytest.raises(exc, match=message):
        call()
