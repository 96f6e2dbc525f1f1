"""Whether a method's convergence order can be measured in float64 on a linear problem.

Shared by the convergence tests (``tests/integrate/test_rk.py``,
``tests/integrate/test_convergence.py``) and the demo's test (``tests/test_main.py``); imported
as a top-level module, since pytest puts this folder, the one of ``tests/conftest.py``, on
``sys.path``.
"""

from __future__ import annotations

import math

from stiffkit.tableaux import ButcherTableau
from stiffkit.tableaux.stability import stability_coefficients


def linear_order_is_measurable(tab: ButcherTableau, *, scale: float, floor: float,
                               bias: float = 0.3) -> bool:
    """Return whether `tab`'s asymptotic range on a linear problem lies above `floor`.

    On ``x' = λx`` one step multiplies by ``R(z)``, ``z = hλ``, and
    ``R(z) − e^z = e_{p+1} z^{p+1} + e_{p+2} z^{p+2} + …``. The measured slope is within about
    `bias` of the order p only once ``|z| ≤ bias·|e_{p+1} / e_{p+2}|``; the global error there
    is about ``scale·|e_{p+1}|·|z|^p`` (``scale = |λ|·T``). When that is below the roundoff
    `floor`, no float64 grid can show the order (RK8(7)13M: ``e_9 ≈ −3.6e−9`` against
    ``e_10 ≈ −3.3e−8``, so the asymptotic range starts near 1e−20); the exact order
    conditions pin it instead (``tests/tableaux/test_order_conditions.py``).
    """
    coeffs = [float(v) for v in stability_coefficients(tab)]
    p = tab.order

    def defect(k):
        return (coeffs[k] if k < len(coeffs) else 0.0) - 1 / math.factorial(k)

    lead, nxt = abs(defect(p + 1)), abs(defect(p + 2))
    onset = min(1.0, bias * lead / nxt) if nxt > 0 else 1.0
    return scale * lead * onset**p >= floor
