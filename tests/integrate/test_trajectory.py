"""`Trajectory`: the shape checks on construction, `from_states`, and the derived properties.

The tests build trajectories by keyword and never look at the ``tableau`` field, so they hold
whatever that field carries.
"""

import dataclasses

import pytest
import torch

from stiffkit.integrate import Trajectory

F64 = torch.float64
N, BATCH, DIMS = 4, 3, (2, 5)


def _parts(n=N, batch=BATCH, dims=DIMS, dtype=F64):
    g = torch.Generator().manual_seed(0)
    return dict(
        times=torch.linspace(0.0, 1.0, n + 1, dtype=dtype),
        states=torch.randn(n + 1, batch, *dims, generator=g, dtype=dtype),
        drifts=torch.randn(n, batch, *dims, generator=g, dtype=dtype),
    )


def test_valid_trajectory_keeps_its_tensors_and_reports_its_size():
    parts = _parts()
    per_step = torch.ones(N, BATCH, *DIMS, dtype=F64)
    traj = Trajectory(**parts, embedded=per_step, pair_states=2 * per_step,
                      pair_drifts=3 * per_step, diagnostics={"gate": torch.zeros(N, BATCH)})
    assert traj.states is parts["states"] and traj.drifts is parts["drifts"]
    assert traj.num_steps == N and traj.batch_size == BATCH
    assert traj.nfe == 0 and traj.time_name == "t" and traj.f is None
    assert traj.final_drift is None and traj.stage_k is None and traj.stage_g is None


def test_a_single_time_is_a_trajectory_of_zero_steps():
    traj = Trajectory(**_parts(n=0))
    assert traj.num_steps == 0 and traj.steps.shape == (0,)
    assert traj.drifts.shape == (0, BATCH, *DIMS)


# ------------------------------------------------------------------ construction checks
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(times=torch.zeros(N + 1, 1, dtype=F64)), r"`times` must be 1-D, got shape \(5, 1\)"),
        (dict(times=torch.zeros(0, dtype=F64)), r"`times` must be 1-D, got shape \(0,\)"),
        (dict(states=torch.zeros(N, BATCH, *DIMS, dtype=F64)),
         "`states` must have 5 entries along dim 0 \\(one per time\\), got 4"),
        (dict(states=torch.zeros(N + 2, BATCH, *DIMS, dtype=F64)),
         "`states` must have 5 entries along dim 0"),
        # Drifts: one per step, each with the state's shape.
        (dict(drifts=torch.zeros(N + 1, BATCH, *DIMS, dtype=F64)),
         r"`drifts` must have shape \(4, 3, 2, 5\), got \(5, 3, 2, 5\)"),
        (dict(drifts=torch.zeros(N, BATCH + 1, *DIMS, dtype=F64)),
         r"`drifts` must have shape \(4, 3, 2, 5\), got \(4, 4, 2, 5\)"),
        (dict(drifts=torch.zeros(N, BATCH, 10, dtype=F64)),
         r"`drifts` must have shape \(4, 3, 2, 5\), got \(4, 3, 10\)"),
        (dict(embedded=torch.zeros(N + 1, BATCH, *DIMS, dtype=F64)), "`embedded` must have shape"),
        (dict(pair_states=torch.zeros(N, BATCH, 5, 2, dtype=F64)), "`pair_states` must have shape"),
        (dict(pair_drifts=torch.zeros(N - 1, BATCH, *DIMS, dtype=F64)),
         "`pair_drifts` must have shape"),
        (dict(diagnostics={"gate": torch.zeros(N + 1, BATCH)}),
         "diagnostic `gate` must have 4 rows, got 5"),
        (dict(diagnostics={"ok": torch.zeros(N, BATCH), "rho": torch.zeros(1)}),
         "diagnostic `rho` must have 4 rows, got 1"),
    ],
)
def test_inconsistent_parts_raise_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        Trajectory(**{**_parts(), **change})


