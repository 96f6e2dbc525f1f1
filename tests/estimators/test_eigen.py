"""Tests for stiffkit.estimators.eigen: JVP paths against jacrev, eigen-estimators on known spectra."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd.function import once_differentiable

from stiffkit.estimators.eigen import (
    arpack_eig,
    dominant_eig,
    eig_dense,
    jacobian_dense,
    jvp_operator,
    power_iteration,
)

DT = torch.float64
EPS = torch.finfo(DT).eps
#: Roundoff allowance of a float64 eigen-solve / residual evaluation, relative to |λ₁|:
#: building J = Q diag(λ) Qᵀ and applying it perturbs eigenvalues by ~n eps |λ₁| (n <= 8).
ROUNDOFF = 1000 * EPS
#: Forward / double-backward JVPs are exact up to roundoff of a few matmuls.
AD_RTOL = 1e-12
#: Central differences with h = eps^(1/3) (1 + |x|) / |v| have error ~ eps^(2/3) (1 + |x|)^2
#: times |f'''| (truncation) plus eps |f| / h (roundoff); for the tanh MLP below
#: (|f'''| = O(1), |x| ~ 3) that is ~4e-11 * 16 ≈ 6e-10, so 1e-8 leaves a 15x margin
#: (measured: 4e-11, see test_fd_is_worse_than_ad_but_within_its_budget).
FD_RTOL = 1e-8


# --- test fields -------------------------------------------------------------------------


class TanhNoForward(torch.autograd.Function):
    """tanh with backward only (old-style Function): torch.func.jvp rejects it."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)  # differentiable: double backward works


class TanhOnce(TanhNoForward):
    """tanh with neither forward mode nor double backward."""

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


ACTIVATIONS = {"tanh": torch.tanh, "no_forward": TanhNoForward.apply, "once": TanhOnce.apply}


def make_mlp(dims, act="tanh", width=16, seed=1):
    """Nonlinear batched drift on ``[batch, *dims]`` with a per-sample time dependence."""
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(dims)
    w1 = torch.randn(width, n, generator=gen, dtype=DT) / math.sqrt(n)
    w2 = torch.randn(n, width, generator=gen, dtype=DT) / math.sqrt(width)
    b1 = torch.randn(width, generator=gen, dtype=DT)
    phi = ACTIVATIONS[act]

    def f(t, x):
        t_col = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)  # scalar, [1] or [batch]
        h = phi(x.reshape(x.shape[0], -1) @ w1.T + b1 * (1 + t_col))
        return (h @ w2.T).reshape(x.shape) - 0.5 * x

    return f


def block_jacobian(f, t, x):
    """Per-sample Jacobian blocks [batch, n, n] of the batched jacrev Jacobian."""
    batch, n = x.shape[0], x[0].numel()
    full = torch.func.jacrev(lambda y: f(t, y))(x).reshape(batch, n, batch, n)
    return torch.stack([full[i, :, i, :] for i in range(batch)])


def linear_field(jac):
    """f(t, x) = J_t x with J: [batch, n, n]; `t` carries the sample index (see `ids`).

    The estimators evaluate f on single samples (arpack, dense) with t sliced alongside x,
    so indexing J by t keeps sample i's Jacobian J_i wherever it is evaluated.
    """
    return lambda t, x: torch.einsum("bij,bj->bi", jac[t.long()], x)


def ids(x):
    """Per-sample times 0, 1, ..., batch - 1 for `linear_field`."""
    return torch.arange(x.shape[0], dtype=DT)


def apply_blocks(jac, v):
    return torch.einsum("bij,bj->bi", jac, v.reshape(v.shape[0], -1)).reshape(v.shape)


# --- JVP operator ------------------------------------------------------------------------

DIMS = (2, 3)
T = torch.tensor([0.3, -0.2, 0.7, 1.1], dtype=DT)  # per-sample time, [batch]


def _point(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, *DIMS, generator=gen, dtype=DT)
    v = torch.randn(4, *DIMS, generator=gen, dtype=DT)
    return x, v


