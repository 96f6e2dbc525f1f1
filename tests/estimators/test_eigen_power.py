"""Power iteration's first steps in closed form: the unit start and the Rayleigh quotient.

Truth: hand-computed iterates on ``diag(3, 1)`` and, on symmetric matrices with a known
spectrum, the Rayleigh quotient ``vᵀJv / vᵀv`` of the normalised start evaluated in numpy.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.estimators.eigen import power_iteration

F64 = torch.float64


def _matvec(jac):
    """``v -> J_b v`` per sample for ``jac: [batch, n, n]``."""
    return lambda v: torch.einsum("bij,bj->bi", jac, v)


def test_first_iterates_on_a_diagonal_matrix():
    """J = diag(3, 1) from v0 = (2, 2): the iteration starts from v0/‖v0‖ = (1, 1)/√2, so
    λ = 2 with residual ‖(1, −1)/√2‖ = 1; then v = (3, 1)/√10, λ = 28/10, residual 0.6."""
    jac = torch.diag(torch.tensor([3.0, 1.0], dtype=F64))[None]
    v0 = torch.tensor([[2.0, 2.0]], dtype=F64)
    one = power_iteration(_matvec(jac), v0, max_iter=1, tol=0.0)
    assert float(one.value[0]) == pytest.approx(2.0, rel=1e-15)
    assert float(one.residual[0]) == pytest.approx(1.0, rel=1e-15)
    torch.testing.assert_close(one.vector, v0 / 8**0.5, rtol=1e-15, atol=0)
    two = power_iteration(_matvec(jac), v0, max_iter=2, tol=0.0)
    assert float(two.value[0]) == pytest.approx(2.8, rel=1e-15)
    assert float(two.residual[0]) == pytest.approx(0.6, rel=1e-14)
    torch.testing.assert_close(two.vector, torch.tensor([[3.0, 1.0]], dtype=F64) / 10**0.5,
                               rtol=1e-15, atol=0)
    # An eigenvector of any length converges at the first product.
    warm = power_iteration(_matvec(jac), torch.tensor([[-7.5, 0.0]], dtype=F64))
    assert bool(warm.converged.all()) and warm.num_products.tolist() == [1]
    assert float(warm.value[0]) == 3.0 and float(warm.residual[0]) == 0.0


@st.composite
def spectra(draw):
    """Symmetric ``J = Q diag(λ) Qᵀ`` ``[batch, n, n]`` with a gap ``|λ₂| ≤ 0.7 |λ₁|``, and a
    random start ``[batch, n]``."""
    n = draw(st.integers(2, 6))
    batch = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    jacs = []
    for _ in range(batch):
        lam1 = rng.uniform(0.5, 50.0) * rng.choice([-1.0, 1.0])
        lam = np.concatenate([[lam1], rng.uniform(-0.7, 0.7, n - 1) * abs(lam1)])
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        jacs.append(q @ np.diag(lam) @ q.T)
    return np.array(jacs), rng.standard_normal((batch, n))


@given(spectra())
def test_one_product_gives_the_rayleigh_quotient_of_the_unit_start(system):
    jac, v0 = system
    res = power_iteration(_matvec(torch.tensor(jac)), torch.tensor(v0), max_iter=1, tol=0.0)
    u = v0 / np.linalg.norm(v0, axis=1, keepdims=True)
    ju = np.einsum("bij,bj->bi", jac, u)
    lam = np.einsum("bi,bi->b", u, ju)
    size = np.abs(jac).sum(axis=(1, 2))  # bounds |uᵀJu| and ‖Ju‖
    np.testing.assert_allclose(res.value.numpy(), lam, rtol=0, atol=1e-13 * size.max())
    np.testing.assert_allclose(res.residual.numpy(), np.linalg.norm(ju - lam[:, None] * u, axis=1),
                               rtol=0, atol=1e-12 * size.max())
    np.testing.assert_allclose(res.vector.numpy(), u, rtol=0, atol=1e-15)


@given(spectra(), st.floats(1e-6, 1e6), st.booleans(), st.integers(1, 12))
def test_iterates_do_not_depend_on_the_starts_length(system, scale, flip, iters):
    """Power iteration works on directions: v0 and c·v0 (any c ≠ 0) give the same estimates
    after any number of products (the vectors agree up to the sign of c)."""
    jac, v0 = system
    matvec = _matvec(torch.tensor(jac))
    c = -scale if flip else scale
    a = power_iteration(matvec, torch.tensor(v0), max_iter=iters, tol=0.0)
    b = power_iteration(matvec, torch.tensor(c * v0), max_iter=iters, tol=0.0)
    size = float(np.abs(jac).sum(axis=(1, 2)).max())
    torch.testing.assert_close(b.value, a.value, rtol=0, atol=1e-12 * size)
    torch.testing.assert_close(b.residual, a.residual, rtol=0, atol=1e-11 * size)
    torch.testing.assert_close(b.vector, np.sign(c) * a.vector, rtol=0, atol=1e-12)
