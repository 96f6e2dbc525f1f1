"""solve_fixed(..., record=False): the end point only, bitwise the recording path's."""

import pytest
import torch

from stiffkit import solve_fixed
from stiffkit.tableaux import list_tableaux

F64 = torch.float64


def _drift(t, x):
    return torch.tanh(x @ torch.tensor([[0.3, -1.2], [0.8, 0.1]], dtype=x.dtype) + t) - 0.5 * x


def _start(dtype=F64, batch=37):
    return torch.randn(batch, 2, dtype=dtype, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", list_tableaux())
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_end_point_is_bitwise_the_recorded_one(name, dtype):
    x0 = _start(dtype)
    for t in (torch.linspace(0.0, 1.0, 7, dtype=dtype), torch.linspace(2.0, 0.5, 4, dtype=dtype)):
        traj = solve_fixed(_drift, x0, t, name)
        x, nfe = solve_fixed(_drift, x0, t, name, record=False)
        assert torch.equal(x, traj.states[-1]) and nfe == traj.nfe


def test_callback_sees_the_same_steps_without_the_record():
    x0, t = _start(), torch.linspace(0.0, 1.0, 5, dtype=F64)
    seen = {True: [], False: []}
    for record in seen:
        out = solve_fixed(_drift, x0, t, "dopri5", record=record,
                          callback=lambda n, step, record=record: seen[record].append(
                              (n, step.x, step.error)))
    assert torch.equal(out[0], solve_fixed(_drift, x0, t, "dopri5").states[-1])
    assert [n for n, *_ in seen[False]] == [0, 1, 2, 3]
    for (_, xa, ea), (_, xb, eb) in zip(seen[True], seen[False]):
        assert torch.equal(xa, xb) and torch.equal(ea, eb)


def test_evaluations_are_counted_once_per_stage():
    calls = []

    def f(t, x):
        calls.append(1)
        return _drift(t, x)

    x, nfe = solve_fixed(f, _start(), torch.linspace(0.0, 1.0, 9, dtype=F64), "heun_euler",
                         record=False)
    assert nfe == len(calls) == 16


def test_non_finite_end_point_raises():
    with pytest.raises(ValueError, match="NaN or Inf by the end"):
        solve_fixed(lambda t, x: x**3, torch.full((2, 2), 10.0, dtype=F64),
                    torch.linspace(0.0, 8.0, 9, dtype=F64), "euler", record=False)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(record=False, record_stages=True), ValueError, "record_stages"),
    (dict(record="no"), TypeError, "`record` must be a bool"),
])
def test_bad_record_arguments_are_named(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        solve_fixed(_drift, _start(), torch.linspace(0.0, 1.0, 3, dtype=F64), "rk4", **kwargs)
