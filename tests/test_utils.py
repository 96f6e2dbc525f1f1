"""The small shared kernels of ``stiffkit._utils``: one test per kernel, values and messages."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stiffkit._utils import (
    as_per_sample,
    broadcast_per_sample,
    check_batch,
    check_finite,
    check_int,
    check_output,
    check_positive,
    check_real,
    check_same_shape,
    check_tensor,
    flat_cosine,
    flat_dot,
    flat_norm,
    progress,
    secant_ratio,
)

F64 = torch.float64


# ---------------------------------------------------------------------- integers and reals
def test_check_int_returns_python_ints_and_names_the_bound():
    assert check_int(3, "n") == 3
    out = check_int(np.int64(7), "n")
    assert out == 7 and type(out) is int
    assert check_int(0, "n", 0) == 0
    cases = [(0, 1, "`n` must be a positive integer, got 0."),
             (-1, 0, "`n` must be a non-negative integer, got -1."),
             (2, 3, "`n` must be an integer >= 3, got 2."),
             (True, 1, "`n` must be a positive integer, got True."),
             (2.0, 1, "`n` must be a positive integer, got 2.0.")]
    for value, minimum, message in cases:
        with pytest.raises(ValueError) as err:
            check_int(value, "n", minimum)
        assert str(err.value) == message


def test_check_real_accepts_reals_and_returns_a_float():
    for value in (2, 2.0, np.float32(2.0), np.int64(2), torch.tensor(2.0), np.array(2.0)):
        out = check_real(value, "w")
        assert out == 2.0 and type(out) is float
    assert check_real(0.0, "w", lo=0) == 0.0  # closed bounds include the end points
    assert check_real(1.0, "w", hi=1) == 1.0
    assert check_real(0.5, "w", lo=0, hi=1, lo_open=True, hi_open=True) == 0.5


@pytest.mark.parametrize(
    "value, bounds, message",
    [(True, {}, "`w` must be a real number, got True (bool)."),
     (1 + 2j, {}, "`w` must be a real number, got (1+2j) (complex)."),
     ("1.5", {}, "`w` must be a real number, got '1.5' (str)."),
     (None, {}, "`w` must be a real number, got None (NoneType)."),
     (torch.ones(1), {}, "`w` must be a real number, got tensor([1.]) (Tensor)."),
     (torch.tensor(1 + 1j), {}, "`w` must be a real number"),
     (math.nan, {}, "`w` must be a finite number, got nan."),
     (-math.inf, dict(hi=0), "`w` must be a finite number <= 0, got -inf."),
     (-1, dict(lo=0), "`w` must be a finite number >= 0, got -1."),
     (0.0, dict(lo=0, lo_open=True), "`w` must be a finite number > 0, got 0.0."),
     (1, dict(hi=1, hi_open=True), "`w` must be a finite number < 1, got 1."),
     (1.0, dict(lo=0, hi=1, hi_open=True), "`w` must be a finite number in [0, 1), got 1.0."),
     (0.0, dict(lo=0, hi=1, lo_open=True), "`w` must be a finite number in (0, 1], got 0.0.")],
)
def test_check_real_rejects_non_reals_non_finite_values_and_out_of_range(value, bounds, message):
    with pytest.raises(ValueError) as err:
        check_real(value, "w", **bounds)
    assert str(err.value).startswith(message)


# ---------------------------------------------------------------------- tensor checks
def test_check_positive_is_elementwise_and_rejects_non_finite():
    check_positive(torch.tensor([0.5, 2.0]), "h")
    check_positive(1e-300, "h")
    for bad, message in [(torch.tensor([1.0, 0.0]), "`h` must be positive."),
                         (-1.0, "`h` must be positive."),
                         (torch.tensor([1.0, math.nan]), "`h` contains NaN or Inf."),
                         (math.inf, "`h` must be finite, got inf.")]:
        with pytest.raises(ValueError) as err:
            check_positive(bad, "h")
        assert str(err.value) == message


def test_check_finite_names_tensors_and_scalars():
    check_finite(torch.zeros(2, 3), "x")
    check_finite(3.0, "t")
    with pytest.raises(ValueError, match=r"^`x` contains NaN or Inf\.$"):
        check_finite(torch.tensor([[0.0, math.inf]]), "x")
    with pytest.raises(ValueError, match=r"^`t` must be finite, got nan\.$"):
        check_finite(math.nan, "t")


def test_check_tensor_checks_type_dtype_and_rank():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x") is x
    assert check_tensor(torch.zeros(4, 1, 2), "x", min_ndim=3).shape == (4, 1, 2)
    with pytest.raises(TypeError, match=r"^`x` must be a torch.Tensor, got list\.$"):
        check_tensor([1.0], "x")
    with pytest.raises(TypeError, match=r"^`x` must have a floating dtype, got torch.int64\.$"):
        check_tensor(torch.zeros(2, dtype=torch.int64), "x")
    with pytest.raises(ValueError, match=r"at least 2 dimension\(s\).*got shape \(3,\)"):
        check_tensor(torch.zeros(3), "x", min_ndim=2)


def test_check_same_shape_reports_both_shapes():
    check_same_shape(torch.zeros(2, 3), torch.ones(2, 3), "a", "b")
    with pytest.raises(ValueError) as err:
        check_same_shape(torch.zeros(2, 3), torch.zeros(3, 2), "v0", "x")
    assert str(err.value) == "`v0` and `x` must have the same shape, got (2, 3) and (3, 2)."


def test_check_output_checks_type_shape_and_optionally_dtype():
    x = torch.zeros(4, 2, dtype=F64)
    y = torch.ones(4, 2, dtype=torch.float32)
    assert check_output(y, x) is y  # dtype only checked on request
    with pytest.raises(TypeError, match=r"^`D` must return a torch.Tensor, got tuple\.$"):
        check_output((y,), x, "D")
    with pytest.raises(ValueError, match=r"state's shape \(4, 2\), got \(4, 1\)"):
        check_output(torch.ones(4, 1, dtype=F64), x)
    with pytest.raises(ValueError, match=r"^`f` returned dtype torch.float32 for a state of "
                                         r"dtype torch.float64\.$"):
        check_output(y, x, same_dtype=True)


def test_check_batch_refuses_an_empty_batch():
    x = torch.zeros(1, 2)
    assert check_batch(x, "x0") is x
    with pytest.raises(ValueError, match=r"^`x0` has an empty batch \(shape \(0, 2\)\)"):
        check_batch(torch.zeros(0, 2), "x0")
    with pytest.raises(TypeError, match="`x0`"):
        check_batch(np.zeros((1, 2)), "x0")


def test_as_per_sample_gives_scalar_or_batch_shapes_and_checks_on_request():
    s = as_per_sample(0.5, "t", batch=3, dtype=F64)
    assert s.shape == () and s.dtype == F64 and float(s) == 0.5
    per = as_per_sample([0.1, 0.2, 0.3], "t", batch=3, dtype=torch.float32)
    assert per.shape == (3,) and per.dtype == torch.float32
    already = torch.tensor([1.0, 2.0], dtype=F64)
    assert as_per_sample(already, "h", batch=2, dtype=F64) is already  # no copy
    with pytest.raises(ValueError, match=r"^`t` must be a scalar or have shape \[batch\] = \[3\], "
                                         r"got \(2,\)\.$"):
        as_per_sample([0.1, 0.2], "t", batch=3, dtype=F64)
    with pytest.raises(ValueError, match=r"^`h` must be positive and finite\.$"):
        as_per_sample(0.0, "h", batch=3, dtype=F64, bound="positive")
    with pytest.raises(ValueError, match=r"^`sigma` must be non-negative and finite\.$"):
        as_per_sample(-1.0, "sigma", batch=3, dtype=F64, bound="non-negative")
    with pytest.raises(ValueError, match=r"^`t` contains NaN or Inf\.$"):
        as_per_sample(math.inf, "t", batch=3, dtype=F64)
    assert math.isnan(float(as_per_sample(math.nan, "t", batch=3, dtype=F64, check=False)))


# ---------------------------------------------------------------------- reductions
def test_flat_reductions_run_over_all_non_batch_dims():
    a = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]], dtype=F64)  # [2, 2, 2]
    b = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=F64)
    assert flat_norm(a).tolist() == [5.0, 2.0]
    assert flat_dot(a, b).tolist() == [3.0, 0.0]
    assert flat_dot(a, a).tolist() == [25.0, 4.0]
    # cos = 3/5 for the first pair; a zero vector gives 0, not NaN.
    assert flat_cosine(a, b).tolist() == [pytest.approx(0.6, abs=1e-15), 0.0]
    assert flat_cosine(a, -a).tolist() == [pytest.approx(-1.0), pytest.approx(-1.0)]


def test_broadcast_per_sample_reshapes_batch_vectors_and_passes_scalars():
    like = torch.zeros(3, 4, 5)
    v = torch.tensor([1.0, 2.0, 3.0])
    out = broadcast_per_sample(v, like)
    assert out.shape == (3, 1, 1)
    assert torch.equal((out * torch.ones_like(like))[:, 2, 3], v)
    s = torch.tensor(2.0)
    assert broadcast_per_sample(s, like) is s


def test_secant_ratio_is_the_per_sample_quotient_and_never_nan():
    df = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=F64)
    dx = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    out = secant_ratio(df, dx, 1e-3)
    assert out.tolist() == [5.0 / (1.0 + 1e-3), 0.0]
    same = torch.zeros(2, 3, dtype=torch.float32)
    assert secant_ratio(same, same, 0.0).tolist() == [0.0, 0.0]  # identical points: 0, not NaN
    given = secant_ratio(df, dx, 0.0, norm_df=torch.tensor([10.0, 0.0], dtype=F64))
    assert given.tolist() == [10.0, 0.0]  # the caller's ‖df‖ is used as is


@given(
    shape=st.sampled_from([(2,), (3,), (2, 2), (2, 3), (1, 2, 2)]),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    eps=st.sampled_from([0.0, 1e-8, 1e-3, 0.5]),
    scale=st.floats(1e-3, 1e3),
)
def test_secant_ratio_on_a_linear_map_is_the_eigenbasis_quotient(shape, batch, seed, eps, scale):
    """For Δf = J Δx, J = Q diag(λ) Qᵀ on the flattened state: ‖Δf‖ = √(Σ λ_k² c_k²) with
    c = QᵀΔx, so the ratio is that over ‖Δx‖ + eps, between min |λ| and max |λ| when eps = 0."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    lam = rng.uniform(-50.0, 50.0, n)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    dx = scale * rng.standard_normal((batch, n))
    df = dx @ (q * lam) @ q.T  # J symmetric: row form dx Jᵀ = dx J
    c = dx @ q
    want = np.sqrt((lam**2 * c**2).sum(1)) / (np.sqrt((c**2).sum(1)) + eps)
    out = secant_ratio(torch.tensor(df).reshape(batch, *shape),
                       torch.tensor(dx).reshape(batch, *shape), eps)
    assert out.shape == (batch,)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    if eps == 0.0:
        mod = np.abs(lam)
        assert np.all(out.numpy() >= mod.min() * (1 - 1e-12))
        assert np.all(out.numpy() <= mod.max() * (1 + 1e-12))


