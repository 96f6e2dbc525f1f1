"""Tests for stiffkit.estimators.eigen: eigen-estimators on known spectra, one result type."""

import math

import numpy as np
import pytest
import torch
from _jacobian_fields import (
    DIMS,
    DT,
    EPS,
    T,
    apply_blocks,
    block_jacobian,
    ids,
    linear_field,
    make_mlp,
    point,
)
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.estimators.eigen import (
    EigResult,
    arpack_eig,
    dominant_eig,
    eig_dense,
    power_iteration,
    sorted_eig,
)
from stiffkit.estimators.jvp import jacobian_dense, jvp_operator

#: Roundoff allowance of a float64 eigen-solve / residual evaluation, relative to |λ₁|:
#: building J = Q diag(λ) Qᵀ and applying it perturbs eigenvalues by ~n eps |λ₁| (n <= 8).
ROUNDOFF = 1000 * EPS


def test_eig_dense_returns_all_pairs_sorted():
    x, _ = point(5)
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
    # Products per sample (was: 4 * 6 summed over the batch): n = 6 basis vectors each.
    assert spec.num_products.tolist() == [6] * 4 and spec.method == "dense"


# --- one result type, one product count ----------------------------------------------------


def test_every_estimator_returns_one_result_type():
    x, _ = point(11)
    f = make_mlp(DIMS)
    op = jvp_operator(f, T, x, method="forward")
    results = {
        "power": power_iteration(op, torch.zeros_like(x), max_iter=7, tol=0.0),
        "arpack": arpack_eig(f, T, x, k=2),
        "dense": eig_dense(f, T, x),
        **{f"dominant_{m}": dominant_eig(f, T, x, m) for m in ("power", "arpack", "dense")},
    }
    k = {"power": 1, "arpack": 2, "dense": 6}
    for name, res in results.items():
        method = name.removeprefix("dominant_")
        kk = 1 if name.startswith("dominant_") else k[name]
        assert isinstance(res, EigResult) and res.method == method, name
        assert res.values.shape == res.residuals.shape == (4, kk), name
        assert res.vectors.shape == (4, kk, *DIMS), name
        assert res.converged.shape == (4,) and res.converged.dtype == torch.bool, name
        assert res.num_products.shape == (4,) and res.num_products.dtype == torch.int64, name
        assert torch.equal(res.value, res.values[:, 0]), name
        assert torch.equal(res.vector, res.vectors[:, 0]), name
        assert torch.equal(res.residual, res.residuals[:, 0]), name
    # Power iteration spends one batched product per iteration: 7 per sample, as the operator.
    assert results["power"].num_products.tolist() == [7] * 4 == [op.num_products] * 4
    assert results["dense"].num_products.tolist() == [6] * 4  # n basis vectors per sample


def test_arpack_counts_each_samples_own_products():
    # Samples converge at different rates; entry i is what sample i alone costs.
    gen = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(3, 30, 30, generator=gen, dtype=DT))
    lam = torch.linspace(1.0, 0.0, 30, dtype=DT).repeat(3, 1)
    lam[:, 0] = torch.tensor([100.0, 1.05, 1.3], dtype=DT)  # large, tiny and medium gaps
    jac = q @ torch.diag_embed(lam) @ q.transpose(1, 2)
    x = torch.zeros(3, 30, dtype=DT)
    v0 = torch.randn(3, 30, generator=gen, dtype=DT)
    batch = arpack_eig(linear_field(jac), ids(x), x, symmetric=True, v0=v0)
    alone = [arpack_eig(linear_field(jac[i : i + 1]), ids(x[:1]), x[:1], symmetric=True,
                        v0=v0[i : i + 1]).num_products.item() for i in range(3)]
    assert batch.num_products.tolist() == alone
    assert len(set(alone)) > 1  # the counts do differ between samples


def test_sorted_eig_orders_by_modulus_with_columns_as_vectors():
    gen = torch.Generator().manual_seed(9)
    jac = torch.randn(3, 5, 5, generator=gen, dtype=DT)
    for symmetric in (False, True):
        values, vectors = sorted_eig(jac, symmetric=symmetric)
        mod = values.abs()
        assert torch.all(mod[:, :-1] >= mod[:, 1:])
        target = 0.5 * (jac + jac.transpose(1, 2)) if symmetric else jac
        resid = target.to(vectors.dtype) @ vectors - vectors * values[:, None]
        assert resid.abs().max() <= 1e3 * EPS * mod.max()
    # Real spectra come back real; ties keep LAPACK's order (stable sort).
    values, vectors = sorted_eig(torch.diag(torch.tensor([1.0, -3.0, 3.0, 2.0], dtype=DT))[None])
    assert not values.is_complex() and values[0].tolist() == [-3.0, 3.0, 2.0, 1.0]
    assert vectors[0, :, 0].abs().tolist() == [0.0, 1.0, 0.0, 0.0]  # a column, not a row
    with pytest.raises(ValueError, match="`jac`"):
        sorted_eig(torch.ones(2, 3))


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
    # One product per sample per iteration (the iteration count `num_iter` is gone).
    assert res.num_products.tolist() == [op.num_products] * x.shape[0]
    check_certificate(res.value, res.vector, res.residual, system, tol)


