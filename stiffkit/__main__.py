"""Demo: ``python -m stiffkit`` prints the tableau catalogue and a convergence check."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from stiffkit.integrate import convergence_study
from stiffkit.tableaux import get_tableau, list_tableaux, tableau_summary


def _linear_problem():
    """A forced linear system x' = A x + c with a known exact solution (float64)."""
    A = torch.tensor([[-1.0, 0.5], [-0.5, -2.0]], dtype=torch.float64)
    c = torch.tensor([0.3, -0.1], dtype=torch.float64)
    x0 = torch.tensor([[1.0, -1.0], [0.2, 0.7]], dtype=torch.float64)
    T = 2.0
    # Exact solution through the augmented matrix exponential.
    M = torch.zeros(3, 3, dtype=torch.float64)
    M[:2, :2], M[:2, 2] = A, c
    E = torch.linalg.matrix_exp(M * T)
    exact = x0 @ E[:2, :2].T + E[:2, 2]
    return (lambda t, x: x @ A.T + c), x0, (0.0, T), exact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    pd.set_option("display.width", 160)
    print("stiffkit tableau catalogue (orders computed from rooted trees, exact arithmetic)\n")
    print(tableau_summary().to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    f, x0, span, exact = _linear_problem()
    print("\nConvergence on x' = A x + c (float64, exact solution by matrix exponential):\n")
    rows = []
    for name in list_tableaux():
        tab = get_tableau(name)
        # Step counts whose errors stay well above roundoff for this order.
        start = {1: 16, 2: 8, 3: 4, 4: 4, 5: 2, 8: 1}.get(tab.order, 2)
        df = convergence_study(f, x0, span, exact, tab, [start * 2**i for i in range(4)])
        rows.append(dict(name=name, declared=tab.order, measured=df.order.iloc[0],
                         smallest_error=df.error.min()))
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(
        "\n(On a linear problem only the stability polynomial's order is exercised; "
        "tests/integrate/test_rk.py also checks a nonlinear non-autonomous problem.)"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    torch.set_default_dtype(torch.float64)
    main()
