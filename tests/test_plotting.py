"""`stiffkit.plotting`: bad input is named (issue 12); the figures themselves are exercised
in tests/tableaux/test_stability.py and by the experiment scripts."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from stiffkit.plotting import plot_estimate_vs_reference, plot_stability_region, plot_stiffness

FRAME = pd.DataFrame({"t": [0.0, 0.5, 1.0], "rho_hat": [1.0, 2.0, 3.0],
                      "lambda_max": [1.1, 2.1, 3.1]})


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: plot_stability_region(None), TypeError, "`tableaux` must be a tableau"),
        (lambda: plot_stability_region("rk4", resolution=1), ValueError,
         "`resolution` must be an integer >= 2"),
        (lambda: plot_stability_region("rk4", resolution=2.5), ValueError, "`resolution`"),
        (lambda: plot_stability_region("rk4", extent=(0, 1)), ValueError,
         r"`extent` must be \(xmin, xmax, ymin, ymax\)"),
        (lambda: plot_stability_region("rk4", extent=(0, np.nan, 0, 1)), ValueError,
         "`extent` must be a finite number"),
        (lambda: plot_stability_region("rk4", extent=(1, -1, 1, -1)), ValueError,
         "xmin < xmax and ymin < ymax"),
        (lambda: plot_stability_region("rk4", ax=3), TypeError, "`ax` must be a matplotlib Axes"),
        (lambda: plot_stiffness(None), TypeError, "`df` must be a pandas DataFrame"),
        (lambda: plot_stiffness(FRAME.drop(columns="t")), ValueError, r"no column\(s\) \['t'\]"),
        (lambda: plot_stiffness(FRAME.assign(rho_hat=np.inf, lambda_max=np.inf)), ValueError,
         "no finite values"),
        (lambda: plot_estimate_vs_reference(FRAME[["t"]]), ValueError, "has no column"),
        (lambda: plot_estimate_vs_reference(FRAME, x="rho_hat", y="rho_hat"), ValueError,
         "`x` and `y` must be different columns"),
        (lambda: plot_estimate_vs_reference(FRAME.assign(rho_hat=["a", "b", "c"])), ValueError,
         "column `rho_hat` must be numeric"),
    ],
)
def test_bad_input_is_named(call, exc, message):
    """Issue 12: matplotlib / numpy / pandas errors before, and reversed or degenerate
    extents drew an empty figure."""
    with pytest.raises(exc, match=message):
        call()
    plt.close("all")


def test_a_single_column_name_and_non_positive_values():
    ax = plot_stiffness(FRAME, columns="rho_hat")
    assert ax.get_yscale() == "log"
    with pytest.warns(RuntimeWarning, match="1 non-positive value"):
        plot_stiffness(FRAME.assign(rho_hat=[0.0, 2.0, 3.0]), columns=["rho_hat"])
    with pytest.warns(RuntimeWarning, match="non-positive value"):
        plot_estimate_vs_reference(FRAME.assign(rho_hat=[-1.0, 2.0, 3.0]))
    plt.close("all")