@pytest.mark.parametrize(
    "act, method, expected, rtol",
    [
        ("tanh", "forward", "forward", AD_RTOL),
        ("tanh", "vjp", "vjp", AD_RTOL),
        ("tanh", "fd", "fd", FD_RTOL),
        ("no_forward", "vjp", "vjp", AD_RTOL),
        ("once", "fd", "fd", FD_RTOL),
        ("tanh", "auto", "forward", AD_RTOL),
        ("no_forward", "auto", "vjp", AD_RTOL),
        ("once", "auto", "fd", FD_RTOL),
    ],
)
def test_jvp_matches_jacrev(act, method, expected, rtol):
    x, v = _point()
    reference = apply_blocks(block_jacobian(make_mlp(DIMS), T, x), v)  # plain tanh: same math
    op = jvp_operator(make_mlp(DIMS, act), T, x, method=method)
    jv = op(v)
    assert op.method == expected and op.num_products == 1
    assert jv.shape == x.shape and op.shape == x.shape and op.dtype == DT
    err = (jv - reference).reshape(4, -1).norm(dim=1) / reference.reshape(4, -1).norm(dim=1)
    assert err.max() <= rtol
    op(2 * v)  # linear in v, and counted
    assert op.num_products == 2
    assert torch.allclose(op(2 * v), 2 * jv, rtol=10 * rtol, atol=0)


def test_fd_is_worse_than_ad_but_within_its_budget():
    # Guards FD_RTOL from being trivially loose: fd error is real but far below the bound.
    x, v = _point(1)
    f = make_mlp(DIMS)
    exact = jvp_operator(f, T, x, method="forward")(v)
    err = ((jvp_operator(f, T, x, method="fd")(v) - exact).norm() / exact.norm()).item()
    assert 1e-14 < err < FD_RTOL


def test_jvp_samples_are_independent():
    x, v = _point(2)
    v[1:] = 0  # J is block-diagonal: zero directions give zero products, sample 0 unchanged
    for method in ("forward", "vjp", "fd"):
        jv = jvp_operator(make_mlp(DIMS), T, x, method=method)(v)
        assert torch.all(jv[1:] == 0)
        assert jv[0].abs().max() > 0


def test_jvp_does_not_touch_caller_graph():
    x, v = _point(3)
    x.requires_grad_(True)
    for method in ("forward", "vjp", "fd"):
        with torch.no_grad():  # the vjp path must still work under the caller's no_grad
            jv = jvp_operator(make_mlp(DIMS), T, x, method=method)(v)
        assert not jv.requires_grad
        assert x.grad is None


@pytest.mark.parametrize("t", [0.3, torch.tensor(0.3, dtype=DT), torch.tensor([0.3], dtype=DT)])
def test_time_may_be_float_or_0d(t):
    x, v = _point(10)
    f = make_mlp(DIMS)
    reference = apply_blocks(block_jacobian(f, t, x), v)
    for method in ("forward", "vjp"):
        torch.testing.assert_close(jvp_operator(f, t, x, method=method)(v), reference)
    torch.testing.assert_close(jacobian_dense(f, t, x), block_jacobian(f, t, x))


def test_jacobian_dense_matches_jacrev_blocks():
    x, _ = _point(4)
    f = make_mlp(DIMS)
    jac = jacobian_dense(f, T, x)
    assert jac.shape == (4, 6, 6)
    torch.testing.assert_close(jac, block_jacobian(f, T, x), rtol=AD_RTOL, atol=AD_RTOL)


def test_eig_dense_returns_all_pairs_sorted():
    x, _ = _point(5)
    spec = eig_dense(make_mlp(DIMS), T, x)
    jac = block_jacobian(make_mlp(DIMS), T, x)
    assert spec.values.shape == (4, 6) and spec.vectors.shape == (4, 6, *DIMS)
    mod = spec.values.abs()
    assert torch.all(mod[:, :-1] >= mod[:, 1:])
    vecs = spec.vectors.reshape(4, 6, 6)
    # every returned pair (dominant, second, ...) is an eigenpair of unit norm
    cols = vecs.transpose(1, 2)  # [batch, n, k]: eigenvectors as columns
    resid = jac.to(cols.dtype) @ cols - cols * spec.values[:, None]
    assert resid.abs().max() <= 1e3 * EPS * mod.max()
    torch.testing.assert_close(vecs.abs().pow(2).sum(-1), torch.ones(4, 6, dtype=DT))
    assert spec.num_products == 4 * 6


# --- linear systems with known spectra ---------------------------------------------------


