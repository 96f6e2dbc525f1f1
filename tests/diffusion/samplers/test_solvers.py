"""The solver registry and what every registered solver must satisfy.

Truth: the exact flow of a single Gaussian (convergence orders) and the linear test equation
``dx/dσ = λx``, on which each step's stated stability boundary must separate amplification
≤ 1 (just inside) from > 1 (just outside).
"""

import numpy as np
import pytest
import torch
from _diffusion_cases import exact_single_gaussian_flow, linear_denoiser, single_gaussian

import stiffkit
from stiffkit.diffusion.noise import randn_per_sample
from stiffkit.diffusion.samplers import (
    DEFAULT_CORRECTION_SIGN,
    SOLVERS,
    Solver,
    StepOut,
    get_solver,
    list_solvers,
    register_solver,
    sample,
)
from stiffkit.diffusion.samplers.euler import euler_step
from stiffkit.diffusion.samplers.solvers import tableau_boundaries
from stiffkit.diffusion.schedules import edm_sigmas

F64 = torch.float64


# ----------------------------------------------------------------------- registry
def test_builtin_solvers_are_registered_with_their_facts():
    assert list_solvers()[:4] == SOLVERS == ("heun", "euler", "dpm2", "deis")
    # DEIS subtracts too, unlike the reference code (figures/deis_sign.md).
    assert DEFAULT_CORRECTION_SIGN == {"heun": -1.0, "dpm2": -1.0, "deis": -1.0}
    assert get_solver("heun").tableau is stiffkit.get_tableau("heun_euler")
    assert get_solver("euler").tableau is stiffkit.get_tableau("euler")
    assert get_solver("dpm2").tableau is None and get_solver("deis").tableau is None
    assert not get_solver("euler").has_pair and get_solver("heun").records_pair
    assert get_solver(get_solver("dpm2")) is get_solver("dpm2")
    with pytest.raises(ValueError, match="`solver` must be one of"):
        get_solver("rk45")


def test_bad_solver_specs_are_refused():
    bounds = tableau_boundaries("euler")
    with pytest.raises(ValueError, match="`name`"):
        Solver("", euler_step, bounds)
    with pytest.raises(TypeError, match="`step`"):
        Solver("x", None, bounds)
    with pytest.raises(ValueError, match="`correction_sign`"):
        Solver("x", euler_step, bounds, correction_sign=0.5)
    with pytest.raises(ValueError, match="Unknown tableau"):
        Solver("x", euler_step, bounds, tableau="dpm2")
    with pytest.raises(ValueError, match="already registered"):
        register_solver(Solver("heun", euler_step, bounds))
    with pytest.raises(TypeError, match="`solver`"):
        register_solver("heun")


def test_adding_a_solver_is_writing_its_step_and_registering_it():
    """Ralston's RK2 (c₂ = 2/3) as a new sampler: the driver needs nothing else."""

    def ralston_step(drift, x, f, sigma, sigma_next, carry=None):
        h = sigma_next - sigma
        f2 = drift(sigma + 2 / 3 * h, x + 2 / 3 * h * f)
        return StepOut(x + h * (0.25 * f + 0.75 * f2))

    spec = Solver("ralston-test", ralston_step, tableau_boundaries("ralston"), tableau="ralston")
    try:
        register_solver(spec)
        gmm = single_gaussian()
        x0 = randn_per_sample(4, (2,), dtype=F64) * 2.0
        sig = edm_sigmas(32, 0.05, 2.0)[:-1]
        traj = sample(gmm, x0, sig, solver="ralston-test")
        exact = exact_single_gaussian_flow(gmm, x0, 2.0, 0.05)
        assert float((traj.states[-1] - exact).norm(dim=1).max()) < 1e-3  # Heun's: 2e-4
        assert traj.nfe == 2 * 31 and traj.tableau.name == "ralston"
        df = stiffkit.analyze(traj, reference=None, lte=False)
        assert df.attrs["stability_boundary"] == pytest.approx(2.0)
        with pytest.raises(ValueError, match="no embedded pair"):
            sample(gmm, x0, sig, solver=spec, w_stiff=1.0)
    finally:
        from stiffkit.diffusion.samplers import solvers

        solvers._REGISTRY.pop("ralston-test", None)


# --------------------------------------------------------------- solver options
def _rk2_step(drift, x, f, sigma, sigma_next, carry=None, *, c):
    """The explicit RK2 family with node ``c`` (c = 2/3: Ralston; c = 1: Heun's update)."""
    h = sigma_next - sigma
    f2 = drift(sigma + c * h, x + c * h * f)
    return StepOut(x + h * ((1 - 1 / (2 * c)) * f + (1 / (2 * c)) * f2))


