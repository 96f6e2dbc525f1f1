"""Tests for stiffkit.estimators.jvp: every JVP path against jacrev, and the dense Jacobian."""

import pytest
import torch
from _jacobian_fields import DIMS, DT, T, apply_blocks, block_jacobian, make_mlp, point

from stiffkit.estimators.jvp import jacobian_dense, jvp_operator

#: Forward / double-backward JVPs are exact up to roundoff of a few matmuls.
AD_RTOL = 1e-12
#: Central differences with h = eps^(1/3) (1 + |x|) / |v| have error ~ eps^(2/3) (1 + |x|)^2
#: times |f'''| (truncation) plus eps |f| / h (roundoff); for the tanh MLP of _jacobian_fields
#: (|f'''| = O(1), |x| ~ 3) that is ~4e-11 * 16 ≈ 6e-10, so 1e-8 leaves a 15x margin
#: (measured: 4e-11, see test_fd_is_worse_than_ad_but_within_its_budget).
FD_RTOL = 1e-8


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
    x, v = point()
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
    x, v = point(1)
    f = make_mlp(DIMS)
    exact = jvp_operator(f, T, x, method="forward")(v)
    err = ((jvp_operator(f, T, x, method="fd")(v) - exact).norm() / exact.norm()).item()
    assert 1e-14 < err < FD_RTOL


def test_jvp_samples_are_independent():
    x, v = point(2)
    v[1:] = 0  # J is block-diagonal: zero directions give zero products, sample 0 unchanged
    for method in ("forward", "vjp", "fd"):
        jv = jvp_operator(make_mlp(DIMS), T, x, method=method)(v)
        assert torch.all(jv[1:] == 0)
        assert jv[0].abs().max() > 0


def test_jvp_does_not_touch_caller_graph():
    x, v = point(3)
    x.requires_grad_(True)
    for method in ("forward", "vjp", "fd"):
        with torch.no_grad():  # the vjp path must still work under the caller's no_grad
            jv = jvp_operator(make_mlp(DIMS), T, x, method=method)(v)
        assert not jv.requires_grad
        assert x.grad is None


@pytest.mark.parametrize("t", [0.3, torch.tensor(0.3, dtype=DT), torch.tensor([0.3], dtype=DT)])
def test_time_may_be_float_or_0d(t):
    x, v = point(10)
    f = make_mlp(DIMS)
    reference = apply_blocks(block_jacobian(f, t, x), v)
    for method in ("forward", "vjp"):
        torch.testing.assert_close(jvp_operator(f, t, x, method=method)(v), reference)
    torch.testing.assert_close(jacobian_dense(f, t, x), block_jacobian(f, t, x))


def test_jacobian_dense_matches_jacrev_blocks():
    x, _ = point(4)
    f = make_mlp(DIMS)
    jac = jacobian_dense(f, T, x)
    assert jac.shape == (4, 6, 6)
    torch.testing.assert_close(jac, block_jacobian(f, T, x), rtol=AD_RTOL, atol=AD_RTOL)


@pytest.mark.parametrize("method", ["auto", "forward", "vjp", "fd"])
def test_wrong_shape_drift_raises_for_every_path(method):
    x, v = point(9)
    with pytest.raises(ValueError, match="`f`"):
        jvp_operator(lambda t, y: y.reshape(4, -1), T, x, method=method)(v)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda x: jvp_operator(None, 0.0, x), TypeError, "`f` must be callable"),
        (lambda x: jvp_operator(lambda t, y: y, 0.0, x, method=["fd"]), ValueError,
         "`method` must be one of"),
        (lambda x: jacobian_dense(lambda t, y: y, 0.0, x, jvp_method="bad"), ValueError,
         "`jvp_method` must be one of"),
        (lambda x: jacobian_dense(lambda t, y: y, 0.0, torch.ones(1, 10**5, dtype=x.dtype)),
         ValueError, "dense Jacobian would hold"),
    ],
)
def test_bad_input_is_named(call, exc, message):
    """Issue 12: a non-callable drift failed at the first product; `jvp_method` was reported
    as `method`; a 10⁵-dimensional dense Jacobian ran for hours instead of refusing."""
    with pytest.raises(exc, match=message):
        call(torch.ones(2, 3, dtype=torch.float64))


