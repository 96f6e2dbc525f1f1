"""EDM's σ grid, grid validation and the one σ coercion (`as_sigma`)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.diffusion.schedules import as_sigma, check_sigmas, edm_sigmas

F64 = torch.float64


@pytest.mark.parametrize("n", [1, 2, 8, 33])
def test_edm_sigmas_formula(n):
    s = edm_sigmas(n, 0.002, 5.0, 7.0)
    assert s.shape == (n + 1,) and float(s[-1]) == 0.0 and float(s[0]) == pytest.approx(5.0)
    if n > 1:
        assert float(s[-2]) == pytest.approx(0.002)
        i = np.arange(n)
        want = (5.0 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 5.0 ** (1 / 7))) ** 7
        np.testing.assert_allclose(s[:-1].numpy(), want, rtol=1e-14)
    assert bool((s[1:] < s[:-1]).all())


def test_edm_sigmas_defaults_are_karras_et_al():
    """No arguments but N: EDM's image defaults σ_min = 0.002, σ_max = 80, ρ = 7 (Karras et
    al. 2022, Table 1), written out here rather than read from the module's constants."""
    s = edm_sigmas(5).numpy()
    assert s[0] == pytest.approx(80.0, rel=1e-14) and s[-2] == pytest.approx(0.002, rel=1e-12)
    assert s[-1] == 0.0
    root = (80.0 ** (1 / 7) + np.arange(5) / 4 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s[:-1], root, rtol=1e-13)
    # N = 3: the middle level is the ρ = 7 power mean of the ends, ((a^{1/7} + b^{1/7})/2)^7.
    mid = ((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert float(edm_sigmas(3)[1]) == pytest.approx(mid, rel=1e-13)
    assert float(edm_sigmas(3)[1]) == pytest.approx(2.5152, abs=1e-4)  # ρ = 5 would give 4.41


@given(
    n=st.integers(2, 64),
    lo=st.floats(1e-4, 1.0),
    span=st.floats(1.5, 1e4),
    rho=st.floats(0.5, 12.0),
)
def test_edm_sigmas_hit_both_ends_and_are_affine_in_the_rho_th_root(n, lo, span, rho):
    hi = lo * span
    s = edm_sigmas(n, lo, hi, rho).numpy()
    assert s.shape == (n + 1,) and s[-1] == 0.0
    assert np.all(np.diff(s) < 0)
    # Exact in the root space σ^{1/ρ}, up to roundoff of its largest value σ_max^{1/ρ}.
    root, top = s[:-1] ** (1 / rho), hi ** (1 / rho)
    assert root[0] == pytest.approx(top, rel=1e-13)
    assert root[-1] == pytest.approx(lo ** (1 / rho), abs=1e-13 * top)
    # σ_i^{1/ρ} steps by the same amount (σ_min^{1/ρ} − σ_max^{1/ρ})/(N − 1) every time.
    step = (lo ** (1 / rho) - top) / (n - 1)
    np.testing.assert_allclose(np.diff(root), step, rtol=0, atol=1e-13 * top)


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_steps=0), dict(num_steps=2.5), dict(num_steps=4, sigma_min=0.0),
     dict(num_steps=4, sigma_min=1.0, sigma_max=0.5), dict(num_steps=4, rho=float("nan"))],
)
def test_edm_sigmas_bad_input(kwargs):
    with pytest.raises(ValueError):
        edm_sigmas(**kwargs)


def test_check_sigmas_returns_float64_and_allows_a_final_zero():
    s = check_sigmas([3.0, 1.0, 0.0])
    assert s.dtype == F64 and s.tolist() == [3.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="`grid` must be positive"):
        check_sigmas([3.0, 0.0, -1.0], name="grid")


# ---------------------------------------------------------------------------- as_sigma
def test_as_sigma_follows_the_state_and_keeps_the_shape():
    x = torch.zeros(3, 2, dtype=torch.float32)
    s = as_sigma(0.5, x)
    assert s.dtype == torch.float32 and s.shape == () and float(s) == 0.5
    per = as_sigma(torch.tensor([0.1, 0.2, 0.3], dtype=F64), x, dtype=F64)
    assert per.dtype == F64 and per.shape == (3,)
    already = torch.tensor(0.25, dtype=torch.float32)
    assert as_sigma(already, x) is already  # no copy when nothing changes


@pytest.mark.parametrize(
    "sigma, kwargs, match",
    [(torch.ones(2), {}, r"`sigma` must be a scalar or have shape \[batch\] = \[3\]"),
     (torch.ones(3, 1), {}, "scalar"),
     (float("nan"), {}, "`sigma` must be non-negative and finite"),
     (-1.0, {}, "non-negative"),
     (0.0, dict(positive=True, name="level"), "`level` must be positive and finite"),
     (float("inf"), dict(positive=True), "positive and finite")],
)
def test_as_sigma_checks_on_request(sigma, kwargs, match):
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match=match):
        as_sigma(sigma, x, check=True, **kwargs)
    as_sigma(sigma, x)  # unchecked by default: no error


def test_as_sigma_accepts_zero_unless_positive():
    x = torch.zeros(2, 2, dtype=F64)
    assert float(as_sigma(0.0, x, check=True)) == 0.0


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: edm_sigmas(8, dtype=torch.int64), TypeError, "`dtype` must be a floating"),
        (lambda: edm_sigmas(10**12), ValueError, "`num_steps` must be at most MAX_GRID_STEPS"),
        (lambda: edm_sigmas(8, dtype="float32"), TypeError, "`dtype` must be a floating"),
        (lambda: edm_sigmas(64, 1.0, 1.0 + 1e-8, dtype=torch.float32), ValueError,
         "is not strictly decreasing in torch.float32"),
        (lambda: check_sigmas("ab"), TypeError, "`sigmas` must be a 1-D sequence or tensor"),
        (lambda: check_sigmas(None), TypeError, "`sigmas` must be a 1-D sequence or tensor"),
        (lambda: check_sigmas([[1.0, 2.0], [1.0]]), TypeError, "`sigmas` must be a 1-D"),
        (lambda: check_sigmas(torch.tensor([2.0 + 0j, 1.0])), TypeError, "`sigmas` must be real"),
    ],
)
def test_bad_grids_and_dtypes_are_named(call, exc, message):
    """Issue 12: an integer dtype truncated the grid to [80, 34, 13, …], a float32 grid of
    nearly equal levels came back constant, strings and complex levels were torch errors or
    silently cast."""
    with pytest.raises(exc, match=message):
        call()
