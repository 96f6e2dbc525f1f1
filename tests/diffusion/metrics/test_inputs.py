"""Tests for ``stiffkit.diffusion.metrics._inputs``: every metric function checks its input."""

import pytest
import torch
from _metric_data import F64

from stiffkit.diffusion.metrics import (
    component_occupancy,
    endpoint_error,
    nll_stats,
    precision_recall,
    sliced_wasserstein,
)


def test_metric_functions_reject_nonfinite_and_mismatched_input(ring):
    x = torch.zeros(10, 2, dtype=F64)
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="`x` contains NaN"):
        sliced_wasserstein(bad, x)
    with pytest.raises(ValueError, match="`x` has 2 features"):
        sliced_wasserstein(x, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="`samples` and `reference` must have the same shape"):
        endpoint_error(x, x[:5])
    with pytest.raises(ValueError, match="more than k = 3"):
        precision_recall(x[:3], x)
    with pytest.raises(ValueError, match="`method`"):
        precision_recall(x, x, method="ball")
    with pytest.raises(ValueError, match="`min_count`"):
        component_occupancy(x, ring, min_count=0)
    with pytest.raises(ValueError, match="`threshold`"):
        nll_stats(x, ring, threshold=float("inf"))
