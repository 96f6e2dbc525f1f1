"""Smoke tests of the benchmark scripts: each runs end to end in its ``--quick`` mode.

Every script under ``benchmarks/`` is started as a subprocess with ``--quick --out <tmp>``
(from the repository root, ``MPLBACKEND=Agg``); the test checks that it exits cleanly, writes
its Markdown and CSV files, and that the numbers in them are finite where they must be. No
timing is ever asserted — timings belong to the benchmark tables, not to tests.

The six scripts start together in one module-scoped fixture and run concurrently (each with
one intra-op thread, so they do not oversubscribe the cores): most of a quick run is
importing torch and building the toy world, and running them side by side keeps the file
well under a minute and a half.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
TIMEOUT_S = 240

#: script -> {csv file: columns that must be finite in every row}
EXPECTED = {
    "bench_erk_overhead.py": {
        "erk_overhead.csv": ["plain_s", "heun_s", "erk_s", "erk_vs_plain", "erk_vs_heun",
                             "nfe_plain", "nfe_erk", "extra_nfe", "heun_vs_plain_max_abs_diff",
                             "plain_peak_MB", "erk_peak_MB", "erk_minus_plain_units"],
        "erk_overhead_split.csv": ["eval_us", "correction_us", "predicted_overhead_16"],
    },
    "bench_estimators.py": {
        "estimators.csv": ["median_rel_error", "max_rel_error", "seconds_per_sample"],
        "estimators_scaling.csv": ["seconds_per_sample"],
        "estimators_slopes.csv": ["slope"],
    },
    "bench_integrators.py": {
        "integrators_fixed.csv": ["max_abs_diff", "stiffkit_s", "torchdiffeq_s", "ratio"],
        "integrators_adaptive.csv": ["stiffkit_error", "torchdiffeq_error", "stiffkit_s",
                                     "torchdiffeq_s", "ratio", "per_nfe_ratio"],
    },
    "bench_mixture.py": {
        "mixture.csv": ["seconds", "points_per_s", "peak_extra_MB"],
    },
    "bench_digits.py": {
        "digits.csv": ["stiffkit_s", "naive_s", "points_per_s", "per_1000_s",
                       "stiffkit_vs_naive", "max_rel_diff"],
        "digits_targets.csv": ["measured"],
    },
    "bench_jvp.py": {
        "jvp.csv": ["forward_ms", "vjp_first_ms", "vjp_next_ms", "fd_ms", "vjp_next_vs_forward",
                    "fd_vs_forward", "vjp_max_rel_diff", "fd_max_rel_diff", "fd_median_rel_diff"],
    },
}

#: script -> its Markdown results file
MARKDOWN = {"bench_erk_overhead.py": "erk_overhead.md", "bench_estimators.py": "estimators.md",
            "bench_integrators.py": "integrators.md", "bench_mixture.py": "mixture.md",
            "bench_jvp.py": "jvp.md", "bench_digits.py": "digits.md"}


def test_every_script_is_covered():
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every script at once; yield ``{script: (Popen, out_dir)}``."""
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    for script in EXPECTED:
        out = tmp_path_factory.mktemp(script.removesuffix(".py"))
        procs[script] = (subprocess.Popen(
            [sys.executable, str(BENCH / script), "--quick", "--out", str(out)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("script", list(EXPECTED))
def test_quick_run_writes_finite_results(runs, script):
    proc, out = runs[script]
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
        pytest.fail(f"{script} --quick did not finish in {TIMEOUT_S} s:\n{log[-3000:]}")
    assert proc.returncode == 0, f"{script} failed:\n{log[-3000:]}"
    md = (out / MARKDOWN[script]).read_text()
    assert md.startswith("## ") and "Load average" in md and "| " in md
    for csv, columns in EXPECTED[script].items():
        df = pd.read_csv(out / csv)
        assert len(df) > 0, csv
        missing = set(columns) - set(df.columns)
        assert not missing, f"{csv} lacks {missing}"
        values = df[columns].to_numpy(dtype=float)
        assert np.isfinite(values).all(), f"{csv}: non-finite values in {columns}\n{df[columns]}"


def test_erk_guid_adds_no_evaluations(runs):
    """The counted NFE of ERK-Guid equals plain Heun's, and w_stiff = 0 reproduces plain Heun."""
    proc, out = runs["bench_erk_overhead.py"]
    proc.communicate(timeout=TIMEOUT_S)
    df = pd.read_csv(out / "erk_overhead.csv")
    assert (df.extra_nfe == 0).all() and (df.extra_points == 0).all()
    assert (df.nfe_plain == 2 * df.steps - 1).all()
    assert (df.heun_vs_plain_max_abs_diff == 0).all()


def test_integrators_agree_with_torchdiffeq(runs):
    """Same grid, same method: stiffkit's Heun and torchdiffeq's heun2 agree to roundoff."""
    proc, out = runs["bench_integrators.py"]
    proc.communicate(timeout=TIMEOUT_S)
    fixed = pd.read_csv(out / "integrators_fixed.csv")
    assert (fixed.max_abs_diff <= 1e-12).all()
    assert (fixed.stiffkit_nfe == fixed.torchdiffeq_nfe).all()


def test_jvp_paths_agree(runs):
    proc, out = runs["bench_jvp.py"]
    proc.communicate(timeout=TIMEOUT_S)
    df = pd.read_csv(out / "jvp.csv")
    tol = df.dtype.map({"float32": 1e-4, "float64": 1e-12})
    assert (df.vjp_max_rel_diff <= tol).all()
    # fd is an approximation: close in float64; in float32 its default step is coarse for this
    # drift (see the benchmark's notes), so only the typical sample is held to a bound.
    assert (df[df.dtype == "float64"].fd_max_rel_diff <= 1e-4).all()
    assert (df[df.dtype == "float32"].fd_median_rel_diff <= 0.05).all()


def test_digits_maps_agree_with_the_full_d_closed_form(runs):
    """The subspace implementation equals the naive full-d formulas to roundoff."""
    proc, out = runs["bench_digits.py"]
    proc.communicate(timeout=TIMEOUT_S)
    df = pd.read_csv(out / "digits.csv")
    assert set(df.op) == {"denoise", "drift_jacobian"} and set(df.d) >= {64}
    assert (df.max_rel_diff <= 1e-12).all()
