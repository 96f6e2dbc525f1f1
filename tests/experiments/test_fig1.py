"""Smoke test of ``experiments/fig1.py``: the quick run writes a sane PNG and CSV."""

import importlib.util
import os
import subprocess
import sys

import _golden
import numpy as np
import pandas as pd
import pytest
from _lib import ROOT

SCRIPT = ROOT / "experiments" / "fig1.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("fig1", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fig1_quick_run_writes_png_and_csv(tmp_path):
    out = tmp_path / "out"  # results go to the session cache ($STIFFKIT_CACHE, conftest)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(c)" in proc.stdout  # the summary was printed
    png, csv = out / "fig1.png", out / "fig1.csv"
    assert png.stat().st_size > 10_000
    df = pd.read_csv(csv)
    assert set(df.panel) == {"map", "line", "lte"}
    _golden.compare("fig1", df)  # the numbers themselves (tests/experiments/_golden.py)

    finite = {
        "map": ["sigma", "h", "x", "y", "lam", "depth"],
        "line": ["s", "drift_n", "width", "slope", "sigma", "h"],
        "lte": ["sigma", "h", "lam", "lam2", "lte_c1", "lte_c2", "dx_c1", "dx_c2"],
    }
    for panel, cols in finite.items():
        part = df[df.panel == panel]
        assert len(part) > 0
        assert np.isfinite(part[cols].to_numpy(dtype=float)).all(), panel

    # (a) the exact map is stiffest at the smallest σ (thin tips), mildest at the largest.
    exact = df[(df.panel == "map") & (df.model == "exact")]
    by_sigma = exact.groupby("sigma").lam.apply(lambda v: v.abs().max())
    assert by_sigma.iloc[0] > 10 * by_sigma.iloc[-1]
    # (b) across the thin tip the exact drift is stiffer than across the trunk.
    slopes = df[(df.panel == "line") & (df.model == "exact")].groupby("branch_kind").slope.first()
    assert slopes["thin"] > 3 * slopes["thick"] > 0
    # (c) (v₁, v₂) is an orthonormal basis: the normalised coordinates lie on the unit circle.
    lte = df[df.panel == "lte"]
    for name in ("lte", "dx"):
        np.testing.assert_allclose(np.hypot(lte[f"{name}_c1"], lte[f"{name}_c2"]), 1, atol=1e-6)
    # Steps with a pair only: no first step (no pair yet), no final Euler step to σ = 0.
    num_steps = _load_script().QUICK["num_steps"]
    assert set(lte.step) == set(range(1, num_steps - 1))


def test_line_step_must_be_a_map_level():
    """Issue 12: --set map_steps=[0] ran the whole computation, then failed in the plot (one
    map level gave a 1-D axes array) and in the summary (no map at `line_step`)."""
    fig1 = _load_script()
    with pytest.raises(ValueError, match="`line_step` = 14 must be one of `map_steps`"):
        fig1.compute(dict(fig1.QUICK, seed=0, quick=True, map_steps=[0]))
