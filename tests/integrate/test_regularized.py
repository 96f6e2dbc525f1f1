"""regularized_solve: ERNODE's and SRNODE's integrals from the adaptive solve, at no extra cost."""

import math

import pytest
import torch

import stiffkit
from stiffkit import regularized_solve, solve_adaptive
from stiffkit.integrate.adaptive import error_norm
from stiffkit.integrate.regularized import stiffness_source
from stiffkit.integrate.rk import pair_stage_index, rk_step
from stiffkit.tableaux import get_tableau, list_tableaux

EMBEDDED = [n for n in list_tableaux() if get_tableau(n).b_hat is not None]


class MLP(torch.nn.Module):
    """A small time-dependent tanh drift that counts its evaluations."""

    def __init__(self, dim=3, width=16, dtype=torch.float64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin1 = torch.nn.Linear(dim + 1, width, dtype=dtype)
        self.lin2 = torch.nn.Linear(width, dim, dtype=dtype)
        self.calls = 0

    def forward(self, t, x):
        self.calls += 1
        h = torch.tanh(self.lin1(torch.cat([x, t.expand(x.shape[0], 1)], dim=1)))
        return self.lin2(h) - 0.5 * x


def start(dtype=torch.float64, batch=5, dim=3):
    return torch.randn(batch, dim, dtype=dtype, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", EMBEDDED)
def test_same_evaluations_steps_and_solution_as_the_plain_solve(name):
    f, x0, times = MLP(), start(), [0.0, 0.4, 1.5]
    plain = solve_adaptive(f, x0, (0.0, 1.5), name, rtol=1e-5, atol=1e-7, t_eval=times)
    plain_calls, f.calls = f.calls, 0
    reg = regularized_solve(f, x0, times, name, rtol=1e-5, atol=1e-7)
    extra = 0 if pair_stage_index(name) is not None else reg.num_accepted
    assert f.calls == plain_calls + extra == plain.nfe + extra == reg.nfe
    assert (reg.num_accepted, reg.num_rejected) == (plain.num_accepted, plain.num_rejected)
    assert torch.equal(reg.x, plain.x) and reg.x.shape == (3, *x0.shape)
    torch.testing.assert_close(reg.t, torch.tensor(times, dtype=torch.float64))
    # Without the stiffness integral no tableau costs anything extra.
    f.calls = 0
    lean = regularized_solve(f, x0, times, name, rtol=1e-5, atol=1e-7, stiffness=False)
    assert f.calls == plain_calls == lean.nfe and torch.equal(lean.x, plain.x)
    assert torch.equal(lean.stiffness_integral, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(lean.error_integral, reg.error_integral)


def test_only_bogacki_shampine_takes_the_embedded_pair():
    sources = {n: stiffness_source(n) for n in EMBEDDED}
    assert {n for n, s in sources.items() if s == "embedded pair"} == {"bogacki_shampine"}
    assert sources["dopri5"] == sources["tsit5"] == sources["dop853"] == "stage pair"


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "cash_karp", "bogacki_shampine"])
def test_integrals_are_sums_of_the_recorded_per_step_quantities(name):
    f, x0 = MLP(), start()
    reg = regularized_solve(f, x0, [0.0, 2.0], name, rtol=1e-6, atol=1e-8)
    traj = reg.trajectory
    n = reg.num_accepted
    assert reg.step_t.shape == reg.step_h.shape == (n,)
    assert reg.error_norms.shape == reg.stiffness.shape == reg.resolved.shape == (n, 5)
    torch.testing.assert_close(reg.step_t, traj.times[:-1], rtol=0, atol=0)
    torch.testing.assert_close(reg.step_h, traj.times[1:] - traj.times[:-1])
    torch.testing.assert_close(reg.error_norms, traj.diagnostics["error_norm"], rtol=0, atol=0)
    h = reg.step_h.abs()[:, None]
    torch.testing.assert_close(reg.error_integral, (reg.error_norms * h).sum(0), rtol=1e-15,
                               atol=0)
    torch.testing.assert_close(reg.stiffness_integral, (reg.stiffness * h).sum(0),
                               rtol=1e-15, atol=0)
    assert bool(reg.resolved.all()) and bool((reg.error_integral > 0).all())
    # ρ̂ from first principles: the same-time pair at the end of every step.
    new_drifts = torch.cat([traj.drifts[1:], traj.final_drift[None]])
    x_new = traj.states[1:]
    with torch.no_grad():
        if pair_stage_index(name) is not None:
            x_b, f_b = traj.pair_states, traj.pair_drifts
        else:
            x_b = traj.embedded
            f_b = torch.stack([f(traj.times[j + 1], x_b[j]) for j in range(n)])
    rho = (new_drifts - f_b).flatten(2).norm(dim=2) / (x_new - x_b).flatten(2).norm(dim=2)
    torch.testing.assert_close(reg.stiffness, rho, rtol=1e-12, atol=0)


def _replay(f, x0, step_t, step_h, name, rtol, atol):
    """The same quantities recomputed step by step on a given step sequence (no control)."""
    tab = get_tableau(name)
    pair = pair_stage_index(tab)
    x, k1, r_e, r_s = x0, None, 0.0, 0.0
    for t, h in zip(step_t.tolist(), step_h.tolist()):
        step = rk_step(f, torch.tensor(t, dtype=x0.dtype), x, h, tab, k1=k1)
        k_new = step.k[-1] if tab.fsal else f(torch.tensor(t + h, dtype=x0.dtype), step.x)
        r_e = r_e + abs(h) * error_norm(step.error, x, step.x, rtol, atol)
        dk, dx = k_new - step.k[pair], step.x - step.g[pair]
        r_s = r_s + abs(h) * dk.flatten(1).norm(dim=1) / dx.flatten(1).norm(dim=1)
        x, k1 = step.x, k_new
    return x, r_e, r_s


@pytest.mark.parametrize("name", ["dopri5", "cash_karp"])
def test_gradient_matches_finite_differences_on_the_fixed_step_sequence(name):
    f, x0 = MLP(), start()
    rtol, atol = 1e-5, 1e-7
    reg = regularized_solve(f, x0, [0.0, 1.0], name, rtol=rtol, atol=atol)
    loss = reg.x[-1].sum() + 3 * reg.error_integral.sum() + 0.1 * reg.stiffness_integral.sum()
    params = list(f.parameters())
    grads = torch.autograd.grad(loss, params)
    x1, r_e, r_s = _replay(f, x0, reg.step_t, reg.step_h, name, rtol, atol)
    torch.testing.assert_close(x1, reg.x[-1], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(r_e, reg.error_integral, rtol=1e-12, atol=0)
    torch.testing.assert_close(r_s, reg.stiffness_integral, rtol=1e-12, atol=0)
    gen = torch.Generator().manual_seed(3)
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in params]
    eps = 1e-6

    def replayed_loss(sign):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            x1, r_e, r_s = _replay(f, x0, reg.step_t, reg.step_h, name, rtol, atol)
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return float(x1.sum() + 3 * r_e.sum() + 0.1 * r_s.sum())

    fd = (replayed_loss(1) - replayed_loss(-1)) / (2 * eps)
    ad = float(sum((g * d).sum() for g, d in zip(grads, direction)))
    assert ad == pytest.approx(fd, rel=1e-6)
    # The initial state's gradient flows too.
    x0g = x0.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(regularized_solve(f, x0g, [0.0, 1.0], name).error_integral.sum(),
                                x0g)
    assert bool(torch.isfinite(g0).all()) and float(g0.abs().max()) > 0


@pytest.mark.parametrize("name", EMBEDDED)
def test_float32_every_tableau_and_backward_time(name):
    f = MLP(dtype=torch.float32)
    x0 = start(torch.float32)
    reg = regularized_solve(f, x0, [1.0, 0.5, 0.0], name, rtol=1e-4, atol=1e-6)
    assert reg.x.dtype == reg.error_integral.dtype == reg.stiffness_integral.dtype == torch.float32
    assert reg.x.shape == (3, 5, 3) and bool((reg.step_h < 0).all())
    for r in (reg.error_integral, reg.stiffness_integral):
        assert r.shape == (5,) and bool(torch.isfinite(r).all()) and bool((r >= 0).all())
    loss = reg.x[-1].square().sum() + reg.error_integral.sum() + reg.stiffness_integral.sum()
    grads = torch.autograd.grad(loss, list(f.parameters()))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().max()) > 0 for g in grads)