def _check_c(options):
    if not 0 < options["c"] <= 1:
        raise ValueError(f"`c` must lie in (0, 1], got {options['c']}.")
    return {"c": float(options["c"])}


def test_a_registered_solver_declares_and_checks_its_own_option():
    """A toy solver with option ``c``: the driver hands it over without knowing its name."""
    seen = []

    def boundaries(sigmas, *, c):
        seen.append(c)
        return torch.full((sigmas.shape[0] - 1,), 2.0, dtype=F64)  # R(z) = 1 + z + z²/2

    spec = register_solver(Solver("rk2c-test", _rk2_step, boundaries, options={"c": 2 / 3},
                                  check_options=_check_c))
    try:
        gmm = single_gaussian()
        x0 = randn_per_sample(4, (2,), dtype=F64) * 2.0
        sig = edm_sigmas(12, 0.05, 2.0)[:-1]
        default = sample(gmm, x0, sig, solver="rk2c-test")
        assert seen == [2 / 3] and default.nfe == 2 * 11 and default.tableau is None
        given = sample(gmm, x0, sig, solver="rk2c-test", solver_options={"c": 2 / 3})
        assert torch.equal(given.states, default.states)
        one = sample(gmm, x0, sig, solver=spec, solver_options={"c": 1})
        assert seen[-1] == 1.0 and isinstance(seen[-1], float)  # the checked value
        heun = sample(gmm, x0, sig, solver="heun")
        torch.testing.assert_close(one.states, heun.states, rtol=1e-12, atol=1e-12)
        assert not torch.equal(one.states, default.states)
        with pytest.raises(ValueError, match="`c` must lie"):
            sample(gmm, x0, sig, solver="rk2c-test", solver_options={"c": 0.0})
        with pytest.raises(ValueError, match="'rk2c-test' takes no option `r`.*`c`"):
            sample(gmm, x0, sig, solver="rk2c-test", r=0.5)
        with pytest.raises(ValueError, match="'heun' takes no option `c`"):
            sample(gmm, x0, sig, solver="heun", solver_options={"c": 0.5})
    finally:
        from stiffkit.diffusion.samplers import solvers

        solvers._REGISTRY.pop("rk2c-test", None)


def test_builtin_options_and_their_checks():
    assert dict(get_solver("dpm2").options) == {"r": 0.5}
    assert dict(get_solver("deis").options) == {"max_order": 4, "variant": "rhoab"}
    assert dict(get_solver("heun").options) == {} == dict(get_solver("euler").options)
    assert get_solver("dpm2").resolve_options({"r": 1}) == {"r": 1.0}
    assert get_solver("deis").resolve_options(None) == {"max_order": 4, "variant": "rhoab"}
    with pytest.raises(ValueError, match="`max_order`"):
        get_solver("deis").resolve_options({"max_order": 5})
    with pytest.raises(ValueError, match="`variant` must be one of"):
        get_solver("deis").resolve_options({"variant": "tAB"})
    with pytest.raises(ValueError, match="'euler' takes no option `r`, `max_order`"):
        get_solver("euler").resolve_options({"r": 0.5, "max_order": 2})
    with pytest.raises(TypeError, match="`solver_options` must be a mapping"):
        get_solver("dpm2").resolve_options([("r", 0.5)])
    with pytest.raises(TypeError):
        get_solver("dpm2").options["r"] = 0.3  # read-only: the defaults cannot drift
    assert hash(get_solver("dpm2")) == hash(get_solver("dpm2"))


def test_bad_option_specs_are_refused():
    bounds = tableau_boundaries("euler")
    with pytest.raises(TypeError, match="`options` must map"):
        Solver("x", euler_step, bounds, options=("r",))
    with pytest.raises(ValueError, match="identifiers"):
        Solver("x", euler_step, bounds, options={"not a name": 1})
    with pytest.raises(TypeError, match="`check_options`"):
        Solver("x", euler_step, bounds, options={"c": 1}, check_options=1)
    with pytest.raises(ValueError, match="`c` must lie"):  # the defaults are checked
        Solver("x", euler_step, bounds, options={"c": 2.0}, check_options=_check_c)
    with pytest.raises(TypeError, match="must return exactly its options"):
        Solver("x", euler_step, bounds, options={"c": 1}, check_options=lambda o: {})


# ------------------------------------------------------------- convergence, linear
def _linear_errors(solver, Ns):
    gmm = single_gaussian()
    x0 = randn_per_sample(8, (2,), dtype=F64) * 2.0
    errs = []
    for N in Ns:
        sig = edm_sigmas(N, 0.05, 2.0)[:-1]  # stop at σ_min: no final Euler step
        x = sample(gmm, x0, sig, solver=solver).states[-1]
        exact = exact_single_gaussian_flow(gmm, x0, 2.0, 0.05)
        errs.append(float((x - exact).norm(dim=1).max()))
    return np.array(errs)


