"""Registry-wide invariants of the tableau catalogue, and agreement with scipy/torchdiffeq."""

from fractions import Fraction

import numpy as np
import pytest
import torch

import stiffkit
from stiffkit.tableaux import (
    ButcherTableau,
    computed_order,
    get_tableau,
    list_tableaux,
    order_condition_residuals,
)

ALL = list_tableaux()
EMBEDDED = [n for n in ALL if get_tableau(n).is_embedded]

REQUIRED = [
    "euler", "heun_euler", "midpoint", "ralston", "rk4", "bogacki_shampine", "fehlberg45",
    "cash_karp", "dopri5", "dopri5_shampine", "tsit5", "dop853",
]

# Which methods are FSAL, from the literature (not from the coefficients).
#: (dopri8 is RK8(7)13M with the FSAL evaluation appended, as torchdiffeq runs it.)
KNOWN_FSAL = {"bogacki_shampine", "dopri5", "dopri5_shampine", "tsit5", "dop853", "dopri8"}


def test_catalogue_contains_required_methods():
    assert set(REQUIRED) <= set(ALL)
    assert stiffkit.list_tableaux() == sorted(stiffkit.list_tableaux())


@pytest.mark.parametrize("name", ALL)
def test_arrays_are_the_rounded_exact_coefficients(name):
    # Consistency itself (row sums, weights summing to 1, explicitness) is checked when a
    # tableau is built; see test_malformed_tableau_raises_naming_the_condition.
    tab = get_tableau(name)
    arr = tab.numpy()
    s = tab.num_stages
    assert arr["A"].shape == (s, s) and arr["b"].shape == (s,) and arr["c"].shape == (s,)
    # Each float is the correctly rounded value of the stored fraction.
    np.testing.assert_array_equal(arr["A"], [[float(v) for v in row] for row in tab.A])
    np.testing.assert_array_equal(arr["b"], [float(v) for v in tab.b])
    np.testing.assert_array_equal(arr["c"], [float(v) for v in tab.c])
    if tab.is_embedded:
        np.testing.assert_array_equal(arr["b_hat"], [float(v) for v in tab.b_hat])
        np.testing.assert_array_equal(arr["error_weights"], [float(v) for v in tab.error_weights])
    with pytest.raises(ValueError):
        arr["A"][0, 0] = 1.0  # read-only views
    tt = tab.torch(torch.float32)
    assert tt["A"].dtype == torch.float32 and tt["A"].shape == (s, s)
    torch.testing.assert_close(tt["b"], torch.tensor(arr["b"], dtype=torch.float32), rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in ALL if get_tableau(n).exact])
def test_exact_tableaux_satisfy_their_order_conditions_exactly(name):
    # Rational coefficients, not their float roundings: every condition up to the order
    # holds with residual exactly 0 (a float 1/3 would leave ~1e-17).
    tab = get_tableau(name)
    df = order_condition_residuals(tab, tab.order)
    assert (df.residual == 0).all()


def test_coefficients_are_parsed_exactly():
    tab = ButcherTableau("parse_check", A=[[], ["1/3"]], b=[Fraction(1, 4), "0.75"],
                         c=[0, "1/3"], order=1)
    assert tab.A[1][0] == Fraction(1, 3) and tab.c[1] == Fraction(1, 3)
    assert tab.b == (Fraction(1, 4), Fraction(3, 4))
    # A binary float is taken at its exact value, not at the decimal it was typed as.
    tab = ButcherTableau("float_check", A=[[], [0.1]], b=[0, 1], c=[0, 0.1], order=1)
    assert tab.c[1] == Fraction(0.1) != Fraction(1, 10)


@pytest.mark.parametrize("name", ALL)
def test_fsal_flag_is_right(name):
    tab = get_tableau(name)
    assert tab.fsal == (name in KNOWN_FSAL)
    assert tab.has_fsal_structure == tab.fsal
    assert tab.evals_per_step == tab.num_stages - int(tab.fsal)


@pytest.mark.parametrize("name", EMBEDDED)
def test_error_weights_and_the_embedded_method(name):
    # That b̂ differs from b and sums to 1 is checked on construction (see below).
    tab = get_tableau(name)
    assert tab.error_weights == tuple(b - bh for b, bh in zip(tab.b, tab.b_hat, strict=True))
    emb = tab.embedded()
    assert emb.name == f"{name}[embedded]" and not emb.is_embedded
    assert emb.A == tab.A and emb.c == tab.c and emb.b == tab.b_hat and emb.tol == tab.tol
    assert emb.order == tab.embedded_order == computed_order(emb)
    with pytest.raises(ValueError, match="no embedded weights"):
        get_tableau("rk4").embedded()


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
    with pytest.raises(TypeError):
        tab.A[1] = (0, 0, 0, 0)
    with pytest.raises(TypeError):
        tab.b[0] = 0
    # The input lists are copied: changing them afterwards does not reach the tableau.
    A, b = [[], ["1/2"]], [0, 1]
    mid = ButcherTableau("copy_check", A=A, b=b, c=[0, "1/2"], order=2)
    A[1][0], b[0] = "1/3", 5
    assert mid.A[1][0] == Fraction(1, 2) and mid.b == (0, 1)


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


@pytest.mark.parametrize(
    "change, exc, message",
    [
        (dict(name=None), TypeError, "`name` must be a string, got NoneType"),
        (dict(name=""), ValueError, "`name` must be a non-empty string"),
        (dict(citation=3), TypeError, "`citation` must be a string"),
        (dict(A=None), TypeError, "`A` must be a sequence of rows, got NoneType"),
        (dict(A=[[], 1]), TypeError, r"`A\[1\]` must be a sequence of numbers, got 1"),
        (dict(A=[[], "1"]), TypeError, r"`A\[1\]` must be a sequence of numbers, got '1'"),
        (dict(b=None), TypeError, "`b` must be a sequence of numbers, got None"),
        (dict(b="01"), TypeError, "`b` must be a sequence of numbers, got '01'"),
        (dict(c=None), TypeError, "`c` must be a sequence of numbers, got None"),
    ],
)
def test_malformed_inputs_raise_naming_the_argument(change, exc, message):
    """Issue 12: None, scalars and strings where sequences belong are named, not raw errors."""
    with pytest.raises(exc, match=message):
        ButcherTableau(**{"name": "bad", **GOOD, **change})


@pytest.mark.parametrize("name", [None, 3, ["rk4"]])
def test_get_tableau_refuses_non_names(name):
    with pytest.raises(TypeError, match="`tableau` must be a catalogue name"):
        get_tableau(name)


def test_register_rejects_bad_aliases_and_torch_rejects_integer_dtypes():
    tab = ButcherTableau("test_only_alias_check", **GOOD)
    for alias in (3, ""):
        with pytest.raises(TypeError, match="`aliases` must be non-empty strings"):
            stiffkit.register_tableau(tab, alias)
    assert "test_only_alias_check" not in list_tableaux()
    for dtype in (torch.int64, "float64"):
        with pytest.raises(TypeError, match="`dtype` must be a floating torch.dtype"):
            tab.torch(dtype=dtype)


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
