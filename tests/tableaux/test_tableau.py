"""Registry-wide invariants of the tableau catalogue, and agreement with scipy/torchdiffeq."""

from fractions import Fraction

import numpy as np
import pytest
import torch

import stiffkit
from stiffkit.tableaux import ButcherTableau, get_tableau, list_tableaux

ALL = list_tableaux()
EMBEDDED = [n for n in ALL if get_tableau(n).is_embedded]

REQUIRED = [
    "euler", "heun_euler", "midpoint", "ralston", "rk4", "bogacki_shampine", "fehlberg45",
    "cash_karp", "dopri5", "dopri5_shampine", "tsit5", "dop853",
]

# Which methods are FSAL, from the literature (not from the coefficients).
KNOWN_FSAL = {"bogacki_shampine", "dopri5", "dopri5_shampine", "tsit5", "dop853"}


def test_catalogue_contains_required_methods():
    assert set(REQUIRED) <= set(ALL)
    assert stiffkit.list_tableaux() == sorted(stiffkit.list_tableaux())


@pytest.mark.parametrize("name", ALL)
def test_validation_holds_and_arrays_are_consistent(name):
    tab = get_tableau(name)
    arr = tab.numpy()
    s = tab.num_stages
    assert arr["A"].shape == (s, s) and arr["b"].shape == (s,) and arr["c"].shape == (s,)
    assert np.all(np.triu(arr["A"]) == 0)
    np.testing.assert_allclose(arr["A"].sum(1), arr["c"], atol=1e-14)
    assert arr["b"].sum() == pytest.approx(1, abs=1e-14)
    assert all(isinstance(v, Fraction) for v in tab.b)
    with pytest.raises(ValueError):
        arr["A"][0, 0] = 1.0  # read-only views
    tt = tab.torch(torch.float32)
    assert tt["A"].dtype == torch.float32 and tt["A"].shape == (s, s)


@pytest.mark.parametrize("name", ALL)
def test_fsal_flag_is_right(name):
    tab = get_tableau(name)
    assert tab.fsal == (name in KNOWN_FSAL)
    assert tab.has_fsal_structure == tab.fsal
    assert tab.evals_per_step == tab.num_stages - int(tab.fsal)


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_error_weights_nonzero(name):
    tab = get_tableau(name)
    e = np.array([float(v) for v in tab.error_weights])
    assert np.abs(e).max() > 1e-6
    assert abs(e.sum()) < 1e-13  # b and b̂ both sum to one
    assert tab.embedded().order == tab.embedded_order


def test_aliases_and_unknown_name():
    assert get_tableau("rk45") is get_tableau("dopri5")
    assert get_tableau("bosh3") is get_tableau("bogacki_shampine")
    tab = get_tableau("rk4")
    assert get_tableau(tab) is tab
    with pytest.raises(ValueError, match="Unknown tableau 'nope'.*dopri5"):
        get_tableau("nope")


def test_tableau_is_immutable():
    tab = get_tableau("rk4")
    with pytest.raises(AttributeError):
        tab.order = 5
    assert isinstance(tab.A, tuple) and isinstance(tab.A[0], tuple)


# --------------------------------------------------------------- malformed input
GOOD = dict(A=[[], ["1/2"]], b=[0, 1], c=[0, "1/2"], order=2)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(A=[["1/2"], ["1/2"]], c=["1/2", "1/2"]), "strictly lower triangular"),
        (dict(c=[0, "1/3"]), "Row sums of `A` must equal `c`"),
        (dict(b=["1/2", "1/3"]), "weights `b` must sum to 1"),
        (dict(b_hat=["1/2", "1/3"], embedded_order=1), "weights `b_hat` must sum to 1"),
        (dict(b_hat=[0, 1], embedded_order=1), "must differ from `b`"),
        (dict(b_hat=[1, 0]), "`b_hat` and `embedded_order` must be given together"),
        (dict(b=[1]), "`A` must have 1 rows"),
        (dict(c=[0]), "`c` must have 2 entries"),
        (dict(order=0), "`order` must be a positive integer"),
        (dict(fsal=True), "`fsal=True` requires"),
        (dict(b=[0, "x"]), "not a number"),
        (dict(b=[0, float("nan")]), "non-finite"),
    ],
)
def test_malformed_tableau_raises_naming_the_condition(change, message):
    with pytest.raises(ValueError, match=message):
        ButcherTableau("bad", **{**GOOD, **change})


