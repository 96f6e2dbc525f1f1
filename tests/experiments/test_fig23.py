"""Smoke tests of ``experiments/fig2.py`` and ``experiments/fig3.py``, run as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

import _golden
import numpy as np
import pandas as pd
import pytest
from _lib import ROOT


def _run(script: str, tmp_path) -> tuple[pd.DataFrame, str]:
    out = tmp_path / "out"  # results go to the session cache ($STIFFKIT_CACHE, conftest)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    png, csv = out / f"{script}.png", out / f"{script}.csv"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert csv.stat().st_size > 0
    cache = Path(os.environ["STIFFKIT_CACHE"])
    assert list(cache.glob(f"{script}-*.pkl")), "compute() result was not cached"
    return pd.read_csv(csv), proc.stdout


@pytest.fixture(scope="module")
def fig2(tmp_path_factory):
    return _run("fig2", tmp_path_factory.mktemp("fig2"))


@pytest.fixture(scope="module")
def fig3(tmp_path_factory):
    return _run("fig3", tmp_path_factory.mktemp("fig3"))


def test_fig2_bins_are_complete_and_lte_alignment_grows(fig2):
    df, stdout = fig2
    assert "fig2: eigenvector alignment" in stdout
    assert set(df["model"]) == {"learned", "exact"}
    num = df[["x_lo", "x_hi", "x_mid", "count", "mean", "ci_lo", "ci_hi", "median"]]
    assert np.isfinite(num.to_numpy()).all()
    assert ((df["mean"] >= 0) & (df["mean"] <= 1) & (df["ci_lo"] <= df["mean"] + 1e-12)
            & (df["mean"] <= df["ci_hi"] + 1e-12)).all()
    learned = set(df.loc[df.model == "learned", "quantity"])
    assert learned == {"cos_lte_v1", "cos_dx_v1", "cos_df_v1", "cos_cfg_v1", "cos_ag_v1",
                       "eig_ratio"}
    assert "cos_ag_v1" not in set(df.loc[df.model == "exact", "quantity"])  # no exact bad model
    for model in ("learned", "exact"):
        lte = df[(df.model == model) & (df.quantity == "cos_lte_v1")].sort_values("bin")
        assert len(lte) >= 3
        assert lte["mean"].iloc[-1] > lte["mean"].iloc[0] + 0.1  # Fig. 2(a): stiffer → aligned


def test_fig3_estimates_track_the_reference(fig3):
    df, stdout = fig3
    assert "fig3: estimator accuracy" in stdout
    assert set(df["model"]) == {"learned", "exact"}
    cols = ["sigma", "h", "lambda_max", "rho_hat", "cos_dx_v1", "cos_df_v1"]
    assert np.isfinite(df[cols].to_numpy()).all()
    assert (df[["lambda_max", "rho_hat"]] > 0).all().all()
    assert df["within_upper"].dtype == bool
    for _, part in df.groupby("model"):
        r = np.corrcoef(np.log(part["lambda_max"]), np.log(part["rho_hat"]))[0, 1]
        assert r > 0.9
        assert part["within_upper"].mean() > 0.8  # Proposition 1's ρ̂ ≤ |λ₁|, mostly
        assert (part["cos_df_v1"] >= part["cos_dx_v1"]).mean() > 0.8  # Fig. 3(b)


@pytest.mark.parametrize("script", ["fig2", "fig3"])
def test_quick_outputs_match_the_golden_values(script, request):
    df, _ = request.getfixturevalue(script)
    _golden.compare(script, df)  # tests/experiments/_golden.py says how to regenerate
