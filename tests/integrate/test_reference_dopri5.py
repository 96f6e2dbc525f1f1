"""torchdiffeq's dopri5 reference: accurate, and never evaluated outside its interval."""

import math

import pytest
import torch

from stiffkit.integrate.reference import dopri5_within


def _guarded(lo, hi, rate):
    seen = []

    def f(t, y):
        seen.append(float(t))
        if not lo <= float(t) <= hi:
            raise AssertionError(f"drift evaluated at t = {float(t)!r} outside [{lo}, {hi}]")
        return rate * y

    return f, seen


@pytest.mark.parametrize(("t0", "t1", "rate"), [(0.0, 1.0, -50.0), (5.0, 0.002, 3.0),
                                                (80.0, 0.002, 0.05), (1.0, 0.5, 40.0)])
def test_dopri5_within_stays_inside_and_is_accurate(t0, t1, rate):
    # Plain torchdiffeq probes the drift beyond t1 on each of these (its initial-step
    # heuristic and steps that overshoot the end); the guarded drift raises if that happens.
    f, seen = _guarded(min(t0, t1), max(t0, t1), rate)
    y0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    y = dopri5_within(f, y0, t0, t1, rtol=1e-10, atol=1e-12)
    exact = y0 * math.exp(rate * (t1 - t0))
    assert seen and y.dtype == torch.float64
    torch.testing.assert_close(y, exact, rtol=1e-8, atol=1e-12)


def test_dopri5_within_rejects_an_empty_interval():
    with pytest.raises(ValueError, match="nonzero length"):
        dopri5_within(lambda t, y: y, torch.ones(1, 1), 1.0, 1.0, rtol=1e-6, atol=1e-9)
