"""Tests for stiffkit.problems: spectra, exact solutions, stiff references, input checks."""

import math

import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.problems import (
    LinearProblem,
    complex_pair_linear,
    dahlquist,
    jordan_like_linear,
    nonnormal_linear,
    robertson,
    symmetric_linear,
    symmetric_with_gap,
    van_der_pol,
)

#: Central-difference step for d/dt of `exact`; truncation ~ h² |λ|³, rounding ~ eps / h.
FD_STEP = 1e-5
EPS = float(np.finfo(np.float64).eps)


def _sorted_complex(z):
    z = np.asarray(z, dtype=np.complex128)
    return z[np.lexsort((z.imag, z.real))]


def _x0(n, batch=3, seed=0, dtype=torch.float64):
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _check_ode(problem, x0, t, *, rtol):
    """Assert d/dt exact(0, t, x0) == f(exact(0, t, x0)) by central differences."""
    xs = problem.exact(0.0, [t - FD_STEP, t, t + FD_STEP], x0)  # [3, batch, n]
    fd = (xs[2] - xs[0]) / (2 * FD_STEP)
    f = problem.f(t, xs[1])
    x_max = float(xs.abs().max())
    # Truncation is relative to the drift's size; rounding adds an absolute eps·|x|/h floor.
    scale = float(f.abs().max()) + np.abs(problem.A).max() * x_max
    assert (fd - f).abs().max() <= rtol * scale + 10 * EPS * x_max / FD_STEP


def _check_semigroup(problem, x0, t1, t2, *, rtol):
    direct = problem.exact(0.0, t1 + t2, x0)
    via = problem.exact(t1, t1 + t2, problem.exact(0.0, t1, x0))
    torch.testing.assert_close(via, direct, rtol=rtol, atol=rtol * float(direct.abs().max()))


# ----------------------------------------------------------------------------- spectra


LINEAR_CASES = {
    "symmetric": lambda: symmetric_linear([-1000.0, -3.0, -0.5, 0.0, 2.0], seed=3),
    "gap": lambda: symmetric_with_gap(6, 500.0, 0.2, seed=1),
    "complex": lambda: complex_pair_linear([-1 + 30j, -200 + 5j], real=[-7.0], seed=2),
    "nonnormal": lambda: nonnormal_linear([-1.0, -10.0, -100.0, -1000.0], 1e3, seed=4),
    "dahlquist": lambda: dahlquist(-50.0),
}


@pytest.mark.parametrize("name", LINEAR_CASES)
def test_eigenvalues_match_requested_spectrum(name):
    p = LINEAR_CASES[name]()
    computed = np.linalg.eigvals(p.A)
    rho = np.abs(p.eigenvalues).max()
    cond = p.eigenvector_cond
    np.testing.assert_allclose(_sorted_complex(computed), _sorted_complex(p.eigenvalues),
                               atol=1e-12 * rho * cond**2)
    # The stored eigenvectors really diagonalise A.
    V = p.eigenvectors
    np.testing.assert_allclose(p.A @ V, V * p.eigenvalues, atol=1e-12 * rho * cond)


def test_symmetric_constructors_are_symmetric_with_orthonormal_eigenvectors():
    for p in (LINEAR_CASES["symmetric"](), LINEAR_CASES["gap"]()):
        np.testing.assert_array_equal(p.A, p.A.T)
        np.testing.assert_allclose(p.eigenvectors.T @ p.eigenvectors, np.eye(p.dim), atol=1e-14)


def test_symmetric_with_gap_spectrum():
    p = symmetric_with_gap(8, 1e3, 0.25, seed=5)
    moduli = np.sort(np.abs(np.linalg.eigvalsh(p.A)))[::-1]
    assert np.all(np.linalg.eigvalsh(p.A) < 0)  # sign = -1 default: stiff decay
    np.testing.assert_allclose(moduli[0], 1e3, rtol=1e-13)
    np.testing.assert_allclose(moduli[1] / moduli[0], 0.25, rtol=1e-12)  # gap attained
    assert np.all(moduli[1:] <= 0.25 * 1e3 * (1 + 1e-12))
    assert np.all(symmetric_with_gap(3, 2.0, 0.5, sign=1).eigenvalues > 0)
    assert symmetric_with_gap(1, 7.0, 0.5).eigenvalues.tolist() == [-7.0]


