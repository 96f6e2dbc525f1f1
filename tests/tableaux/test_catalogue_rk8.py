"""The eighth-order pairs of stiffkit.tableaux.catalogue_rk8: Prince–Dormand RK8(7)13M."""

import math

import pytest

from stiffkit.estimators.pair import stage_pair
from stiffkit.tableaux import (
    computed_order,
    get_tableau,
    order_condition_residuals,
    real_stability_interval,
)
from stiffkit.tableaux.stability import stability_coefficients


def test_dopri8_is_registered_under_both_names():
    tab = get_tableau("dopri8")
    assert get_tableau("prince_dormand_87") is tab
    assert (tab.num_stages, tab.evals_per_step, tab.fsal) == (14, 13, True)


def test_dopri8_orders_are_8_and_7():
    tab = get_tableau("dopri8")
    # max_order=9: the order-9 conditions must fail, so 8 is the order, not a cap.
    assert computed_order(tab, max_order=9) == 8
    assert computed_order(tab, embedded=True) == 7
    # The published rationals approximate irrational values: the order conditions hold to
    # ~1e-17, far inside `tol`, and fail at the next order by many orders of magnitude.
    main = order_condition_residuals(tab, 9)
    assert main[main.order <= 8].residual.abs().max() <= 1e-17
    assert main[main.order == 9].residual.abs().max() > 1e-6
    emb = order_condition_residuals(tab, 8, which="embedded")
    assert emb[emb.order <= 7].residual.abs().max() <= 1e-17
    assert emb[emb.order == 8].residual.abs().max() > 1e-5


def test_dopri8_real_stability_boundary():
    # 5.17 [PD81], well below DOP853's 6.39: a different method.
    assert real_stability_interval("dopri8") == pytest.approx(5.1666, abs=1e-4)
    assert real_stability_interval("dop853") == pytest.approx(6.3937, abs=1e-4)


def test_dopri8_stiffness_pair_is_the_last_two_stages():
    # Stage 13 of RK8(7)13M and the FSAL stage both sit at c = 1 (Hairer's estimate).
    assert stage_pair("dopri8") == (12, 13)


def test_dopri8_is_nearly_ninth_order_on_linear_problems():
    # Only the tall trees matter for x' = λx: R(z) = Σ bᵀA^{k−1}𝟙 z^k. The z^9 coefficient
    # misses 1/9! by only 0.13 % (DOP853: 2.3 %), which is why generic convergence tests on
    # linear problems see slope ~9 before float64 roundoff: the method is still order 8.
    coeffs = stability_coefficients("dopri8")
    assert abs(coeffs[8] * math.factorial(8) - 1) <= 1e-16
    rel9 = abs(float(coeffs[9] * math.factorial(9)) - 1)
    assert 1e-3 < rel9 < 2e-3