def _energy_drift(dims=DIMS):
    """A gradient drift f = -∇E (E a tanh MLP's energy): forward mode is forward-over-reverse."""
    mlp = make_mlp(dims)

    def f(t, x):
        return -torch.func.grad(lambda y: mlp(t, y).square().sum())(x)

    return f


@pytest.mark.parametrize("drift", ["plain", "gradient"])
def test_auto_picks_an_exact_path_and_matches_each_forced_one(drift):
    """'auto' times one product of forward mode and of double backward, then keeps the faster:
    whichever it keeps, every product equals both forced paths to roundoff."""
    f = make_mlp(DIMS) if drift == "plain" else _energy_drift()
    x, v = point()
    ops = {m: jvp_operator(f, T, x, method=m) for m in ("auto", "forward", "vjp")}
    products = {m: [] for m in ops}
    for k in range(6):
        for m, op in ops.items():
            products[m].append(op((k + 1.0) * v))
    auto = ops["auto"]
    assert auto.auto_choice in ("forward", "vjp") and auto.method == auto.auto_choice
    assert set(auto.auto_timings) == {"forward", "vjp"}
    assert all(t > 0 for t in auto.auto_timings.values())
    assert auto.num_products == 6
    for forced in ("forward", "vjp"):
        for a, b in zip(products["auto"], products[forced]):
            torch.testing.assert_close(a, b, rtol=AD_RTOL, atol=AD_RTOL * float(b.abs().max()))
    # the first product is forward mode's, the next two double backward's: exactly those
    assert torch.equal(products["auto"][0], products["forward"][0])
    assert torch.equal(products["auto"][1], products["vjp"][1])
    assert ops["forward"].auto_choice is None and ops["forward"].auto_timings == {}


def test_auto_keeps_forward_mode_when_double_backward_fails():
    x, v = point()
    op = jvp_operator(make_mlp(DIMS, "once"), T, x, method="auto")  # no forward, no 2nd backward
    op(v), op(v)
    assert op.method == op.auto_choice == "fd"
    op = jvp_operator(make_mlp(DIMS, "no_forward"), T, x, method="auto")
    op(v)
    assert op.method == op.auto_choice == "vjp" and op.auto_timings == {}


def test_jacobian_dense_auto_takes_one_path_for_every_column():
    """No timing probe in jacobian_dense: all columns come from forward mode, bit for bit."""
    x, _ = point()
    f = _energy_drift()
    assert torch.equal(jacobian_dense(f, T, x), jacobian_dense(f, T, x, jvp_method="forward"))


def test_a_gradient_hint_takes_double_backward_from_the_first_product():
    """A drift marked ``jvp_hint = "vjp"`` skips the timing: every product is double
    backward's, bit for bit; a hint on a drift whose double backward fails falls back to
    forward mode (here: finite differences, the kernel has neither)."""
    f = _energy_drift()
    f.jvp_hint = "vjp"
    x, v = point()
    auto, vjp = jvp_operator(f, T, x), jvp_operator(f, T, x, method="vjp")
    for k in range(3):
        assert torch.equal(auto((k + 1.0) * v), vjp((k + 1.0) * v))
    assert auto.auto_choice == auto.method == "vjp" and auto.auto_timings == {}
    plain = make_mlp(DIMS)
    plain.jvp_hint = "vjp"  # wrong but harmless: double backward is exact on it too
    torch.testing.assert_close(jvp_operator(plain, T, x)(v),
                               jvp_operator(plain, T, x, method="forward")(v), rtol=AD_RTOL,
                               atol=AD_RTOL)
    broken = make_mlp(DIMS, "once")
    broken.jvp_hint = "vjp"
    op = jvp_operator(broken, T, x)
    torch.testing.assert_close(op(v), jvp_operator(broken, T, x, method="fd")(v))
    assert op.auto_choice == "fd"


def test_jacobian_dense_follows_the_hint_for_every_column():
    x, _ = point()
    f = _energy_drift()
    f.jvp_hint = "vjp"
    assert torch.equal(jacobian_dense(f, T, x), jacobian_dense(f, T, x, jvp_method="vjp"))
