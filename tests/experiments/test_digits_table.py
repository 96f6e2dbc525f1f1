"""Smoke tests of ``experiments/digits_table.py`` and ``experiments/digits_grid.py`` (quick)."""

import os
import subprocess
import sys

import _golden
import numpy as np
import pandas as pd
import pytest
from _lib import ROOT

FLOOR = "real vs real (floor)"
METRICS = ("fd", "fd_lo", "fd_hi", "precision", "recall", "class_consistency", "sw",
           "endpoint_error_mean", "endpoint_error_mean_lo", "endpoint_error_mean_hi")


def _run(script: str, tmp_path, *extra: str) -> str:
    out = tmp_path / "out"  # results go to the session cache ($STIFFKIT_CACHE, conftest)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), "--quick", "--out", str(out), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits_table")
    stdout = _run("digits_table.py", tmp)
    return tmp / "out", stdout


@pytest.fixture(scope="module")
def digits_grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits_grid")
    stdout = _run("digits_grid.py", tmp)
    return tmp / "out", stdout


def test_digits_table_writes_csv_png_and_markdown(digits_table):
    out, stdout = digits_table
    assert (out / "digits_table.png").stat().st_size > 10_000
    md = (out / "digits_table.md").read_text(encoding="utf-8")
    assert md.startswith("**Digits table") and "| N | method |" in md and "floor" in md
    df = pd.read_csv(out / "digits_table.csv")
    table = df[df["part"] == "table"]
    runs = table[table["method"] != FLOOR]
    expected = {"Heun", "ERK-Guid", "ERK-Guid (w_stiff = 1/√6)", "ERK-Guid (oracle eigenpair)",
                "CFG", "CFG + ERK-Guid", "AG", "AG + ERK-Guid"}
    assert set(runs["method"]) == expected
    assert md.count("\n| ") == len(runs) + 2  # header + one line per run + the floor row
    for col in (*METRICS, "sampler_seconds", "time_vs_plain", "guidance_weight"):
        assert np.isfinite(runs[col]).all(), col
    assert "ERK-Guid vs Heun" in stdout and "CFG w = " in stdout


def test_digits_table_costs_and_the_chosen_weights(digits_table):
    df = pd.read_csv(digits_table[0] / "digits_table.csv")
    table = df[df["part"] == "table"]
    runs = table[table["method"] != FLOOR].set_index(["num_steps", "method"])
    for n in runs.index.get_level_values(0).unique():
        at = runs.loc[n]
        assert (at["nfe"] == 2 * n - 1).all()  # ERK-Guid's NFE equals Heun's, guided or not
        assert at.loc["ERK-Guid", "network_calls"] == at.loc["Heun", "network_calls"]
        assert at.loc["ERK-Guid (oracle eigenpair)", "network_calls"] > at.loc["Heun", "nfe"]
        assert at.loc["Heun", "guidance_weight"] == 1.0
    sweep = df[df["part"] == "sweep"]
    for guidance in ("cfg", "ag"):
        part = sweep[sweep["guidance"] == guidance]
        chosen = part[part["chosen"].astype(str) == "True"]
        assert len(chosen) == 1 and chosen["fd"].iloc[0] == part["fd"].min()
        used = table.loc[table["guidance"] == guidance, "guidance_weight"]
        assert (used == chosen["guidance_weight"].iloc[0]).all()


def test_digits_table_is_sane_against_its_floor(digits_table):
    df = pd.read_csv(digits_table[0] / "digits_table.csv")
    table = df[df["part"] == "table"]
    floor = table[table["method"] == FLOOR].iloc[0]
    runs = table[table["method"] != FLOOR]
    assert floor["n"] == 898 and 0.9 < floor["class_consistency"] <= 1
    assert (runs["fd"] > floor["fd"]).all()  # a quick run is far from the data
    assert (runs["class_consistency"] > 0.5).all()  # the labels condition the samples
    assert (runs["endpoint_error_mean"] > 0).all()
    assert (runs[["precision", "recall", "class_consistency"]].to_numpy() <= 1).all()


def test_digits_grid_writes_a_finite_grid(digits_grid):
    out, stdout = digits_grid
    assert (out / "digits_grid.png").stat().st_size > 10_000
    df = pd.read_csv(out / "digits_grid.csv")
    runs = df[df["method"] != FLOOR]
    assert len(df[df["method"] == FLOOR]) == 1
    assert runs[["w_stiff", "w_con", "num_steps"]].drop_duplicates().shape[0] == len(runs)
    for col in METRICS:
        assert np.isfinite(runs[col]).all(), col
    assert (runs["nfe"] == 2 * runs["num_steps"] - 1).all()
    for _, part in runs.groupby("num_steps"):
        assert (part["w_stiff"] == 0).sum() == 1  # one Heun run per N
        erk = part[part["w_stiff"] > 0]
        assert len(erk) == erk["w_stiff"].nunique() * erk["w_con"].nunique()
        assert (erk.loc[erk["w_con"] == 0, "gate_rate"] == 1).all()
        closed = erk.loc[erk["w_con"] == erk["w_con"].max(), "gate_rate"]
        assert (closed < erk.loc[erk["w_con"] == 0, "gate_rate"].min()).all()
        heun = part[part["w_stiff"] == 0].iloc[0]
        assert (erk["fd"] != heun["fd"]).any()
    assert "best FD-digits" in stdout and "best endpoint" in stdout


@pytest.mark.parametrize("script", ["digits_table", "digits_grid"])
def test_quick_outputs_match_the_golden_values(script, request):
    out, _ = request.getfixturevalue(script)
    _golden.compare(script, pd.read_csv(out / f"{script}.csv"))  # see tests/experiments/_golden.py
