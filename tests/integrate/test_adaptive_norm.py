"""solve_adaptive's error norms (per sample / torchdiffeq's batch RMS) and its step hook."""

import pytest
import torch
import torchdiffeq
from bench_integrators import T_END, Counting, make_drift

from stiffkit import solve_adaptive
from stiffkit.integrate.adaptive import error_norm


def _x0(batch, seed=2):
    return torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [256, 1000])
@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8])
def test_batch_rms_matches_torchdiffeq_dopri5_evaluations(batch, tol):
    """The benchmark's problem (benchmarks/bench_integrators.py): NFE within 2 %."""
    f, x0 = make_drift(), _x0(batch)
    theirs = Counting(f)
    torchdiffeq.odeint(theirs, x0, torch.tensor([0.0, T_END], dtype=torch.float64), rtol=tol,
                       atol=tol, method="dopri5")
    ours = Counting(f)
    sol = solve_adaptive(ours, x0, (0.0, T_END), "dopri5_shampine", rtol=tol, atol=tol,
                         norm="batch_rms", controller="torchdiffeq")
    assert ours.calls == sol.nfe
    assert abs(ours.calls / theirs.calls - 1) <= 0.02
    # The default per-sample norm is stricter: every sample meets the tolerance.
    strict = Counting(f)
    default = solve_adaptive(strict, x0, (0.0, T_END), "dopri5_shampine", rtol=tol, atol=tol,
                             controller="torchdiffeq")
    assert strict.calls >= ours.calls
    assert bool((default.trajectory.diagnostics["error_norm"] <= 1).all())


def test_batch_rms_is_the_rms_of_the_per_sample_norms_and_default_is_the_max():
    f, x0 = make_drift(), _x0(64)
    seen = []
    sol = solve_adaptive(f, x0, (0.0, 1.0), "dopri5", rtol=1e-5, atol=1e-5, norm="batch_rms",
                         controller="i", step_hook=lambda n, t, h, step, k, err: seen.append(
                             (step, err)))
    errs = sol.trajectory.diagnostics["error_norm"]
    assert len(seen) == sol.num_accepted
    for j, (step, err) in enumerate(seen):
        x_prev = sol.trajectory.states[j]
        scale = 1e-5 + 1e-5 * torch.maximum(x_prev.abs(), step.x.abs())
        whole = (step.error / scale).square().mean().sqrt()  # torchdiffeq's _rms_norm
        torch.testing.assert_close(err.square().mean().sqrt(), whole)
        torch.testing.assert_close(err, error_norm(step.error, x_prev, step.x, 1e-5, 1e-5))
    assert bool((errs.square().mean(1).sqrt() <= 1).all())
    assert float(errs.max()) > 1  # some sample exceeded the tolerance: the batch RMS allows it
    plain = solve_adaptive(f, x0, (0.0, 1.0), "dopri5", rtol=1e-5, atol=1e-5)
    same = solve_adaptive(f, x0, (0.0, 1.0), "dopri5", rtol=1e-5, atol=1e-5, norm="sample")
    assert torch.equal(plain.x, same.x) and plain.nfe == same.nfe


def test_step_hook_sees_every_accepted_step_at_no_cost():
    f, x0 = make_drift(), _x0(8)
    calls = []

    def hook(n, t, h, step, k_new, err):
        calls.append((n, t, h))
        torch.testing.assert_close(k_new, f(torch.tensor(t, dtype=x0.dtype), step.x))

    counted = Counting(f)
    sol = solve_adaptive(counted, x0, (0.0, 2.0), "cash_karp", rtol=1e-6, atol=1e-6,
                         step_hook=hook)
    assert [c[0] for c in calls] == list(range(sol.num_accepted))
    times = sol.trajectory.times
    assert [c[1] for c in calls] == times[1:].tolist()
    assert [c[2] for c in calls] == pytest.approx(times.diff().tolist(), rel=1e-12)
    assert counted.calls == sol.nfe  # the hook's own drift checks are not the solver's


def test_torchdiffeq_controller_never_shrinks_an_accepted_step():
    f, x0 = make_drift(), _x0(32)
    sol = solve_adaptive(f, x0, (0.0, T_END), "dopri5", rtol=1e-7, atol=1e-7,
                         controller="torchdiffeq")
    hs = sol.trajectory.times.diff()
    # Apart from the last step (clipped to land on T_END), steps never shrink after acceptance
    # unless the next attempt was rejected.
    grew = (hs[1:-1] >= hs[:-2] * (1 - 1e-12))
    assert int((~grew).sum()) <= sol.num_rejected


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    (dict(norm="max"), ValueError, "`norm`"),
    (dict(norm=None), ValueError, "`norm`"),
    (dict(step_hook=3), TypeError, "`step_hook`"),
    (dict(controller="pid"), ValueError, "'pi', 'i' or 'torchdiffeq'"),
])
def test_bad_options_are_named(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        solve_adaptive(make_drift(), _x0(2), (0.0, 1.0), **kwargs)


def test_error_norm_gradient_is_finite_at_zero_error_and_nan_stays_nan():
    x = torch.ones(3, 2, dtype=torch.float64)
    error = torch.tensor([[0.0, 0.0], [1e-9, -2e-9], [float("nan"), 0.0]], dtype=torch.float64,
                         requires_grad=True)
    norms = error_norm(error, x, x, 1e-6, 1e-9)
    assert norms[0] == 0 and norms[1] > 0 and torch.isnan(norms[2])
    (g,) = torch.autograd.grad(norms[:2].sum(), error)
    assert bool(torch.isfinite(g[:2]).all()) and torch.equal(g[0], torch.zeros(2, dtype=g.dtype))
