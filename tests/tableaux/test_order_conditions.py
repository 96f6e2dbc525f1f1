"""Order conditions from rooted trees: tree counts, densities, computed orders."""

from fractions import Fraction

import pytest

from stiffkit.tableaux import (
    ButcherTableau,
    computed_order,
    get_tableau,
    list_tableaux,
    order_condition_residuals,
    rooted_trees,
)
from stiffkit.tableaux.order_conditions import tree_density, tree_order

ALL = list_tableaux()


def test_tree_counts_match_oeis_a000081():
    assert [len(rooted_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]


def test_trees_are_distinct_and_of_the_right_order():
    for n in range(1, 9):
        trees = rooted_trees(n)
        assert len(set(trees)) == len(trees)
        assert all(tree_order(t) == n for t in trees)


def test_known_densities():
    leaf = ()
    assert tree_density(leaf) == 1
    assert tree_density((leaf,)) == 2  # [•]
    assert tree_density((leaf, leaf)) == 3  # [•,•]
    assert tree_density(((leaf,),)) == 6  # [[•]]
    assert tree_density((((leaf,),),)) == 24  # tall tree of order 4
    # Σ over trees of order n of n!/(γ(t)σ(t)) = n^{n−1}... checked instead via the
    # bushy tree: γ([•]*(n−1)) = n.
    assert tree_density(tuple([leaf] * 7)) == 8


@pytest.mark.parametrize("name", ALL)
def test_computed_order_equals_declared(name):
    tab = get_tableau(name)
    assert computed_order(tab) == tab.order
    if tab.is_embedded:
        assert computed_order(tab, embedded=True) == tab.embedded_order
    if tab.b_hat_aux is not None:
        assert computed_order(tab, which="aux") == tab.aux_order


def test_residual_table_for_rk4():
    df = order_condition_residuals("rk4", 5)
    assert len(df) == 1 + 1 + 2 + 4 + 9
    assert df[df.order <= 4].satisfied.all()
    assert not df[df.order == 5].satisfied.all()
    row = df[df.tree == "[[•]]"].iloc[0]
    assert row.gamma == 6 and row.phi == pytest.approx(1 / 6)


def test_perturbed_coefficient_lowers_the_order():
    rk4 = get_tableau("rk4")
    A = [list(r) for r in rk4.A]
    A[3][2] = Fraction(1) - Fraction(1, 10)
    A[3][1] = Fraction(1, 10)  # keep the row sum = c_4 = 1
    broken = ButcherTableau("rk4_broken", A=A, b=rk4.b, c=rk4.c, order=1)  # declared honestly
    assert computed_order(broken) < 4


def test_decimal_tableaux_use_their_tolerance():
    tsit5 = get_tableau("tsit5")
    df = order_condition_residuals(tsit5, 6)
    assert df[df.order <= 5].residual.abs().max() < float(tsit5.tol)
    # Order 6 fails by far more than the tolerance: the order is sharp, not a tie.
    assert df[df.order == 6].residual.abs().max() > 1e6 * float(tsit5.tol)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`order`"):
        rooted_trees(0)
    with pytest.raises(ValueError, match="no embedded"):
        computed_order("rk4", embedded=True)
    with pytest.raises(ValueError, match="`which`"):
        order_condition_residuals("rk4", which="other")


@pytest.mark.parametrize(("changes", "message"), [
    (dict(order=5),
     "`order` = 5 is not satisfied by `b`: the order conditions hold only up to order 4"),
    (dict(b_hat=["1/6", "1/3", "1/3", "1/6"], embedded_order=1), "`b_hat` must differ"),
])
def test_a_declared_order_the_coefficients_do_not_satisfy_is_refused(changes, message):
    rk4 = get_tableau("rk4")
    with pytest.raises(ValueError, match=message):
        ButcherTableau("rk4_overclaimed", A=rk4.A, b=rk4.b, c=rk4.c, **{"order": 4, **changes})


def test_an_overclaimed_embedded_order_is_refused():
    heun = get_tableau("heun_euler")
    with pytest.raises(ValueError, match="`embedded_order` = 2 is not satisfied by `b_hat`"):
        ButcherTableau("heun_overclaimed", A=heun.A, b=heun.b, c=heun.c, order=2,
                       b_hat=heun.b_hat, embedded_order=2)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: order_condition_residuals("rk4", 0), "`max_order` must be a positive integer"),
        (lambda: order_condition_residuals("rk4", 2.5), "`max_order` must be a positive integer"),
        (lambda: order_condition_residuals("rk4", None), "`max_order` must be a positive integer"),
        (lambda: order_condition_residuals("rk4", 30), "`max_order` must be at most 12"),
        (lambda: computed_order("rk4", max_order=-1), "`max_order` must be a positive integer"),
        (lambda: computed_order("rk4", max_order="3"), "`max_order` must be a positive integer"),
        (lambda: computed_order("rk4", which="bad"), "`which` must be 'main', 'embedded' or 'aux'"),
    ],
)
def test_bad_orders_and_weights_are_named(call, message):
    """Issue 12: max_order <= 0 gave an empty table / order 0 or -1, non-integers raw errors,
    a huge one ran for hours; an unknown `which` read "has no bad weights"."""
    with pytest.raises(ValueError, match=message):
        call()
