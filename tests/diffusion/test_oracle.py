"""ERK-Guid's oracle variant: the exact dominant eigenpair in place of the pair's estimate.

Truth: 1-D linear drifts (where the pair is exact), the dense Jacobian of an exact mixture and
diagonal Gaussians whose drift Jacobian is ``diag(σ/(s_k² + σ²))`` everywhere.
"""

import pytest
import torch
from _diffusion_cases import linear_denoiser
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.diffusion.mixtures import GaussianMixture
from stiffkit.diffusion.noise import mixture_samples
from stiffkit.diffusion.oracle import mixture_oracle, resolve_oracle
from stiffkit.diffusion.samplers import pf_ode_drift, sample
from stiffkit.diffusion.schedules import edm_sigmas

F64 = torch.float64


def test_resolve_oracle():
    drift = pf_ode_drift(linear_denoiser(torch.tensor([[2.0, 0.0], [0.0, -5.0]], dtype=F64)))
    assert resolve_oracle(None, drift) is None
    fn = lambda s, x: (x[:, 0], x)  # noqa: E731
    assert resolve_oracle(fn, drift) is fn
    oracle = resolve_oracle("dense", drift)
    rho, v = oracle(torch.tensor(1.0, dtype=F64), torch.ones(3, 2, dtype=F64))
    torch.testing.assert_close(rho, torch.full((3,), 5.0, dtype=F64))
    torch.testing.assert_close(v.abs(), torch.tensor([[0.0, 1.0]] * 3, dtype=F64))
    with pytest.raises(ValueError, match="`oracle`"):
        resolve_oracle("magic", drift)


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


def _diagonal_gaussian(stds):
    """One Gaussian N(0, diag(s²)): J_f(σ) = diag(σ/(s_k² + σ²)) at every x (the axes)."""
    s = torch.tensor(stds, dtype=F64)
    return GaussianMixture(torch.ones(1), torch.zeros(1, len(stds), dtype=F64),
                           torch.diag(s**2)[None]), s


@pytest.mark.parametrize("solver, first", [("heun", 1), ("dpm2", 0), ("deis", 1)])
def test_oracle_is_asked_at_the_start_of_each_corrected_step(solver, first):
    """The exact eigenpair is J_f's at (σ_i, x_i), the step's start — not at σ_{i+1}."""
    gmm, _ = _diagonal_gaussian([0.05, 0.5])
    exact = mixture_oracle(gmm)
    calls = []

    def recording(sigma, x):
        calls.append((float(sigma), x.clone()))
        return exact(sigma, x)

    sig = edm_sigmas(6, 0.01, 2.0)  # five steps between positive levels, then Euler to 0
    x0 = gmm.sample(4, 2.0, torch.Generator().manual_seed(1))
    traj = sample(gmm, x0, sig, solver=solver, w_stiff=0.5, oracle=recording)
    steps = list(range(first, 5))  # the steps with a pair (the last one, to σ = 0, has none)
    assert [s for s, _ in calls] == [float(sig[i]) for i in steps]
    for (_, x), i in zip(calls, steps):
        assert torch.equal(x, traj.states[i])


@given(
    stds=st.lists(st.floats(0.01, 2.0), min_size=1, max_size=3),
    n=st.integers(3, 6),
    lo=st.floats(1e-3, 0.1),
    hi=st.floats(0.5, 10.0),
    solver=st.sampled_from(["heun", "dpm2", "deis"]),
    w=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_mixture_oracle_in_the_sampler_reports_the_exact_stiffness_at_sigma_i(
        stds, n, lo, hi, solver, w, seed):
    """With the exact oracle the recorded ρ of step i is max_k σ_i/(s_k² + σ_i²)."""
    gmm, s = _diagonal_gaussian(stds)
    sig = edm_sigmas(n, lo, hi)
    x0 = gmm.sample(3, hi, torch.Generator().manual_seed(seed))
    traj = sample(gmm, x0, sig, solver=solver, w_stiff=w, oracle=mixture_oracle(gmm))
    rho = traj.diagnostics["erk_rho"]
    used = torch.isfinite(rho).all(dim=1)
    assert used.tolist() == [i >= (solver != "dpm2") and i < n - 1 for i in range(n)]
    want = (sig[:n, None] / (s**2 + sig[:n, None] ** 2)).amax(dim=1)
    torch.testing.assert_close(rho[used], want[used, None].expand(-1, 3), rtol=1e-12, atol=0)