def test_complex_pair_is_normal_and_realifies_multiplication():
    p = complex_pair_linear([-2 + 3j, 0.5 - 4j], real=[1.0, -1.0], seed=7)
    assert p.A.dtype == np.float64
    np.testing.assert_allclose(p.A @ p.A.T, p.A.T @ p.A, atol=1e-12)  # normal
    # With a 2x2 block, x = (Re z, Im z) evolves like z' = λ z up to the rotation Q.
    lam = -2 + 3j
    q = complex_pair_linear([lam], seed=0)
    Q = np.real(q.eigenvectors @ np.linalg.inv(np.array([[1, 1], [-1j, 1j]]) / np.sqrt(2)))
    z0, t = 0.3 - 0.7j, 0.4
    x0 = torch.tensor(Q @ [z0.real, z0.imag], dtype=torch.float64)[None]
    z1 = z0 * np.exp(lam * t)
    np.testing.assert_allclose(Q.T @ q.exact(0.0, t, x0)[0].numpy(), [z1.real, z1.imag],
                               rtol=1e-12)


@pytest.mark.parametrize("cond", [1.0, 10.0, 1e3, 1e6])
def test_nonnormal_eigenvector_condition_number(cond):
    p = nonnormal_linear(np.linspace(-1.0, -100.0, 5), cond, seed=11)
    assert p.eigenvector_cond == pytest.approx(cond, rel=1e-8)
    assert not np.allclose(p.A @ p.A.T, p.A.T @ p.A) or cond == 1.0


def test_jordan_like_is_strongly_nonnormal():
    p = jordan_like_linear(-1.0, 100.0, 4)
    assert np.all(np.tril(p.A, -1) == 0) and np.all(np.diag(p.A) == -1.0)
    np.testing.assert_allclose(np.linalg.eigvals(p.A), -1.0, atol=1e-12)  # triangular: exact
    assert np.linalg.norm(p.A, 2) > 50 * np.abs(p.eigenvalues).max()
    # Transient growth: ‖e^{At}‖ exceeds 1 although every mode decays.
    x = p.exact(0.0, 1.0, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64))
    assert x.norm() > 100.0


# ----------------------------------------------------------------------------- drift / exact


def test_drift_is_batched_and_keeps_dtype():
    c = np.array([1.0, -2.0, 0.5])
    p = symmetric_linear([-4.0, -1.0, 0.0], c=c, seed=1)
    for dtype in (torch.float32, torch.float64):
        x = _x0(3, batch=5, dtype=dtype)
        out = p(torch.zeros(5, dtype=dtype), x)
        assert out.dtype == dtype and out.shape == (5, 3)
        expected = x.double().numpy() @ p.A.T + c
        np.testing.assert_allclose(out.double().numpy(), expected,
                                   rtol=1e-5 if dtype == torch.float32 else 1e-14, atol=1e-5)
    assert p.jac() is p.A and p.dim == 3
    x32 = _x0(3, dtype=torch.float32)
    assert p.exact(0.0, 1.0, x32).dtype == torch.float32
    assert p.exact(0.0, [0.5, 1.0], x32).shape == (2, 3, 3)


@pytest.mark.parametrize("name", LINEAR_CASES)
def test_exact_satisfies_ode_and_semigroup(name):
    p = LINEAR_CASES[name]()
    x0 = _x0(p.dim)
    t = 0.7 / max(1.0, np.abs(p.eigenvalues).max() ** 0.5)  # keep stiff modes above underflow
    _check_ode(p, x0, t, rtol=1e-6)
    _check_semigroup(p, x0, t, 0.6 * t, rtol=1e-10)
    torch.testing.assert_close(p.exact(1.0, 1.0, x0), x0, rtol=0, atol=0)


def test_exact_with_forcing_and_singular_matrix():
    c = np.array([1.0, 2.0, -1.0])
    p = symmetric_linear([0.0, -2.0, -30.0], c=c, seed=2)  # singular A
    x0 = _x0(3)
    _check_ode(p, x0, 0.3, rtol=1e-6)
    _check_semigroup(p, x0, 0.3, 0.5, rtol=1e-10)
    # Along the null vector v the forcing integrates linearly: <x, v> grows by <c, v> t.
    v = p.eigenvectors[:, 0]
    x1 = p.exact(0.0, 2.5, x0).numpy()
    np.testing.assert_allclose(x1 @ v, x0.numpy() @ v + 2.5 * (c @ v), rtol=1e-12)
    # A = 0 exactly: x(t) = x0 + c t.
    zero = LinearProblem(np.zeros((3, 3)), c)
    torch.testing.assert_close(zero.exact(1.0, 3.0, x0), x0 + 2.0 * torch.tensor(c))


def test_exact_with_forcing_converges_to_steady_state():
    c = np.array([3.0, -1.0])
    p = symmetric_linear([-1.0, -5.0], c=c, seed=0)
    x_star = -np.linalg.solve(p.A, c)
    x = p.exact(0.0, 60.0, _x0(2)).numpy()
    np.testing.assert_allclose(x, np.broadcast_to(x_star, x.shape), rtol=1e-12, atol=1e-12)


