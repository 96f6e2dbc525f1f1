"""EDM's Heun step on linear drifts: the trapezoidal stability polynomial and ERK-Guid's pair.

Truth: for ``f = Jx`` one Heun step of size ``h = σ_next − σ`` is ``(I + hJ + h²J²/2) x``,
its Euler point ``(I + hJ) x``, evaluated here in numpy.
"""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.diffusion.samplers.heun import heun_step

F64 = torch.float64


@given(
    n=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    sigma=st.floats(0.01, 10.0),
    frac=st.floats(0.05, 0.95),
)
def test_heun_step_on_a_linear_drift_is_the_trapezoidal_polynomial(n, seed, sigma, frac):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    J = (a + a.T) / 2 * rng.uniform(0.1, 5.0)
    x, x_prev = rng.standard_normal((2, 3, n))
    Jt = torch.tensor(J)
    calls = []

    def drift(s, y):
        calls.append(float(s))
        return y @ Jt.T

    s, s_next = sigma, sigma * frac
    h = s_next - s
    f = x @ J.T
    carry = (torch.tensor(x_prev), torch.tensor(x_prev @ J.T))
    out = heun_step(drift, torch.tensor(x), torch.tensor(f), torch.tensor(s, dtype=F64),
                    torch.tensor(s_next, dtype=F64), carry)
    hJ = h * J
    want = x @ (np.eye(n) + hJ + hJ @ hJ / 2).T
    size = 1 + (np.abs(x) @ (np.eye(n) + np.abs(hJ) + np.abs(hJ) @ np.abs(hJ)).T).max()
    np.testing.assert_allclose(out.x_next.numpy(), want, rtol=0, atol=1e-14 * size)
    assert calls == [s_next]  # one evaluation, at the Euler point's level
    x_e = x @ (np.eye(n) + hJ).T
    np.testing.assert_allclose(out.point[0].numpy(), x_e, rtol=0, atol=1e-14 * size)
    np.testing.assert_allclose(out.point[1].numpy(), x_e @ J.T, rtol=0,
                               atol=1e-14 * size * (1 + np.abs(J).sum(1).max()))
    assert out.carry[0] is out.point[0]
    # ERK-Guid's pair: (x_i − x_E', f_i − f_E') with the previous Euler point, step σ − σ_next.
    np.testing.assert_allclose(out.pair.dx.numpy(), x - x_prev, rtol=0, atol=1e-15 * size)
    np.testing.assert_allclose(out.pair.df.numpy(), (x - x_prev) @ J.T, rtol=0,
                               atol=1e-14 * size * (1 + np.abs(J).sum(1).max()))
    assert float(out.pair.h) == s - s_next > 0
    first = heun_step(drift, torch.tensor(x), torch.tensor(f), torch.tensor(s, dtype=F64),
                      torch.tensor(s_next, dtype=F64))
    assert first.pair is None and torch.equal(first.x_next, out.x_next)