@st.composite
def symmetric_systems(draw):
    """Per-sample symmetric J = Q diag(λ) Qᵀ with |λ₂| / |λ₁| = `ratio` <= 0.8."""
    n = draw(st.integers(2, 8))
    batch = draw(st.integers(1, 3))
    ratio = draw(st.floats(0.0, 0.8))
    scale = draw(st.floats(0.1, 100.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    jacs, lams, q1s = [], [], []
    for _ in range(batch):
        lam1 = scale * rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0])
        rest = rng.uniform(-ratio, ratio, n - 1) * abs(lam1)
        rest[0] = ratio * abs(lam1) * rng.choice([-1.0, 1.0])  # attains the gap
        lam = np.concatenate([[lam1], rest])
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        jacs.append(q @ np.diag(lam) @ q.T)
        lams.append(lam)
        q1s.append(q[:, 0])
    as_t = lambda a: torch.tensor(np.array(a))  # noqa: E731
    return as_t(jacs), as_t(lams), as_t(q1s), int(rng.integers(2**31))


def check_certificate(value, vector, residual, system, rtol):
    """Assert the estimate is λ₁ and that the returned residual certifies it (symmetric J).

    Krylov–Weinstein: some eigenvalue lies within r of λ_est; Kato–Temple: λ₁ lies within
    r² / δ, δ the distance of λ_est to the rest of the spectrum; Davis–Kahan:
    sin∠(v, q₁) <= r / δ. Each bound gets ROUNDOFF·|λ₁| (relative: ROUNDOFF) for
    evaluating r itself in floating point.
    """
    jac, lams, q1, _ = system
    lam1 = lams[:, 0]
    slack = ROUNDOFF * lam1.abs()
    err = (value - lam1).abs()
    delta = (value[:, None] - lams[:, 1:]).abs().min(dim=1).values
    assert torch.all(err <= residual + slack)
    assert torch.all(err <= residual**2 / delta + slack)
    assert torch.all(err <= rtol * lam1.abs() + slack)
    true_r = (apply_blocks(jac, vector) - value[:, None] * vector).norm(dim=1)
    assert torch.all((residual - true_r).abs() <= slack)
    torch.testing.assert_close(vector.norm(dim=1), torch.ones_like(value))
    sin = (vector - (vector * q1).sum(1, keepdim=True) * q1).norm(dim=1)
    assert torch.all(sin <= residual / delta + ROUNDOFF)


@given(symmetric_systems())
def test_power_iteration_recovers_dominant(system):
    jac, _, _, seed = system
    x = torch.zeros(jac.shape[0], jac.shape[1], dtype=DT)
    op = jvp_operator(linear_field(jac), ids(x), x)
    gen = torch.Generator().manual_seed(int(seed))
    tol = 1e-6
    res = power_iteration(op, torch.zeros_like(x), tol=tol, generator=gen)
    assert bool(res.converged.all())
    assert torch.all(res.residual <= tol * res.value.abs())
    assert res.num_products == op.num_products == res.num_iter
    check_certificate(res.value, res.vector, res.residual, system, tol)


@given(symmetric_systems(), st.booleans())
def test_arpack_recovers_dominant(system, symmetric):
    jac, _, _, seed = system
    x = torch.zeros(jac.shape[0], jac.shape[1], dtype=DT)
    tol = 1e-8
    spec = arpack_eig(linear_field(jac), ids(x), x, symmetric=symmetric, tol=tol,
                      generator=torch.Generator().manual_seed(int(seed)))
    assert bool(spec.converged.all()) and not spec.values.is_complex()
    assert spec.values.shape == (x.shape[0], 1) and spec.num_products > 0
    check_certificate(spec.values[:, 0], spec.vectors[:, 0], spec.residuals[:, 0], system, tol)


@given(symmetric_systems(), st.booleans())
def test_dense_is_exact(system, symmetric):
    jac, lams, _, _ = system
    x = torch.zeros(jac.shape[0], jac.shape[1], dtype=DT)
    dom = dominant_eig(linear_field(jac), ids(x), x, "dense", symmetric=symmetric)
    assert not dom.value.is_complex()
    assert torch.all((dom.value - lams[:, 0]).abs() <= ROUNDOFF * lams[:, 0].abs())
    assert torch.all(dom.residual <= ROUNDOFF * lams[:, 0].abs())
    assert dom.num_products == x.shape[0] * x.shape[1]


