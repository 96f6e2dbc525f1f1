"""Tests for the step-size controller (a pure function of the error norms)."""

import math

import pytest

from stiffkit.integrate.controller import (
    ERR_PREV_FLOOR,
    MAX_FACTOR,
    MIN_FACTOR,
    SAFETY,
    StepController,
)


@pytest.mark.parametrize("kind", ["i", "pi"])
def test_accepts_at_most_one_and_rejects_above(kind):
    c = StepController(5, kind)
    assert c.decide(1.0, ERR_PREV_FLOOR, False).accept
    assert not c.decide(1.0 + 1e-12, ERR_PREV_FLOOR, False).accept
    assert not c.decide(math.nan, ERR_PREV_FLOOR, False).accept
    assert not c.decide(math.inf, ERR_PREV_FLOOR, False).accept


def test_i_control_factor_is_the_textbook_formula():
    c = StepController(5, "i")
    d = c.decide(0.5, ERR_PREV_FLOOR, False)
    assert d.factor == pytest.approx(SAFETY * 0.5 ** (-1 / 5), rel=1e-15)
    assert d.err_prev == 0.5


def test_pi_control_remembers_the_previous_error():
    c = StepController(5, "pi")
    small_prev = c.decide(0.5, 1e-4, False).factor
    large_prev = c.decide(0.5, 0.9, False).factor
    assert small_prev < large_prev  # a large previous error lets the step grow more (β > 0)
    assert large_prev == pytest.approx(SAFETY * 0.5 ** (-0.85 / 5) * 0.9 ** (0.2 / 5), rel=1e-15)


def test_factors_are_clamped_and_do_not_grow_after_a_rejection():
    c = StepController(5, "i")
    assert c.decide(0.0, ERR_PREV_FLOOR, False).factor == MAX_FACTOR
    assert c.decide(0.0, ERR_PREV_FLOOR, True).factor == 1.0
    assert c.decide(1e12, ERR_PREV_FLOOR, False).factor == MIN_FACTOR
    assert c.decide(math.nan, ERR_PREV_FLOOR, False).factor == MIN_FACTOR
    rejected = c.decide(1.5, 0.3, False)
    assert rejected.factor == pytest.approx(SAFETY * 1.5 ** (-1 / 5)) and rejected.err_prev == 0.3


def test_constants_are_hairers_dopri5_values():
    """Safety 0.9 and, for q = 5, Hairer's DOPRI5 exponents: β = 0.04 on the previous error
    and 0.2 − 0.75β = 0.17 on the current one [HNW II.4; dopri5.f]. The literals are
    written out (not the module's constants), so a changed constant fails here."""
    pi, i = StepController(5, "pi"), StepController(5, "i")
    for err, prev in [(0.5, 1e-4), (0.01, 0.3), (0.9, 0.9)]:
        assert pi.decide(err, prev, False).factor == pytest.approx(
            0.9 * err**-0.17 * prev**0.04, rel=1e-14)
        assert i.decide(err, prev, False).factor == pytest.approx(0.9 * err**-0.2, rel=1e-14)
    assert i.decide(2.0, 1e-4, False).factor == pytest.approx(0.9 * 2.0**-0.2, rel=1e-14)
    assert StepController(3, "i").decide(0.5, 1e-4, False).factor == pytest.approx(
        0.9 * 0.5 ** (-1 / 3), rel=1e-14)
    assert (MIN_FACTOR, MAX_FACTOR, ERR_PREV_FLOOR) == (0.2, 10.0, 1e-4)


def test_remembered_error_has_a_floor():
    assert StepController(3).decide(1e-9, ERR_PREV_FLOOR, False).err_prev == ERR_PREV_FLOOR


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(q=5, kind="pid"), "`controller`"),
    (dict(q=0), "`q`"),
    (dict(q=2.0), "`q`"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StepController(**kwargs)