class Constant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))

    def forward(self, t, x):
        return self.c.expand_as(x) + 0 * x


def test_unresolved_pairs_count_zero_and_keep_gradients_finite():
    # A constant drift: the pair's states coincide to roundoff, so ρ̂ carries no information.
    f = Constant()
    reg = regularized_solve(f, torch.ones(4, 2, dtype=torch.float64), [0.0, 1.0])
    assert not bool(reg.resolved.any())
    assert torch.equal(reg.stiffness, torch.zeros_like(reg.stiffness))
    assert torch.equal(reg.stiffness_integral, torch.zeros(4, dtype=torch.float64))
    (g,) = torch.autograd.grad(reg.stiffness_integral.sum() + reg.error_integral.sum()
                               + reg.x[-1].sum(), [f.c])
    assert bool(torch.isfinite(g).all())
    torch.testing.assert_close(g, torch.full((2,), 4.0, dtype=torch.float64))


def test_is_exported_at_the_top_level():
    assert stiffkit.regularized_solve is regularized_solve
    assert stiffkit.integrate.RegularizedSolution is not None


X = torch.ones(2, 2, dtype=torch.float64)


@pytest.mark.parametrize(("args", "kwargs", "exc", "message"), [
    (("not callable", X, [0.0, 1.0]), {}, TypeError, "`f`"),
    ((None, X * math.nan, [0.0, 1.0]), {}, ValueError, "`x0`"),
    ((None, X, [0.0, 1.0, 0.5]), {}, ValueError, "`t_span` must be strictly monotone"),
    ((None, X, [0.0, 0.0]), {}, ValueError, "`t_span` must be strictly monotone"),
    ((None, X, [0.0]), {}, ValueError, "at least 2 times"),
    ((None, X, [[0.0, 1.0]]), {}, ValueError, "1-D"),
    ((None, X, "01"), {}, TypeError, "`t_span`"),
    ((None, X, [0.0, math.inf]), {}, ValueError, "`t_span`"),
    ((None, X, [0.0, 1.0]), dict(rtol=0.0), ValueError, "`rtol`"),
    ((None, X, [0.0, 1.0]), dict(atol=-1.0), ValueError, "`atol`"),
    ((None, X, [0.0, 1.0]), dict(tableau="rk4"), ValueError, "`tableau`"),
    ((None, X, [0.0, 1.0]), dict(norm="max"), ValueError, "`norm`"),
    ((None, X, [0.0, 1.0]), dict(stiffness=1), TypeError, "`stiffness`"),
    ((None, X, [0.0, 1.0]), dict(controller="pid"), ValueError, "`controller`"),
    ((None, X[:0], [0.0, 1.0]), {}, ValueError, "`x0`"),
])
def test_bad_input_is_named(args, kwargs, exc, message):
    f = MLP(dim=2)
    args = (f if args[0] is None else args[0], *args[1:])
    with pytest.raises(exc, match=message):
        regularized_solve(*args, **kwargs)
    if args[0] is f:
        assert f.calls == 0
