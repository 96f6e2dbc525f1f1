"""The samplers' fused ERK-Guid correction (stiffkit.diffusion._erk_fused) against the formula.

The fused path must give the corrected states of the formula written out operation by
operation (the golden values of the experiments' quick runs depend on float32 bits), skip
the diagnostics when nothing reads them, and add no evaluation.
"""

import pytest
import torch

import stiffkit
from stiffkit._utils import flat_dot, flat_norm, resolution_floor
from stiffkit.diffusion import ErkGuid, sample, sample_final
from stiffkit.diffusion._erk_fused import _apply_pair, _pair_coefficient, _row_sums
from stiffkit.estimators.pair import PAIR_EPS
from stiffkit.paper.toy import toy_world


def _reference_delta(f, h, dx, df, x, *, w_stiff, w_con, sign, eps):
    """ERK-Guid's pair correction spelled out (v̂ implicit), as the unfused code computed it."""
    norm_df, norm_dx = flat_norm(df), flat_norm(dx)
    if eps is None:
        resolved = norm_dx > resolution_floor(flat_norm(x))
        rho = torch.where(resolved, norm_df / torch.where(resolved, norm_dx, 1.0),
                          torch.full_like(norm_dx, float("nan")))
    else:
        rho = norm_df / (norm_dx + eps)
    beta = (rho > w_con).to(f.dtype)
    z = (w_stiff * h * rho) ** 2
    if eps is None:
        coef = sign * h * z * flat_dot(df, f) / norm_df.square()
        coef = torch.where(beta > 0, coef, torch.zeros_like(coef))
    else:
        coef = sign * h * beta * z * flat_dot(df, f) / (norm_df + eps) ** 2
    return coef.reshape(-1, *([1] * (f.ndim - 1))) * df, rho, beta


def _pair(shape, dtype, seed=0, small=1e-3):
    g = torch.Generator().manual_seed(seed)
    x, f, df = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))
    dx = small * torch.randn(shape, generator=g, dtype=dtype)
    dx[0] = 0.0  # unresolved (relative guard) / ρ̂ = 0 … ∞ (absolute guard)
    dx[1] = x[1] * torch.finfo(dtype).eps  # at roundoff level of the state
    df[2] *= 1e-6  # ρ̂ below the gate
    return x, f, dx, df


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [None, PAIR_EPS])
def test_fused_correction_is_the_formula_bit_for_bit_in_two_dimensions(dtype, eps):
    x, f, dx, df = _pair((64, 2), dtype)
    h = torch.tensor(0.07, dtype=dtype)
    kw = dict(w_stiff=0.8, w_con=0.5, sign=-1.0, eps=eps)
    want, rho, beta = _reference_delta(f, h, dx, df, x, **kw)
    x_next = torch.randn(x.shape, dtype=dtype)
    got, rho_d, beta_d, norm_d = _apply_pair(x_next, f, x, (dx, df, h), diagnose=True, **kw)
    assert torch.equal(got, x_next + want)
    assert torch.equal(rho_d.nan_to_num(-1.0), rho.nan_to_num(-1.0)) and torch.equal(beta_d, beta)
    torch.testing.assert_close(norm_d, flat_norm(want), rtol=1e-6 if dtype == torch.float32
                               else 1e-14, atol=0)
    assert bool(beta[2] == 0) and (eps is not None or bool(beta[0] == 0 and beta[1] == 0))
    assert _apply_pair(x_next, f, x, (dx, df, h), diagnose=False, **kw)[1:] == (None,) * 3
    # the public function: same delta
    public = stiffkit.diffusion.erk_guid_correction(f, h, dx=dx, df=df, scale=flat_norm(x)
                                                    if eps is None else None, **kw)
    assert torch.equal(public.delta, want)


def test_fused_correction_in_more_dimensions_agrees_to_roundoff():
    x, f, dx, df = _pair((16, 3, 5), torch.float64)
    h = 0.2
    kw = dict(w_stiff=1.0, w_con=0.3, sign=-1.0, eps=None)
    want, _, _ = _reference_delta(f, h, dx, df, x, **kw)
    fused = _pair_coefficient(f, h, dx, df, x=x, **kw)
    torch.testing.assert_close(fused.coef[:, None, None] * df, want, rtol=1e-13, atol=1e-15)


def test_row_sums_are_the_per_sample_inner_products():
    g = torch.Generator().manual_seed(4)
    a, b = (torch.randn(7, 2, 3, generator=g, dtype=torch.float64) for _ in "ab")
    sums = _row_sums([(a, b), (a, a)])
    torch.testing.assert_close(sums, torch.stack([flat_dot(a, b), flat_norm(a) ** 2]))
    a.requires_grad_(True)  # the autograd-safe branch
    sums = _row_sums([(a, b)])
    sums.sum().backward()
    torch.testing.assert_close(a.grad, b)


def test_samplers_skip_nothing_that_changes_the_result():
    """sample_final (no diagnostics), with a callback (diagnostics) and sample(): one result,
    bit for bit, with the same number of evaluations."""
    world = toy_world()
    x0, sig = world.initial_state(torch.arange(48)), world.sigmas(8)
    calls = []

    def counting(x, s):
        calls.append(x.shape[0])
        return world.main(x, s)

    erk = ErkGuid(w_stiff=1.0, w_con=0.5)
    for solver in ("heun", "dpm2", "deis"):
        calls.clear()
        plain, nfe_plain = sample_final(counting, x0, sig, solver=solver)
        n_plain = len(calls)
        calls.clear()
        fast, nfe = sample_final(counting, x0, sig, solver=solver, erk=erk)
        assert nfe == nfe_plain == len(calls) == n_plain
        seen = []
        with_cb, _ = sample_final(world.main, x0, sig, solver=solver, erk=erk,
                                  callback=lambda info, seen=seen: seen.append(info["beta"]))
        traj = sample(world.main, x0, sig, solver=solver, erk=erk)
        assert torch.equal(fast, with_cb) and torch.equal(fast, traj.states[-1])
        assert not torch.equal(fast, plain)
        gates = torch.stack(seen)
        assert torch.equal(gates, traj.diagnostics["erk_beta"])
        assert bool((traj.diagnostics["erk_correction_norm"][gates == 0] == 0).all())