def test_scalar_times_raise_value_error():
    with pytest.raises(ValueError, match="`times` must be 1-D"):
        Trajectory(**{**_parts(), "times": torch.tensor(0.0, dtype=F64)})


def test_trajectory_is_frozen():
    traj = Trajectory(**_parts())
    with pytest.raises(dataclasses.FrozenInstanceError):
        traj.states = torch.zeros(1)


# ------------------------------------------------------------------------- properties
def test_steps_are_signed_differences_of_the_times():
    parts = _parts()
    times = torch.tensor([5.0, 3.0, 2.5, 1.0, 0.0], dtype=F64)  # decreasing, like σ grids
    traj = Trajectory(**{**parts, "times": times}, time_name="sigma")
    assert torch.equal(traj.steps, torch.tensor([-2.0, -0.5, -1.5, -1.0], dtype=F64))
    assert traj.time_name == "sigma"


def test_next_drifts_shift_by_one_step_and_need_the_final_drift():
    parts = _parts()
    traj = Trajectory(**parts)
    assert traj.next_drifts is None
    final = torch.full((BATCH, *DIMS), 7.0, dtype=F64)
    traj = Trajectory(**parts, final_drift=final)
    nxt = traj.next_drifts
    assert nxt.shape == parts["drifts"].shape
    assert torch.equal(nxt[:-1], parts["drifts"][1:]) and torch.equal(nxt[-1], final)


# ------------------------------------------------------------------------ from_states
def _linear(t, x):
    return -2.0 * x + t


def test_from_states_evaluates_the_drifts_and_counts_them():
    states = _parts()["states"]
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    traj = Trajectory.from_states(times, states, _linear, time_name="tau")
    assert traj.times.dtype == states.dtype
    assert torch.equal(traj.times, torch.tensor(times, dtype=F64))
    assert traj.states is states and traj.nfe == N and traj.f is _linear
    expected = torch.stack([_linear(torch.tensor(t, dtype=F64), states[n])
                            for n, t in enumerate(times[:-1])])
    assert torch.equal(traj.drifts, expected)
    assert traj.time_name == "tau"
    # Plain saved states: no pair data and no final drift for the analyses to use.
    assert traj.pair_states is None and traj.pair_drifts is None and traj.next_drifts is None


def test_from_states_without_a_drift_marks_the_drifts_unknown():
    states = _parts(dtype=torch.float32)["states"]
    traj = Trajectory.from_states(torch.linspace(0, 1, N + 1, dtype=F64), states)
    assert traj.times.dtype == torch.float32  # times follow the states' dtype
    assert traj.nfe == 0 and traj.f is None
    assert traj.drifts.shape == (N, BATCH, *DIMS) and traj.drifts.dtype == torch.float32
    assert torch.isnan(traj.drifts).all()


def test_from_states_checks_the_lengths():
    states = _parts()["states"]
    with pytest.raises(ValueError, match="`states` must have 4 entries"):
        Trajectory.from_states([0.0, 0.5, 1.0, 1.5], states)


# ------------------------------------------------------- tableau and stability boundaries
def test_tableau_is_an_object_and_a_registered_name_resolves_to_it():
    from stiffkit.tableaux import get_tableau

    rk4 = get_tableau("rk4")
    assert Trajectory(**_parts(), tableau=rk4).tableau is rk4
    assert Trajectory(**_parts(), tableau="rk45").tableau is get_tableau("dopri5")  # alias
    assert Trajectory(**_parts()).tableau is None
    with pytest.raises(ValueError, match="Unknown tableau 'dpm2'"):
        Trajectory(**_parts(), tableau="dpm2")
    traj = Trajectory.from_states([0.0, 0.25, 0.5, 0.75, 1.0], _parts()["states"], tableau="rk4")
    assert traj.tableau is rk4


