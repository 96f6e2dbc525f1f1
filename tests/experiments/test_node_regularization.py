"""Smoke test of ``experiments/node_regularization.py`` (a ``--quick`` run) and its summaries."""

import os
import subprocess
import sys
from pathlib import Path

import _golden
import node_regularization as nr
import numpy as np
import pandas as pd
import pytest
from _lib import ROOT


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("node_regularization") / "out"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "node_regularization.py"), "--quick",
         "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_writes_png_csv_markdown_and_caches(quick_run):
    out, stdout = quick_run
    png = out / "node_regularization.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(Path(os.environ["STIFFKIT_CACHE"]).glob("node_regularization-*.pkl"))
    md = (out / "node_regularization.md").read_text(encoding="utf-8")
    assert md.startswith("**Neural ODEs: vanilla vs ERNODE vs SRNODE**")
    assert "| task | method | λ |" in md and "Pal et al." in md
    assert "NFE target" in stdout and "cost target" in stdout
    assert not list(out.glob("*.tmp"))


def test_every_task_method_and_kind_is_measured(quick_run):
    df = pd.read_csv(quick_run[0] / "node_regularization.csv")
    cfg = nr.QUICK
    runs = df[df["kind"] == "run"]
    want = {(t, m, w) for t in ("digits", "spirals") for m, w in nr.methods(cfg)}
    assert set(zip(runs["task"], runs["method"], runs["weight"])) == want
    assert len(runs) == len(want) * cfg["seeds"]
    # DOPRI5 (FSAL): 6 evaluations per attempted step + the first drift and the h0 probe.
    assert ((runs["test_nfe"] - 2) % 6 == 0).all() and (runs["test_nfe"] >= 8).all()
    assert (runs["test_rs"] >= 0).all() and (runs["test_re"] >= 0).all()
    digits = runs[runs["task"] == "digits"]
    assert digits["metric"].between(0, 1).all()
    assert (runs.loc[runs["task"] == "spirals", "metric"] > 0).all()
    assert runs.loc[runs["method"] == "vanilla", "cost_ratio_seconds"].isna().all()
    assert (runs.loc[runs["method"] != "vanilla", "cost_ratio_seconds"] > 0).all()
    curves = df[df["kind"] == "curve"]
    assert set(curves["epoch"]) == set(range(1, cfg["digits_epochs"] + 1))
    an = df[df["kind"] == "analyze"]
    assert len(an) and set(an["method"]) == {"vanilla", "ernode", "srnode"}
    assert (an["lambda_max"] > 0).all() and an["stiff_share"].between(0, 1).all()
    # The regularisers change the trained models (same seed, same data).
    by = runs.set_index(["task", "method"])["test_rs"]
    assert by[("digits", "srnode")] != by[("digits", "vanilla")]


def test_table_ratios_intervals_and_targets_on_a_known_frame():
    rows = []
    for seed, (nfe_v, nfe_e, acc_v, acc_e) in enumerate([(100, 60, 0.97, 0.968),
                                                         (110, 66, 0.96, 0.957),
                                                         (90, 54, 0.98, 0.976)]):
        for method, nfe, acc, sec, cost in (("vanilla", nfe_v, acc_v, 1.0, np.nan),
                                            ("ernode", nfe_e, acc_e, 1.05, 1.08)):
            rows.append(dict(kind="run", task="digits", method=method,
                             weight=0.0 if method == "vanilla" else 1.0, seed=seed, metric=acc,
                             test_nfe=nfe, step_seconds=sec, cost_ratio_seconds=cost))
    tab = nr.table(pd.DataFrame(rows)).set_index("method")
    assert tab.loc["ernode", "nfe_ratio"] == pytest.approx(0.6)
    assert tab.loc["ernode", "metric_change"] == pytest.approx(-0.003)
    assert tab.loc["ernode", "step_ratio"] == pytest.approx(1.05)
    m, lo, hi = nr.mean_ci([1.0, 2.0, 3.0])
    assert (m, lo, hi) == pytest.approx((2.0, 2 - 2.4841377, 2 + 2.4841377))
    lines = nr.targets(nr.table(pd.DataFrame(rows)))
    assert "40.0 % fewer NFE" in lines[0] and lines[0].endswith("met")
    assert "+8.0 %" in lines[1] and lines[1].endswith("met")
    for r in rows:
        if r["method"] == "ernode":
            r["cost_ratio_seconds"] = 1.25
    assert nr.targets(nr.table(pd.DataFrame(rows)))[1].endswith("missed by 15.0 %")


def test_quick_output_matches_the_golden_values(quick_run):
    _golden.compare("node_regularization", pd.read_csv(quick_run[0] / "node_regularization.csv"))