@given(
    lams=st.lists(st.floats(-200.0, 5.0), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
    with_c=st.booleans(),
    t1=st.floats(0.0, 0.5),
    t2=st.floats(0.0, 0.5),
)
def test_exact_hypothesis_random_spectra(lams, seed, with_c, t1, t2):
    n = len(lams)
    c = np.random.default_rng(seed).standard_normal(n) if with_c else None
    p = symmetric_linear(lams, c=c, seed=seed)
    x0 = _x0(n, seed=seed)
    _check_semigroup(p, x0, t1, t2, rtol=1e-9)
    # Closed form in the eigenbasis: y_k(t) = e^{λt} y_k + (e^{λt} − 1)/λ c_k (t c_k if λ = 0).
    lam = np.asarray(lams)
    y0 = x0.numpy() @ p.eigenvectors
    ck = np.zeros(n) if c is None else c @ p.eigenvectors
    phi = t1 * scipy.special.exprel(lam * t1)
    expected = (y0 * np.exp(lam * t1) + phi * ck) @ p.eigenvectors.T
    actual = p.exact(0.0, t1, x0).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    if t1 > 10 * FD_STEP:
        _check_ode(p, x0, t1, rtol=1e-5)


@given(
    a=st.floats(-5.0, 1.0),
    b=st.floats(0.1, 30.0) | st.floats(-30.0, -0.1),
    seed=st.integers(0, 2**16),
    t=st.floats(-0.5, 1.0),
)
def test_complex_pair_exact_is_a_scaled_rotation(a, b, seed, t):
    """A = Q[[a, −b], [b, a]]Qᵀ has (A − aI)² = −b²I, so e^{tA} = e^{at}(cos(bt) I +
    sin(bt)/b (A − aI)) (a scaled rotation): ‖x(t)‖ = e^{at}‖x₀‖ and ⟨x(t), x₀⟩ =
    e^{at} cos(bt) ‖x₀‖²."""
    p = complex_pair_linear([complex(a, b)], seed=seed)
    x0 = _x0(2, seed=seed)
    B = p.A - a * np.eye(2)
    np.testing.assert_allclose(B @ B, -b * b * np.eye(2), atol=1e-12 * b * b)
    E = np.exp(a * t) * (np.cos(b * t) * np.eye(2) + np.sin(b * t) / b * B)
    got = p.exact(0.0, t, x0).numpy()
    x = x0.numpy()
    np.testing.assert_allclose(got, x @ E.T, rtol=1e-10, atol=1e-12 * np.exp(a * t))
    norm0 = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.exp(a * t) * norm0, rtol=1e-10)
    np.testing.assert_allclose((got * x).sum(1), np.exp(a * t) * np.cos(b * t) * norm0**2,
                               rtol=0, atol=1e-10 * np.exp(a * t) * norm0.max() ** 2)


def test_dahlquist_exact_is_exponential():
    lam = -3.5
    p = dahlquist(lam)
    x0 = torch.tensor([[1.0], [-2.0], [0.25]], dtype=torch.float64)
    ts = [0.0, 0.1, 1.0, 2.0]
    out = p.exact(0.0, ts, x0)
    assert out.shape == (4, 3, 1)
    expected = torch.stack([x0 * math.exp(lam * t) for t in ts])
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(p.exact(0.5, 1.5, x0), x0 * math.exp(lam), rtol=1e-13, atol=0)
    torch.testing.assert_close(p.f(0.0, x0), lam * x0)


# ----------------------------------------------------------------------------- nonlinear


@pytest.mark.parametrize("make, states", [
    (lambda: van_der_pol(mu=1000.0), [[2.0, 0.0], [-1.3, 0.7], [0.1, -2000.0]]),
    (robertson, [[1.0, 0.0, 0.0], [0.7, 2e-5, 0.3], [0.2, 1e-6, 0.8]]),
])
def test_nonlinear_drift_matches_numpy_and_jacobian_matches_autograd(make, states):
    p = make()
    x = torch.tensor(states, dtype=torch.float64)
    f = p.f(0.0, x)
    assert f.shape == x.shape
    np.testing.assert_allclose(f.numpy(), np.stack([p.f_numpy(0.0, s) for s in states]),
                               rtol=1e-15)
    assert p.f(0.0, x.float()).dtype == torch.float32
    for s in x:
        auto = torch.autograd.functional.jacobian(lambda y: p.f(0.0, y[None])[0], s)
        np.testing.assert_allclose(p.jac(0.0, s.numpy()), auto.numpy(), rtol=1e-14, atol=1e-12)