@pytest.mark.parametrize("solver,order", [("heun", 2), ("dpm2", 2), ("euler", 1), ("deis", 3)])
def test_convergence_order_on_single_gaussian(solver, order):
    Ns = np.array([16, 32, 64, 128])
    errs = _linear_errors(solver, Ns)
    slope = -np.polyfit(np.log(Ns), np.log(errs), 1)[0]
    if solver == "deis":  # variable-step multistep: at least its order minus the start-up
        assert slope > order - 0.5, (slope, errs)
    else:
        assert abs(slope - order) < 0.3, (slope, errs)


# ------------------------------------------------- stability on the linear test equation
def _amplification(solver: Solver, sig, n: int, z: float, options) -> float:
    """Spectral radius of step n's linear map on ``dx/dσ = λx`` at ``z = (σ_{n+1} − σ_n)λ``.

    One-step solvers: ``|x_{n+1}/x_n|``. DEIS: the companion matrix of its history
    ``(x_n, …, x_{n−p})``, built column by column from the step function itself.
    """
    s, s_next = sig[n], sig[n + 1]
    lam = z / float(s_next - s)

    def drift(_, y):
        return lam * y

    final = float(s_next) == 0
    step = euler_step if final else solver.step
    opts = {} if final else options
    depth = min(n, options["max_order"] - 1) if "max_order" in opts else 0
    k = depth + 1
    first_row = []
    for j in range(k):
        e = [torch.full((1, 1), float(m == j), dtype=F64) for m in range(k)]  # e[m] = x_{n−m}
        carry = tuple((sig[n - m], e[m], lam * e[m]) for m in range(k - 1, 0, -1)) or None
        out = step(drift, e[0], lam * e[0], s, s_next, carry, **opts)
        first_row.append(float(out.x_next))
    M = np.eye(k, k, -1)
    M[0] = first_row
    return float(np.abs(np.linalg.eigvals(M)).max())


GRIDS = {
    "edm": edm_sigmas(8, 0.002, 5.0, dtype=F64),
    "edm-positive": edm_sigmas(8, 0.05, 2.0, dtype=F64)[:-1],
    "uniform": torch.linspace(2.0, 1.0, 8, dtype=F64),
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("solver, options", [
    ("heun", {}), ("euler", {}), ("dpm2", {"r": 0.5}), ("dpm2", {"r": 0.3}),
    ("deis", {"max_order": 4}), ("deis", {"max_order": 2}),
    ("deis", {"max_order": 4, "variant": "tab"}), ("deis", {"max_order": 2, "variant": "tab"}),
])
def test_stated_boundary_is_the_linear_stability_limit(solver, options, grid):
    sig = GRIDS[grid]
    spec = get_solver(solver)
    traj = sample(linear_denoiser(torch.ones(1, 1, dtype=F64)), torch.ones(1, 1, dtype=F64),
                  sig, solver=solver, solver_options=options)
    bounds = traj.stability_boundaries
    assert bounds.shape == (len(sig) - 1,) and bool(torch.isfinite(bounds).all())
    for n, r_n in enumerate(bounds.tolist()):
        inside = _amplification(spec, sig, n, -(1 - 1e-6) * r_n, options)
        outside = _amplification(spec, sig, n, -(1 + 1e-6) * r_n, options)
        assert inside <= 1.0 + 1e-12 < outside, (n, r_n, inside, outside)
        # Well inside the interval the step is contractive, not merely at its edge.
        assert _amplification(spec, sig, n, -0.5 * r_n, options) < 1.0


def test_boundaries_of_one_step_solvers_are_the_known_values():
    sig = edm_sigmas(6, 0.05, 2.0, dtype=F64)[:-1]
    np.testing.assert_allclose(get_solver("heun").boundaries(sig).numpy(), 2.0, rtol=1e-15)
    np.testing.assert_array_equal(get_solver("euler").boundaries(sig).numpy(), 2.0)
    s, s_next = sig[:-1], sig[1:]
    theta = ((s * s_next).sqrt() - s) / (s_next - s)  # k-diffusion's midpoint √(σ σ_next)
    np.testing.assert_allclose(get_solver("dpm2").boundaries(sig, r=0.5), 1 / theta, rtol=1e-12)
    assert bool(((1 / theta > 1) & (1 / theta <= 2)).all())


def test_records_pair_must_be_a_bool():
    """Issue 12: records_pair="yes" was accepted (and read as true)."""
    with pytest.raises(TypeError, match="`records_pair` must be a bool"):
        Solver("records-pair-test", euler_step, tableau_boundaries("euler"), records_pair="yes")