def test_progress_passes_through_when_disabled_and_yields_the_same_items_when_enabled():
    items = [1, 2, 3]
    assert progress(items, enabled=False, desc="x") is items
    bar = progress(iter(items), enabled=True, desc="x", unit="run", total=3)
    assert bar is not items and list(bar) == items
    assert bar.total == 3 and bar.unit == "run"


def test_check_callable_generator_and_float_dtype():
    from stiffkit._utils import check_callable, check_float_dtype, check_generator

    assert check_callable(len, "f") is len
    with pytest.raises(TypeError, match=r"^`f` must be callable, got int\.$"):
        check_callable(3, "f")
    gen = torch.Generator()
    assert check_generator(gen) is gen and check_generator(None) is None
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, got int"):
        check_generator(3)
    assert check_float_dtype(torch.float32) is torch.float32
    for bad in (torch.int64, torch.complex64, "float64", None):
        with pytest.raises(TypeError, match="`dtype` must be a floating torch.dtype"):
            check_float_dtype(bad)


@pytest.mark.parametrize("value", ["0.1", None, 0.1 + 1j, torch.tensor(1j), [0.1, "a"],
                                   torch.tensor([True])])
def test_as_per_sample_names_non_real_values_even_unchecked(value):
    """Issue 12: torch's "new(): invalid data type 'str'" / a silent complex cast before."""
    for check in (True, False):
        with pytest.raises(TypeError, match="`h` must be"):
            as_per_sample(value, "h", batch=1, dtype=F64, check=check)