@pytest.mark.parametrize("method", ["power", "arpack", "dense"])
def test_dominant_eig_agrees_and_counts(method):
    gen = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(2, 10, 10, generator=gen, dtype=DT))
    lam = torch.tensor([[-8.0, 4, 3, 2, 1, 0.5, 0.3, 0.2, 0.1, 0.0],
                        [5.0, -2, 1, 1, 0.5, 0.5, 0.1, 0, 0, 0]], dtype=DT)
    jac = q @ torch.diag_embed(lam) @ q.transpose(1, 2)
    x = torch.zeros(2, 10, dtype=DT)
    dom = dominant_eig(linear_field(jac), ids(x), x, method,
                       symmetric=True, generator=torch.Generator().manual_seed(0))
    assert dom.method == method and dom.value.shape == (2,) and dom.vector.shape == (2, 10)
    assert torch.all((dom.value - lam[:, 0]).abs() <= 1e-6 * lam[:, 0].abs())
    assert dom.num_products >= 2 and bool(dom.converged.all())


def test_per_sample_time_is_sliced():
    # J_i = t_i A: each sample's dominant eigenvalue scales with its own t_i.
    a = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=DT))
    t = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    f = lambda t, x: t.reshape(-1, 1) * (x @ a.T)  # noqa: E731 - needs t: [batch] or [1]
    x = torch.ones(3, 4, dtype=DT)
    for method in ("power", "arpack", "dense"):
        dom = dominant_eig(f, t, x, method, symmetric=True)
        torch.testing.assert_close(dom.value, 3.0 * t, rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", ["power", "arpack", "dense"])
def test_float32_state(method):
    # Products run in float32: accuracy is limited to ~sqrt(eps32) = 3e-4 (ARPACK's default
    # tol there) and power iteration's tol must sit above float32 roundoff (~1e-7 |λ|).
    lam = torch.tensor([6.0, -3.0, 2.0, 1.0, 0.5])
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(2)))
    jac = (q @ torch.diag(lam) @ q.T).expand(2, 5, 5)
    x = torch.zeros(2, 5)
    dom = dominant_eig(linear_field(jac), ids(x), x, method, symmetric=True, tol=1e-4)
    assert dom.value.dtype == torch.float32 and dom.vector.dtype == torch.float32
    torch.testing.assert_close(dom.value, torch.full((2,), 6.0), rtol=1e-3, atol=0)


# --- complex dominant pair ---------------------------------------------------------------


def complex_system():
    """Non-symmetric J = S B S⁻¹, B = [[a, -b], [b, a]] ⊕ diag(small): λ₁ = a ± ib."""
    gen = torch.Generator().manual_seed(3)
    a, b = 2.0, 3.0
    blk = torch.zeros(6, 6, dtype=DT)
    blk[:2, :2] = torch.tensor([[a, -b], [b, a]], dtype=DT)
    blk[2:, 2:] = torch.diag(torch.tensor([1.5, -1.0, 0.5, 0.1], dtype=DT))
    s = torch.eye(6, dtype=DT) + 0.3 * torch.randn(6, 6, generator=gen, dtype=DT)
    jac = (s @ blk @ torch.linalg.inv(s)).expand(2, 6, 6).clone()
    return jac, complex(a, b)


@pytest.mark.parametrize("method", ["arpack", "dense"])
def test_complex_pair_found_by_arpack_and_dense(method):
    jac, lam1 = complex_system()
    x = torch.zeros(2, 6, dtype=DT)
    dom = dominant_eig(linear_field(jac), ids(x), x, method)
    assert dom.value.is_complex() and dom.vector.is_complex()
    # either member of the conjugate pair is the dominant eigenvalue
    err = torch.minimum((dom.value - lam1).abs(), (dom.value - lam1.conjugate()).abs())
    assert torch.all(err <= 1e-7 * abs(lam1))
    assert torch.all(dom.residual <= 1e-7 * abs(lam1))
    true_r = (apply_blocks(jac.to(dom.vector.dtype), dom.vector) - dom.value[:, None] * dom.vector)
    torch.testing.assert_close(true_r.norm(dim=1), dom.residual, rtol=0, atol=1e-10)


def test_complex_only_when_genuinely_complex():
    jac, _ = complex_system()
    real = torch.diag(torch.tensor([-4.0, 2, 1, 1, 0.5, 0.1], dtype=DT))
    jac[1] = real + torch.triu(torch.ones(6, 6, dtype=DT), 1)  # non-normal, real spectrum
    x = torch.zeros(2, 6, dtype=DT)
    mixed = dominant_eig(linear_field(jac), ids(x), x, "dense")
    assert mixed.value.is_complex() and mixed.value[1].imag == 0
    only_real = dominant_eig(linear_field(jac[1:]), ids(x[1:]), x[1:], "dense")
    assert not only_real.value.is_complex()
    assert only_real.value.item() == pytest.approx(-4.0, rel=1e-12)


