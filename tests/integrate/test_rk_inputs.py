"""Bad input to `rk_step` and `solve_fixed` (issue 12's sweep; `test_rk.py` holds the rest).

Each row is a call that used to end in a raw torch error or in a silently wrong result, and
now raises naming the argument.
"""

import pytest
import torch

from stiffkit import rk_step, solve_fixed

F64 = torch.float64
X = torch.ones(3, 2, dtype=F64)
GRID = torch.linspace(0.0, 1.0, 5, dtype=F64)


def _decay(t, x):
    return -x


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: rk_step(None, 0.0, X, 0.1, "rk4"), TypeError, "`f` must be callable"),
        (lambda: rk_step(_decay, 0.0, X, "0.1", "rk4"), TypeError,
         "`h` must be a real number or a tensor"),
        (lambda: rk_step(_decay, 0.0, X, None, "rk4"), TypeError, "`h` must be a real number"),
        (lambda: rk_step(_decay, 0.0, X, 0.1 + 1j, "rk4"), TypeError, "`h` must be a real"),
        (lambda: rk_step(_decay, torch.tensor(1j), X, 0.1, "rk4"), TypeError,
         "`t` must be real, got a torch.complex64 tensor"),
        (lambda: rk_step(_decay, "a", X, 0.1, "rk4"), TypeError, "`t` must be a real number"),
        (lambda: rk_step(_decay, 0.0, X[:0], 0.1, "rk4"), ValueError, "`x` has an empty batch"),
        (lambda: rk_step(_decay, 0.0, X, 0.1, "rk4", k1=X.float()), TypeError,
         "`k1` must have the state's dtype torch.float64"),
        (lambda: rk_step(lambda t, x: x.float(), 0.0, X, 0.1, "rk4"), ValueError,
         "`f` returned dtype torch.float32 for a state of dtype torch.float64"),
        (lambda: rk_step(_decay, 0.0, X, 0.1, None), TypeError, "`tableau` must be a catalogue"),
        (lambda: solve_fixed(None, X, GRID), TypeError, "`f` must be callable"),
        (lambda: solve_fixed(_decay, X, GRID, callback=3), TypeError,
         "`callback` must be callable"),
        (lambda: solve_fixed(_decay, X[:0], GRID), ValueError, "`x0` has an empty batch"),
        (lambda: solve_fixed(_decay, X, "abc"), TypeError, "`t` must be a 1-D sequence"),
        (lambda: solve_fixed(_decay, X, None), TypeError, "`t` must be a 1-D sequence"),
        (lambda: solve_fixed(_decay, X, torch.tensor([0.0, 1j])), TypeError,
         "`t` must be a real time grid"),
        (lambda: solve_fixed(lambda t, x: x.float(), X, GRID), ValueError,
         "`f` returned dtype torch.float32"),
    ],
)
def test_bad_input_is_named(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_valid_inputs_still_pass():
    """The checks do not refuse what worked: per-sample h, tensor t, a list grid, FSAL k1."""
    step = rk_step(_decay, torch.zeros(3, dtype=F64), X, torch.full((3,), 0.1, dtype=F64),
                   "dopri5")
    again = rk_step(_decay, 0.0, X, 0.1, "dopri5", k1=-X)
    torch.testing.assert_close(step.x, again.x, rtol=0, atol=0)
    traj = solve_fixed(_decay, X, [0.0, 0.5, 1.0], "rk4")
    assert traj.states.shape == (3, 3, 2)