def test_register_rejects_duplicates_and_accepts_new():
    tab = ButcherTableau("test_only_midpoint_copy", **GOOD)
    stiffkit.register_tableau(tab)
    assert get_tableau("test_only_midpoint_copy") is tab
    with pytest.raises(ValueError, match="already registered"):
        stiffkit.register_tableau(tab)


# ---------------------------------------------------------- agreement with others
@pytest.mark.parametrize("ours, solver", [("bogacki_shampine", "RK23"), ("dopri5", "RK45")])
def test_coefficients_match_scipy_rk(ours, solver):
    from scipy.integrate import _ivp

    cls = getattr(_ivp.rk, solver)
    tab = get_tableau(ours).numpy()
    n = cls.n_stages  # scipy stores the s − 1 explicit stages; the FSAL stage is implicit
    np.testing.assert_allclose(tab["A"][:n, : cls.A.shape[1]], cls.A, rtol=0, atol=1e-15)
    assert np.all(tab["A"][:n, cls.A.shape[1] :] == 0)
    np.testing.assert_allclose(tab["b"][:n], cls.B, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tab["c"][:n], cls.C, rtol=0, atol=1e-15)
    # scipy's E is b̂ − b over all s stages (the last is the FSAL stage).
    np.testing.assert_allclose(-tab["error_weights"], cls.E, rtol=0, atol=1e-15)


def test_coefficients_match_scipy_dop853():
    from scipy.integrate._ivp import dop853_coefficients as dc

    tab = get_tableau("dop853")
    arr = tab.numpy()
    n = dc.N_STAGES
    np.testing.assert_allclose(arr["A"][:n, :n], dc.A[:n, :n], rtol=0, atol=1e-15)
    np.testing.assert_allclose(arr["A"][n, :n], dc.B, rtol=0, atol=1e-15)  # FSAL row = b
    np.testing.assert_allclose(arr["b"][:n], dc.B, rtol=0, atol=1e-15)
    np.testing.assert_allclose(arr["c"][:n], dc.C[:n], rtol=0, atol=1e-15)
    np.testing.assert_allclose(arr["error_weights"], dc.E5, rtol=0, atol=1e-15)
    e3 = np.array([float(b - a) for b, a in zip(tab.b, tab.b_hat_aux)])
    np.testing.assert_allclose(e3, dc.E3, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "ours, module, attr",
    [
        ("dopri5_shampine", "dopri5", "_DORMAND_PRINCE_SHAMPINE_TABLEAU"),
        ("bogacki_shampine", "bosh3", "_BOGACKI_SHAMPINE_TABLEAU"),
        ("fehlberg12", "fehlberg2", "_FEHLBERG2_TABLEAU"),
        ("heun_euler", "adaptive_heun", "_ADAPTIVE_HEUN_TABLEAU"),
    ],
)
def test_coefficients_match_torchdiffeq(ours, module, attr):
    import importlib

    t = getattr(importlib.import_module(f"torchdiffeq._impl.{module}"), attr)
    tab = get_tableau(ours).numpy()
    s = len(tab["b"])
    np.testing.assert_allclose(tab["c"][1:], t.alpha.double().numpy(), atol=1e-15)
    for i, row in enumerate(t.beta, start=1):
        np.testing.assert_allclose(tab["A"][i, :i], row.double().numpy(), atol=1e-15)
    np.testing.assert_allclose(tab["b"], t.c_sol.double().numpy()[:s], atol=1e-15)
    c_err = t.c_error.double().numpy()[:s]
    if ours == "heun_euler":
        # torchdiffeq's adaptive_heun stores the error with the opposite sign.
        c_err = -c_err
    np.testing.assert_allclose(tab["error_weights"], c_err, atol=1e-15)


def test_dopri5_variants_share_the_method_and_differ_in_b_hat():
    a, b = get_tableau("dopri5"), get_tableau("dopri5_shampine")
    assert a.A == b.A and a.b == b.b and a.c == b.c
    assert a.b_hat != b.b_hat
