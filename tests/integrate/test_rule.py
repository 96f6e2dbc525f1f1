"""DOPRI5's stiffness rule: the Fortran logic of dopri5.f, per sample, and its checks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stiffkit.integrate.rule import DOPRI5_THRESHOLD, StiffnessRule


def reference_rule(h_rho, threshold, count, reset_after, check_every):
    """dopri5.f's stiffness detection for one sample, line by line; 0-based firing steps."""
    iasti = nonsti = 0
    firing = []
    for n, value in enumerate(h_rho, start=1):
        if n % check_every == 0 or iasti > 0:
            if value > threshold:
                nonsti = 0
                iasti += 1
            else:
                nonsti += 1
                if nonsti == reset_after:
                    iasti = 0
        if iasti >= count:
            firing.append(n - 1)
    return firing


def test_rule_known_sequences():
    rule = StiffnessRule()
    assert (rule.threshold, rule.count, rule.reset_after) == (DOPRI5_THRESHOLD, 15, 6)
    stiff, calm = 3.3, 1.0
    flags = rule.apply(np.array([[stiff]] * 15))
    assert flags.onset_step[0] == 14 and flags.stiff[:, 0].tolist() == [False] * 14 + [True]
    # Five calm steps do not reset the count, six do.
    five = rule.apply(np.array([[stiff]] * 10 + [[calm]] * 5 + [[stiff]] * 5))
    assert five.onset_step[0] == 19
    six = rule.apply(np.array([[stiff]] * 10 + [[calm]] * 6 + [[stiff]] * 14))
    assert six.onset_step[0] == -1 and six.iasti[-1, 0] == 14
    # Exactly the threshold is not positive (dopri5.f: HLAMB .GT. 3.25).
    assert rule.apply(np.full((20, 1), DOPRI5_THRESHOLD)).onset_step[0] == -1


@given(
    values=st.lists(st.floats(0.0, 6.0), min_size=1, max_size=80),
    threshold=st.floats(0.5, 5.0),
    count=st.integers(1, 20),
    reset_after=st.integers(1, 8),
    check_every=st.integers(1, 5),
)
def test_rule_matches_dopri5_fortran_logic(values, threshold, count, reset_after, check_every):
    rule = StiffnessRule(threshold, count, reset_after, check_every)
    h_rho = np.array(values)
    # Two samples, the second a scaled copy: the rule runs per sample.
    flags = rule.apply(np.stack([h_rho, 0.5 * h_rho], axis=1))
    for b, scale in enumerate((1.0, 0.5)):
        assert np.flatnonzero(flags.stiff[:, b]).tolist() == reference_rule(
            scale * h_rho, threshold, count, reset_after, check_every)


def test_rule_bad_input_raises():
    with pytest.raises(ValueError, match="`count`"):
        StiffnessRule(count=0)
    with pytest.raises(ValueError, match="`threshold`"):
        StiffnessRule(threshold=math.nan)
    with pytest.raises(ValueError, match="`h_rho`"):
        StiffnessRule().apply(np.ones(3))


def test_nan_is_no_test_neither_counting_nor_resetting():
    # A NaN h·ρ̂ (an unresolved stage pair) carries no information: unlike a negative test,
    # six of them in a row must not reset the count (issue 12, defect 3).
    rule = StiffnessRule(threshold=1.0, count=3, reset_after=2)
    h_rho = np.array([[2.0], [np.nan], [np.nan], [np.nan], [2.0], [2.0]])
    flags = rule.apply(h_rho)
    assert flags.iasti[:, 0].tolist() == [1, 1, 1, 1, 2, 3]
    assert flags.nonsti[:, 0].tolist() == [0, 0, 0, 0, 0, 0]
    assert flags.onset_step.tolist() == [5]
    negatives = rule.apply(np.array([[2.0], [0.0], [0.0], [2.0]]))
    assert negatives.iasti[:, 0].tolist() == [1, 1, 0, 1]
