"""`ToyWorld`: bad input is named (issue 12); its models are exercised everywhere else."""

import pytest

from stiffkit.paper import toy_world


def test_initial_state_names_sigma_max():
    """Issue 12: a negative σ_max was reported as `sigma`."""
    with pytest.raises(ValueError, match="`sigma_max` must be a finite number >= 0"):
        toy_world().initial_state(3, -1.0)
