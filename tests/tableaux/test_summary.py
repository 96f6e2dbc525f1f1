"""`tableau_summary`: the catalogue as a table, checked against the literature."""

import pandas as pd
import pytest

from stiffkit.tableaux import (
    ButcherTableau,
    list_tableaux,
    real_stability_interval,
    tableau_summary,
)

COLUMNS = [
    "name", "stages", "order", "computed_order", "embedded_order", "computed_embedded_order",
    "fsal", "evals_per_step", "stability_interval", "embedded_stability_interval", "exact",
]

#: (stages, order, embedded order or None) as published (see stiffkit/tableaux/catalogue.py).
PUBLISHED = {
    "euler": (1, 1, None),
    "heun_euler": (2, 2, 1),
    "midpoint": (2, 2, None),
    "ralston": (2, 2, None),
    "rk4": (4, 4, None),
    "rk38": (4, 4, None),
    "ssprk3": (3, 3, None),
    "bogacki_shampine": (4, 3, 2),
    "fehlberg12": (3, 2, 1),
    "fehlberg45": (6, 4, 5),
    "cash_karp": (6, 5, 4),
    "dopri5": (7, 5, 4),
    "dopri5_shampine": (7, 5, 4),
    "tsit5": (7, 5, 4),
    "dop853": (13, 8, 5),
    "dopri8": (14, 8, 7),  # RK8(7)13M's 13 stages plus the FSAL evaluation torchdiffeq adds
}

#: Methods that are first-same-as-last, from the literature.
KNOWN_FSAL = {"bogacki_shampine", "dopri5", "dopri5_shampine", "tsit5", "dop853", "dopri8"}

#: Real stability intervals [-r, 0] (Hairer & Wanner, Vol. II, §IV.2): with s = p ≤ 4 stages
#: the stability polynomial is the Taylor polynomial of e^z, so r depends on p alone.
KNOWN_INTERVALS = {
    "euler": 2.0, "heun_euler": 2.0, "midpoint": 2.0, "ralston": 2.0,
    "ssprk3": 2.5127, "rk4": 2.7853, "rk38": 2.7853,
    "dopri5": 3.3066, "dopri5_shampine": 3.3066, "dop853": 6.3937,
}


@pytest.fixture(scope="module")
def summary():
    return tableau_summary().set_index("name", drop=False)


def test_one_row_per_registered_tableau_in_sorted_order(summary):
    assert list(summary.columns) == COLUMNS
    assert summary["name"].tolist() == list_tableaux()
    assert summary["name"].is_unique
    assert set(PUBLISHED) <= set(summary["name"])


def test_column_dtypes(summary):
    assert pd.api.types.is_string_dtype(summary["name"])
    for col in ("stages", "order", "computed_order", "evals_per_step"):
        assert summary[col].dtype == "int64", col
    for col in ("embedded_order", "computed_embedded_order"):
        assert summary[col].dtype == "Int64", col  # nullable: <NA> without an embedded pair
    for col in ("fsal", "exact"):
        assert summary[col].dtype == bool, col
    for col in ("stability_interval", "embedded_stability_interval"):
        assert summary[col].dtype == "float64", col


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_stages_and_orders_are_the_published_ones(summary, name):
    row = summary.loc[name]
    stages, order, embedded = PUBLISHED[name]
    assert (row.stages, row.order, row.computed_order) == (stages, order, order)
    if embedded is None:
        assert pd.isna(row.embedded_order) and pd.isna(row.computed_embedded_order)
        assert pd.isna(row.embedded_stability_interval)
    else:
        assert row.embedded_order == row.computed_embedded_order == embedded
        assert row.embedded_stability_interval > 0


def test_declared_orders_equal_the_orders_from_rooted_trees(summary):
    # Every row, including tableaux registered by other tests or by users.
    assert (summary.order == summary.computed_order).all()
    emb = summary.embedded_order.notna()
    assert (summary.embedded_order[emb] == summary.computed_embedded_order[emb]).all()
    assert summary.computed_embedded_order[~emb].isna().all()


@pytest.mark.parametrize("name, interval", sorted(KNOWN_INTERVALS.items()))
def test_known_stability_intervals(summary, name, interval):
    assert summary.loc[name, "stability_interval"] == pytest.approx(interval, abs=1e-4)


def test_stability_columns_are_the_stability_module_values(summary):
    for name in summary.index:
        row = summary.loc[name]
        assert row.stability_interval == real_stability_interval(name)
        if pd.notna(row.embedded_order):
            assert row.embedded_stability_interval == real_stability_interval(name, embedded=True)
    # Heun's embedded method is Euler, whose interval is [-2, 0].
    assert summary.loc["heun_euler", "embedded_stability_interval"] == pytest.approx(2.0)


def test_fsal_flags_and_evaluations_per_step(summary):
    known = summary.loc[sorted(PUBLISHED)]
    assert set(known.index[known.fsal]) == KNOWN_FSAL
    # FSAL methods reuse their last stage as the next step's first.
    assert (summary.evals_per_step == summary.stages - summary.fsal.astype(int)).all()
    assert summary.loc["dopri5", "evals_per_step"] == 6
    assert summary.loc["dop853", "evals_per_step"] == 12
    assert summary.loc["dopri8", "evals_per_step"] == 13
    assert summary.loc["rk4", "evals_per_step"] == 4


def test_exact_flag_marks_the_decimal_tableaux(summary):
    known = summary.loc[sorted(PUBLISHED)]
    # Tsit5 and RK8(7)13M were published in decimals (or as rational approximations) and
    # DOP853 involves √6; the rest are rational.
    assert set(known.index[~known.exact]) == {"tsit5", "dop853", "dopri8"}


def test_names_subset_keeps_the_given_order_and_resolves_aliases(summary):
    sub = tableau_summary(["rk4", "rk45", "heun"])
    assert sub["name"].tolist() == ["rk4", "dopri5", "heun_euler"]
    assert list(sub.columns) == COLUMNS
    pd.testing.assert_frame_equal(
        sub.reset_index(drop=True),
        summary.loc[["rk4", "dopri5", "heun_euler"]].reset_index(drop=True),
    )


def test_an_unregistered_tableau_object_is_summarised_too():
    tab = ButcherTableau("summary_test_ralston", A=[[], ["2/3"]], b=["1/4", "3/4"],
                         c=[0, "2/3"], order=2)
    row = tableau_summary([tab]).iloc[0]
    assert row["name"] == "summary_test_ralston" and "summary_test_ralston" not in list_tableaux()
    assert (row.stages, row.order, row.computed_order, row.fsal) == (2, 2, 2, False)
    assert row.stability_interval == pytest.approx(2.0)


def test_unknown_name_raises_and_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown tableau 'nope'; known: .*dopri5"):
        tableau_summary(["rk4", "nope"])


def test_an_empty_selection_raises_instead_of_listing_everything():
    with pytest.raises(ValueError, match="`names` must name at least one tableau"):
        tableau_summary([])


@pytest.mark.parametrize("names", ["rk4", 3])
def test_a_single_name_or_a_non_sequence_is_refused(names):
    """Issue 12: tableau_summary("rk4") looked up 'r', 'k', '4' one by one."""
    with pytest.raises(TypeError, match="`names` must be a sequence of tableau names"):
        tableau_summary(names)