def test_robertson_reference_conserves_mass_and_matches_literature():
    p = robertson()
    t_eval = np.concatenate([[0.0, 40.0], np.logspace(-5, 5, 30)])
    t_eval.sort()
    y = p.reference(t_eval)
    assert y.shape == (t_eval.size, 3)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-8)
    # Widely tabulated reference values at t = 40 (e.g. Hairer & Wanner, Vol. II, §IV.10).
    at40 = y[np.searchsorted(t_eval, 40.0)]
    np.testing.assert_allclose(at40, [0.7158270687, 9.185534764e-6, 0.2841637457], rtol=1e-7)
    # Cached results are returned as independent copies.
    y[:] = 0.0
    assert p.reference(t_eval).sum() > 0


def test_van_der_pol_period():
    mu = 1000.0
    p = van_der_pol(mu)
    t = np.arange(0.0, 2600.0, 0.25)
    x1 = p.reference(t, rtol=1e-8, atol=1e-10)[:, 0]
    down = np.nonzero((x1[:-1] > 0) & (x1[1:] <= 0))[0]  # downward zero crossings (fast jumps)
    assert down.size == 2
    crossings = t[down] + x1[down] / (x1[down] - x1[down + 1]) * (t[down + 1] - t[down])
    period = crossings[1] - crossings[0]
    assert period == pytest.approx((3 - 2 * math.log(2)) * mu, rel=0.02)


def test_reference_at_initial_time_only():
    p = robertson()
    np.testing.assert_array_equal(p.reference([0.0, 0.0]), np.tile(p.x0, (2, 1)))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call", [
    lambda: LinearProblem(np.ones((2, 3))),
    lambda: LinearProblem(np.ones(3)),
    lambda: LinearProblem(np.eye(2), c=np.ones(3)),
    lambda: symmetric_linear([1.0, float("nan")]),
    lambda: symmetric_linear([]),
    lambda: nonnormal_linear([-1.0, -2.0], 0.5),
    lambda: nonnormal_linear([-1.0, float("inf")], 2.0),
    lambda: nonnormal_linear([-1.0], 2.0),
    lambda: symmetric_with_gap(4, 10.0, 0.0),
    lambda: symmetric_with_gap(4, 10.0, 1.0),
    lambda: symmetric_with_gap(4, -10.0, 0.5),
    lambda: symmetric_with_gap(0, 10.0, 0.5),
    lambda: symmetric_with_gap(4, 10.0, 0.5, sign=2),
    lambda: complex_pair_linear([1.0 + 0j]),
    lambda: complex_pair_linear([]),
    lambda: jordan_like_linear(-1.0, 5.0, 0),
    lambda: dahlquist(1 + 2j),
    lambda: dahlquist(float("nan")),
    lambda: van_der_pol(x0=(1.0, 2.0, 3.0)),
    lambda: van_der_pol(mu=-1.0),
    lambda: robertson(x0=(1.0, 0.0)),
    lambda: robertson(t_span=(1.0, 0.0)),
    lambda: robertson().reference([1.0, 0.5]),
    lambda: robertson().reference([0.0, 2e5]),
    lambda: robertson().reference([1.0], rtol=0.0),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError, match="`"):
        call()


def test_bad_state_shape_raises_value_error():
    p = symmetric_linear([-1.0, -2.0])
    for bad in (torch.zeros(3, 3), torch.zeros(2), torch.zeros(2, 2, 1)):
        with pytest.raises(ValueError, match="`x"):
            p.exact(0.0, 1.0, bad)
    with pytest.raises(ValueError, match="`x`"):
        p.f(0.0, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="`x0`"):
        p.exact(0.0, 1.0, torch.full((1, 2), float("nan")))
    with pytest.raises(ValueError, match="`t1`"):
        p.exact(0.0, [[1.0]], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="`x`"):
        van_der_pol().jac(0.0, np.zeros(3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: symmetric_linear([1.0, 2.0], seed=-1), "`seed` must be a non-negative integer"),
        (lambda: symmetric_linear([1.0, 2.0], seed=1.5), "`seed` must be a non-negative integer"),
        (lambda: nonnormal_linear([1.0, 2.0], 2.0, seed="a"), "`seed` must be a non-negative"),
        (lambda: dahlquist(-1.0).exact(0.0, "a", torch.ones(2, 1)), "`t1` must be a real time"),
        (lambda: dahlquist(-1.0).exact(0.0, 1j, torch.ones(2, 1)), "`t1` must be a real time"),
        (lambda: dahlquist(-1.0).exact(0.0, [], torch.ones(2, 1)), "non-empty 1-D sequence"),
    ],
)
def test_seeds_and_times_are_named(call, message):
    """Issue 12: numpy's SeedSequence errors, float() errors and np.stack's "need at least
    one array" before."""
    with pytest.raises(ValueError, match=message):
        call()
