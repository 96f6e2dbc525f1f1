"""Smoke tests of ``experiments/fig4.py`` and ``experiments/table1.py`` (``--quick`` runs)."""

import os
import subprocess
import sys

import _golden
import numpy as np
import pandas as pd
import pytest
from _lib import ROOT

EXACT = "exact samples"


def _run(script: str, tmp_path, *extra: str) -> str:
    out = tmp_path / "out"  # results go to the session cache ($STIFFKIT_CACHE, conftest)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), "--quick", "--out", str(out), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def fig4(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fig4")
    stdout = _run("fig4.py", tmp)
    return tmp / "out", stdout


@pytest.fixture(scope="module")
def table1(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table1")
    stdout = _run("table1.py", tmp)
    return tmp / "out", stdout


def test_fig4_writes_a_finite_grid(fig4):
    out, stdout = fig4
    assert (out / "fig4.png").stat().st_size > 10_000
    df = pd.read_csv(out / "fig4.csv")
    runs = df[df["method"] != EXACT]
    assert len(df[df["method"] == EXACT]) == 1
    assert runs[["w_stiff", "w_con", "num_steps"]].drop_duplicates().shape[0] == len(runs)
    for col in ("sw", "endpoint_error_mean", "nll_mean", "sw_floor", "nll_truth_mean"):
        assert np.isfinite(runs[col]).all(), col
    assert (runs["nfe"] == 2 * runs["num_steps"] - 1).all()
    assert "best endpoint" in stdout


def test_fig4_heun_curve_is_flat_and_the_gate_closes(fig4):
    df = pd.read_csv(fig4[0] / "fig4.csv")
    runs = df[df["method"] != EXACT]
    for _, part in runs[runs["w_stiff"] == 0].groupby("num_steps"):
        assert part["w_con"].nunique() > 1
        for col in ("sw", "endpoint_error_mean", "nll_mean"):
            assert part[col].nunique() == 1, col  # w_stiff = 0 is Heun whatever the gate
    erk = runs[runs["w_stiff"] > 0]
    assert (erk.loc[erk["w_con"] == 0, "gate_rate"] == 1).all()
    assert (erk.loc[erk["w_con"] == erk["w_con"].max(), "gate_rate"] < 0.05).all()


def test_table1_writes_csv_png_and_markdown(table1):
    out, stdout = table1
    assert (out / "table1.png").stat().st_size > 10_000
    md = (out / "table1.md").read_text(encoding="utf-8")
    assert md.startswith("**Table 1") and "| N | method |" in md and "noise" in md.lower()
    df = pd.read_csv(out / "table1.csv")
    runs = df[df["method"] != EXACT]
    expected = {"Heun", "ERK-Guid", "ERK-Guid (w_stiff = 1/√6)", "ERK-Guid (oracle eigenpair)",
                "CFG", "CFG + ERK-Guid", "AG", "AG + ERK-Guid"}
    assert set(runs["method"]) == expected
    assert md.count("\n| ") == len(runs) + 2  # header + one line per run + the floor row
    for col in ("endpoint_error_mean", "endpoint_error_mean_lo", "endpoint_error_mean_hi", "sw",
                "nll_mean", "nll_median", "outlier_rate", "precision", "recall", "occupancy",
                "sampler_seconds", "time_ms", "time_vs_plain"):
        assert np.isfinite(runs[col]).all(), col
    assert "ERK-Guid vs Heun" in stdout


def test_table1_erk_guid_is_free_and_the_oracle_is_not(table1):
    df = pd.read_csv(table1[0] / "table1.csv")
    runs = df[df["method"] != EXACT].set_index(["num_steps", "method"])
    for n in runs.index.get_level_values(0).unique():
        at = runs.loc[n]
        assert (at["nfe"] == 2 * n - 1).all()  # ERK-Guid's NFE equals Heun's, guided or not
        assert at.loc["ERK-Guid", "network_calls"] == at.loc["Heun", "network_calls"]
        assert at.loc["ERK-Guid (oracle eigenpair)", "network_calls"] > at.loc["Heun", "nfe"]
        assert at.loc["ERK-Guid", "w_stiff"] > 0 and at.loc["Heun", "w_stiff"] == 0


@pytest.mark.parametrize("script", ["fig4", "table1"])
def test_quick_outputs_match_the_golden_values(script, request):
    out, _ = request.getfixturevalue(script)
    _golden.compare(script, pd.read_csv(out / f"{script}.csv"))  # see tests/experiments/_golden.py
