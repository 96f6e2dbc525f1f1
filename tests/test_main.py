"""``python -m stiffkit``: the demo prints the catalogue and a measured-order table."""

import os
import subprocess
import sys

import pytest
from _asymptotics import linear_order_is_measurable

from stiffkit.tableaux import get_tableau, real_stability_interval
from stiffkit.tableaux.catalogue import CATALOGUE

#: The shipped catalogue (the test session may register more tableaux; the demo's process
#: sees only these).
SHIPPED = sorted(tab.name for tab, _ in CATALOGUE)

CATALOGUE_COLUMNS = [
    "name", "stages", "order", "computed_order", "embedded_order", "computed_embedded_order",
    "fsal", "evals_per_step", "stability_interval", "embedded_stability_interval", "exact",
]
ORDER_COLUMNS = ["name", "declared", "measured", "smallest_error"]

#: Accepted measured − declared. The demo fits four grids per method, starting coarse so the
#: errors stay far above roundoff; there the 5(4) pairs and DOP853, whose leading error
#: terms are small against the next ones, still measure high (Tsit5 6.4, DOPRI5 6.0, DOP853
#: 8.5), while every method that really has order p measures at least p − 0.02. A lost order
#: fails the lower bound; a method declared two orders too low fails the upper one. A method
#: whose asymptotic range lies below float64 roundoff on this problem (RK8(7)13M measures
#: 10.7) is held to the lower bound only.
BELOW, ABOVE = 0.25, 1.5
#: |λ|·T of the demo's problem x' = A x + c (a double eigenvalue −1.5, T = 2).
DEMO_SCALE = 3.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the demo once, outside the checkout, and return its completed process."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "stiffkit"], cwd=tmp_path_factory.mktemp("demo"),
                          env=env, capture_output=True, text=True, timeout=300)


def _table(text, first_columns):
    """Return the whitespace-separated table whose header starts with `first_columns`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == first_columns[:2])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = line.split()
        assert len(cells) == len(header), f"ragged row {line!r}"
        rows.append(dict(zip(header, cells, strict=True)))
    return header, rows


def test_demo_exits_cleanly(demo):
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Traceback" not in demo.stderr
    assert demo.stdout.startswith("stiffkit tableau catalogue")


def test_catalogue_table_lists_every_tableau_with_its_orders_and_intervals(demo):
    header, rows = _table(demo.stdout, CATALOGUE_COLUMNS)
    assert header == CATALOGUE_COLUMNS
    assert [r["name"] for r in rows] == SHIPPED
    for r in rows:
        tab = get_tableau(r["name"])
        assert int(r["stages"]) == tab.num_stages and int(r["order"]) == tab.order
        assert r["computed_order"] == r["order"]
        assert r["computed_embedded_order"] == r["embedded_order"]
        assert r["embedded_order"] == (str(tab.embedded_order) if tab.is_embedded else "<NA>")
        assert r["fsal"] == str(tab.fsal) and r["exact"] == str(tab.exact)
        assert int(r["evals_per_step"]) == tab.evals_per_step
        assert r["stability_interval"] == f"{real_stability_interval(tab):.4f}"
    by_name = {r["name"]: r for r in rows}
    assert by_name["rk4"]["stability_interval"] == "2.7853"
    assert by_name["dopri5"]["stability_interval"] == "3.3066"
    assert by_name["dop853"]["stability_interval"] == "6.3937"


def test_measured_orders_are_close_to_the_declared_ones(demo):
    header, rows = _table(demo.stdout, ORDER_COLUMNS)
    assert header == ORDER_COLUMNS
    assert [r["name"] for r in rows] == SHIPPED
    for r in rows:
        declared, measured = int(r["declared"]), float(r["measured"])
        tab = get_tableau(r["name"])
        assert declared == tab.order
        assert measured >= declared - BELOW, r
        if linear_order_is_measurable(tab, scale=DEMO_SCALE, floor=1e-13):
            assert measured <= declared + ABOVE, r
        assert 0 < float(r["smallest_error"]) < 1e-2, r


def test_demo_rejects_unknown_arguments():
    from stiffkit.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2