def test_power_iteration_flags_complex_pair():
    jac, lam1 = complex_system()
    x = torch.zeros(2, 6, dtype=DT)
    dom = dominant_eig(linear_field(jac), ids(x), x, "power", max_iter=200, tol=1e-6)
    assert not dom.value.is_complex()
    assert not bool(dom.converged.any())
    assert torch.all(dom.residual > 1e-6 * dom.value.abs())
    assert dom.num_products == 200 * 2


# --- determinism and warm start ----------------------------------------------------------


def test_same_seed_same_result():
    x, _ = _point(6)
    f = make_mlp(DIMS)
    runs = [dominant_eig(f, T, x, "power", generator=torch.Generator().manual_seed(11))
            for _ in range(2)]
    assert torch.equal(runs[0].value, runs[1].value)
    assert torch.equal(runs[0].vector, runs[1].vector)
    other = dominant_eig(f, T, x, "power", generator=torch.Generator().manual_seed(12), max_iter=3)
    first = dominant_eig(f, T, x, "power", generator=torch.Generator().manual_seed(11), max_iter=3)
    assert not torch.equal(other.vector, first.vector)  # the seed is actually used
    arp = [arpack_eig(f, T, x, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(arp[0].values, arp[1].values)


@given(symmetric_systems())
def test_warm_start_from_eigenvector_converges_at_once(system):
    jac, lams, q1, _ = system
    res = power_iteration(lambda v: apply_blocks(jac, v), q1.clone())
    assert res.num_iter <= 2 and bool(res.converged.all())
    assert torch.all((res.value - lams[:, 0]).abs() <= ROUNDOFF * lams[:, 0].abs())


def test_zero_samples_of_v0_are_replaced():
    a = torch.diag(torch.tensor([5.0, 1.0, 0.5], dtype=DT)).expand(2, 3, 3)
    v0 = torch.tensor([[1.0, 0, 0], [0, 0, 0]], dtype=DT)
    gen = torch.Generator().manual_seed(0)
    res = power_iteration(lambda v: apply_blocks(a, v), v0, generator=gen)
    assert res.num_iter > 1 and bool(res.converged.all())
    torch.testing.assert_close(res.value, torch.tensor([5.0, 5.0], dtype=DT), rtol=1e-6, atol=0)


# --- bad input ---------------------------------------------------------------------------


def test_bad_inputs_raise():
    x, v = _point(8)
    f = make_mlp(DIMS)
    with pytest.raises(ValueError, match="`matvec`"):
        power_iteration(lambda v: v[:, :1], v)
    with pytest.raises(ValueError, match="`v0`"):
        power_iteration(lambda v: v, v.clone().fill_(math.nan))
    bad = x.clone()
    bad[0, 0, 0] = math.nan
    for call in (lambda: jvp_operator(f, T, bad), lambda: jacobian_dense(f, T, bad),
                 lambda: dominant_eig(f, T, bad, "power"), lambda: arpack_eig(f, T, bad)):
        with pytest.raises(ValueError, match="`x`"):
            call()
    with pytest.raises(ValueError, match="'power', 'arpack', 'dense'"):
        dominant_eig(f, T, x, "lanczos")
    with pytest.raises(ValueError, match="`method`"):
        jvp_operator(f, T, x, method="reverse")
    for call in (lambda: dominant_eig(f, T, x, "power", v0=v[:2]),
                 lambda: arpack_eig(f, T, x, v0=v[..., :2])):
        with pytest.raises(ValueError, match="`v0`"):
            call()
    with pytest.raises(ValueError, match="`v`"):
        jvp_operator(f, T, x)(v[:2])
    with pytest.raises(TypeError, match="`v0`"):
        power_iteration(lambda v: v, [[1.0]])


@pytest.mark.parametrize("method", ["auto", "forward", "vjp", "fd"])
def test_wrong_shape_drift_raises_for_every_path(method):
    x, v = _point(9)
    with pytest.raises(ValueError, match="`f`"):
        jvp_operator(lambda t, y: y.reshape(4, -1), T, x, method=method)(v)