@given(symmetric_systems(), st.booleans())
def test_arpack_recovers_dominant(system, symmetric):
    jac, _, _, seed = system
    x = torch.zeros(jac.shape[0], jac.shape[1], dtype=DT)
    tol = 1e-8
    spec = arpack_eig(linear_field(jac), ids(x), x, symmetric=symmetric, tol=tol,
                      generator=torch.Generator().manual_seed(int(seed)))
    assert bool(spec.converged.all()) and not spec.values.is_complex()
    assert spec.values.shape == (x.shape[0], 1) and bool((spec.num_products > 0).all())
    check_certificate(spec.values[:, 0], spec.vectors[:, 0], spec.residuals[:, 0], system, tol)


@given(symmetric_systems(), st.booleans())
def test_dense_is_exact(system, symmetric):
    jac, lams, _, _ = system
    x = torch.zeros(jac.shape[0], jac.shape[1], dtype=DT)
    dom = dominant_eig(linear_field(jac), ids(x), x, "dense", symmetric=symmetric)
    assert not dom.value.is_complex()
    assert torch.all((dom.value - lams[:, 0]).abs() <= ROUNDOFF * lams[:, 0].abs())
    assert torch.all(dom.residual <= ROUNDOFF * lams[:, 0].abs())
    # Products per sample (was: batch * n summed over the batch): n basis vectors each.
    assert dom.num_products.tolist() == [x.shape[1]] * x.shape[0]


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
    assert bool((dom.num_products >= 2).all()) and bool(dom.converged.all())


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
    jac, _ = complex_system()
    x = torch.zeros(2, 6, dtype=DT)
    dom = dominant_eig(linear_field(jac), ids(x), x, "power", max_iter=200, tol=1e-6)
    assert not dom.value.is_complex()
    assert not bool(dom.converged.any())
    assert torch.all(dom.residual > 1e-6 * dom.value.abs())
    # Products per sample (was: 200 * 2 summed over the batch of 2).
    assert dom.num_products.tolist() == [200, 200]


# --- determinism and warm start ----------------------------------------------------------


def test_same_seed_same_result():
    x, _ = point(6)
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
    assert bool((res.num_products <= 2).all()) and bool(res.converged.all())  # = iterations
    assert torch.all((res.value - lams[:, 0]).abs() <= ROUNDOFF * lams[:, 0].abs())


def test_zero_samples_of_v0_are_replaced():
    a = torch.diag(torch.tensor([5.0, 1.0, 0.5], dtype=DT)).expand(2, 3, 3)
    v0 = torch.tensor([[1.0, 0, 0], [0, 0, 0]], dtype=DT)
    gen = torch.Generator().manual_seed(0)
    res = power_iteration(lambda v: apply_blocks(a, v), v0, generator=gen)
    assert bool((res.num_products > 1).all()) and bool(res.converged.all())  # = iterations
    torch.testing.assert_close(res.value, torch.tensor([5.0, 5.0], dtype=DT), rtol=1e-6, atol=0)


# --- bad input ---------------------------------------------------------------------------


def test_bad_inputs_raise():
    x, v = point(8)
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


@pytest.mark.parametrize(("drift", "match"), [
    (lambda t, y: 0.0 * y, "ARPACK failed on sample 0 .*zero or rank-deficient Jacobian"),
    (lambda t, y: y * float("nan"), "Jacobian-vector product of sample 0 is NaN or Inf"),
])
def test_arpack_on_a_zero_or_nan_drift_raises_a_clear_error(drift, match):
    x = torch.randn(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        arpack_eig(drift, 0.0, x)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda f, x: power_iteration(None, x), TypeError, "`matvec` must be callable"),
        (lambda f, x: power_iteration(lambda v: v, x[:0]), ValueError, "`v0` has an empty batch"),
        (lambda f, x: power_iteration(lambda v: v, 0 * x, generator=3), TypeError,
         "`generator` must be a torch.Generator"),
        (lambda f, x: arpack_eig(f, 0.0, x[:0]), ValueError, "`x` has an empty batch"),
        (lambda f, x: arpack_eig(f, 0.0, x, jvp_method="bad"), ValueError, "`jvp_method`"),
        (lambda f, x: dominant_eig(f, 0.0, x[:0], "dense"), ValueError, "`x` has an empty batch"),
        (lambda f, x: dominant_eig(f, 0.0, x, "dense", max_iter=-5), ValueError, "`max_iter`"),
        (lambda f, x: dominant_eig(f, 0.0, x, "dense", tol="a"), ValueError, "`tol`"),
        (lambda f, x: dominant_eig(lambda t, y: y * float("nan"), 0.0, x, "dense"), ValueError,
         "the Jacobian at x` contains NaN or Inf"),
    ],
)
def test_bad_input_is_named(call, exc, message):
    """Issue 12: empty batches and bad generators were raw torch errors, settings the method
    ignores were not checked, a NaN Jacobian failed inside torch.linalg.eig."""
    x = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(exc, match=message):
        call(lambda t, y: -y, x)
