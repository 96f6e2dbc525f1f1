"""DPM-Solver-2's step: its stability function ``R(z) = 1 + z + (θ/(2r)) z²``."""

import pytest
import torch

from stiffkit.diffusion.samplers.dpm2 import check_r, dpm2_boundaries, dpm2_step

F64 = torch.float64


@pytest.mark.parametrize("r", [0.5, 0.3, 1.0])
def test_one_step_multiplies_by_its_stability_polynomial(r):
    s, s_next = torch.tensor(1.3, dtype=F64), torch.tensor(0.7, dtype=F64)
    theta = float((s_next**r * s ** (1 - r) - s) / (s_next - s))
    assert theta >= r  # the bound that keeps R ≥ −1 on the interval
    for z in (-0.3, -1.0, -2.5):
        lam = z / float(s_next - s)
        x = torch.ones(1, 1, dtype=F64)
        out = dpm2_step(lambda _, y, lam=lam: lam * y, x, lam * x, s, s_next, r=r)
        assert float(out.x_next) == pytest.approx(1 + z + theta / (2 * r) * z**2, rel=1e-12)
        assert out.pair is not None and out.point is None
    assert float(dpm2_boundaries(torch.stack([s, s_next]), r=r)[0]) == pytest.approx(2 * r / theta)


def test_check_r():
    assert check_r(1) == 1.0
    for bad in (0.0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="`r`"):
            check_r(bad)


@pytest.mark.parametrize("bad", ["a", None, 1j])
def test_check_r_names_non_numbers(bad):
    """Issue 12: "'<' not supported between instances of 'int' and 'str'" before."""
    with pytest.raises(ValueError, match="`r` must be a real number"):
        check_r(bad)
