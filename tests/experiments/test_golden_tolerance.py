"""The golden comparison: a flip of the last stored digit passes, two units or NaN do not."""

import _golden
import numpy as np
import pytest


def test_last_digit_is_one_unit_in_the_sixth_significant_digit():
    values = np.array([0.267462, 1.41905, 123456.0, 0.0, -2.5e-7, np.nan])
    np.testing.assert_allclose(_golden.last_digit(values), [1e-6, 1e-5, 1.0, 0.0, 1e-12, 0.0])


def test_a_flipped_last_digit_passes_and_two_units_fail():
    _golden._assert_close(np.array([0.267461]), np.array([0.267462]), "x")
    with pytest.raises(AssertionError, match="beyond the last stored digit"):
        _golden._assert_close(np.array([0.267460]), np.array([0.267462]), "x")
    with pytest.raises(AssertionError, match="NaN pattern"):
        _golden._assert_close(np.array([np.nan]), np.array([0.2]), "x")
    with pytest.raises(AssertionError, match="inf changed"):
        _golden._assert_close(np.array([1.0]), np.array([np.inf]), "x")


def test_another_machine_is_compared_to_a_tenth_of_the_column():
    want = np.array([0.5, 2.0, np.nan, 10.0])
    _golden._assert_close_loosely(np.array([0.9, 2.0, np.nan, 9.5]), want, "x")  # |Δ| ≤ 1.0
    with pytest.raises(AssertionError, match="another machine"):
        _golden._assert_close_loosely(np.array([-0.6, 2.0, np.nan, 10.0]), want, "x")  # |Δ| 1.1
    with pytest.raises(AssertionError, match="NaN pattern"):
        _golden._assert_close_loosely(np.array([0.5, 2.0, 1.0, 10.0]), want, "x")


def test_the_machine_stamp_names_cpu_capability_and_torch():
    stamp = _golden.machine()
    assert stamp.count(" | ") == 2 and "torch " in stamp