def test_step_boundaries_come_from_the_trajectory_then_the_tableau():
    per_step = torch.tensor([1.0, 1.5, 2.0, 0.5], dtype=F64)
    traj = Trajectory(**_parts(), tableau="rk4", stability_boundaries=per_step)
    assert torch.equal(traj.step_boundaries, per_step)
    rk4 = Trajectory(**_parts(), tableau="rk4").step_boundaries
    assert rk4.dtype == F64 and rk4.shape == (N,)
    torch.testing.assert_close(rk4, torch.full((N,), 2.785293563405282, dtype=F64))
    assert Trajectory(**_parts()).step_boundaries is None
    as_float32 = Trajectory(**_parts(), stability_boundaries=per_step.float()).step_boundaries
    assert as_float32.dtype == F64


@pytest.mark.parametrize(
    "bounds, message",
    [(torch.ones(N + 1, dtype=F64),
      r"`stability_boundaries` must be a floating tensor of shape \(4,\)"),
     (torch.ones(N, 1, dtype=F64), "shape"), (torch.ones(N, dtype=torch.long), "floating"),
     ([2.0] * N, "floating tensor"),
     (torch.tensor([2.0, float("nan"), 2.0, 2.0], dtype=F64), "positive"),
     (torch.tensor([2.0, 0.0, 2.0, 2.0], dtype=F64), "positive")],
)
def test_bad_stability_boundaries_raise(bounds, message):
    with pytest.raises(ValueError, match=message):
        Trajectory(**_parts(), stability_boundaries=bounds)


@pytest.mark.parametrize(
    "change, exc, message",
    [
        (dict(times=[0.0, 0.25, 0.5, 0.75, 1.0]), TypeError, "`times` must be a torch.Tensor"),
        (dict(states=None), TypeError, "`states` must be a torch.Tensor"),
        (dict(drifts=None), TypeError, "`drifts` must be a torch.Tensor"),
        (dict(times=torch.tensor([0.0, 0.5, 0.25, 0.75, 1.0], dtype=F64)), ValueError,
         "`times` must be strictly monotone"),
        (dict(times=torch.tensor([0.0, 0.5, float("nan"), 0.75, 1.0], dtype=F64)), ValueError,
         "`times` contains NaN or Inf"),
        (dict(diagnostics=None), TypeError, "`diagnostics` must be a dict"),
        (dict(diagnostics={"g": [1.0]}), TypeError, "diagnostic `g` must be a tensor"),
        (dict(nfe=-1), ValueError, "`nfe` must be a non-negative integer"),
        (dict(nfe=1.5), ValueError, "`nfe` must be a non-negative integer"),
        (dict(time_name=3), TypeError, "`time_name` must be a string"),
    ],
)
def test_construction_names_more_bad_fields(change, exc, message):
    """Issue 12: these were attribute errors or silently accepted (NaN times, nfe = -1)."""
    with pytest.raises(exc, match=message):
        Trajectory(**{**_parts(), **change})


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda s: Trajectory.from_states([0, 1, 2, 3, 4], s.tolist()), TypeError,
         "`states` must be a torch.Tensor"),
        (lambda s: Trajectory.from_states("abcde", s), TypeError, "`times` must be a sequence"),
        (lambda s: Trajectory.from_states([0, 1, 2, 3, 4], s * float("nan")), ValueError,
         "`states` contains NaN or Inf"),
        (lambda s: Trajectory.from_states([0, 1, 2, 3, 4], s[:, :0]), ValueError,
         "`states` has an empty batch"),
        (lambda s: Trajectory.from_states([0, 2, 1, 3, 4], s), ValueError,
         "`times` must be strictly monotone"),
        (lambda s: Trajectory.from_states([0, 1, 2, 3, 4], s, 3), TypeError,
         "`f` must be callable"),
        (lambda s: Trajectory.from_states([0, 1, 2, 3, 4], s, lambda t, x: x[:1]), ValueError,
         "`f` must return a tensor of the state's shape"),
        (lambda s: Trajectory.from_states([0, 1], s, lambda t, x: x), ValueError,
         "`states` must have 2 entries"),
    ],
)
def test_from_states_names_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call(_parts()["states"])
