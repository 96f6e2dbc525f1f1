"""Smoke and golden tests of ``experiments/digits_alignment.py`` and ``digits_samples.py``."""

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
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    png, csv = out / f"{script}.png", out / f"{script}.csv"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(Path(os.environ["STIFFKIT_CACHE"]).glob(f"{script}-*.pkl")), "not cached"
    return pd.read_csv(csv), proc.stdout


@pytest.fixture(scope="module")
def digits_alignment(tmp_path_factory):
    return _run("digits_alignment", tmp_path_factory.mktemp("digits_alignment"))


@pytest.fixture(scope="module")
def digits_samples(tmp_path_factory):
    return _run("digits_samples", tmp_path_factory.mktemp("digits_samples"))


def test_alignment_rows_are_consistent(digits_alignment):
    df, stdout = digits_alignment
    assert "digits_alignment: alignment and ρ̂ on digits" in stdout
    assert set(df["model"]) == {"learned", "exact"}
    cos = [c for c in df.columns if c.startswith("cos_")]
    vals = df[cos].to_numpy(float)
    assert ((vals[np.isfinite(vals)] >= 0) & (vals[np.isfinite(vals)] <= 1 + 1e-9)).all()
    for _, part in df.groupby("model"):
        # ‖J‖₂ ≥ |λ₁(J)| always, and ≥ |λ₁| of the symmetric part (its numerical range).
        assert (part["sv_max"] >= part["eig_abs"] * (1 - 1e-9)).all()
        assert (part["sv_max"] >= part["lambda_max"] * (1 - 1e-9)).all()
        # Projections on the dominant eigenspace dominate the projection on v₁ alone.
        has = part["v1_defined"].astype(bool)
        assert (part.loc[has, "cos_dx_vdom"] >= part.loc[has, "cos_dx_v1"] - 1e-9).all()
        assert part.loc[~has, "cos_dx_v1"].isna().all() and part["cos_dx_vdom"].notna().all()
        # ρ̂ is NaN only where Δx vanishes (exact mixture, collapsed posterior: Euler exact).
        part = part.dropna(subset=["rho_hat"])
        assert len(part) > 0 and (part["rho_hat"] > 0).all()
        r = np.corrcoef(np.log(part["lambda_max"]), np.log(part["rho_hat"]))[0, 1]
        assert r > 0.95  # ρ̂ tracks the reference across σ (Fig. 3)
    exact, learned = df[df.model == "exact"], df[df.model == "learned"]
    assert exact["asymmetry"].max() < 1e-12 and exact["henrici"].max() < 1e-6
    assert learned["asymmetry"].median() > 1e-3  # the learned score is not a gradient
    assert learned["rho_hat"].notna().all()
    # On the exact mixture, |λ₁| is the trivial 1/σ almost everywhere (memorised images).
    assert ((exact["lambda_max"] * exact["sigma"] - 1).abs() < 0.01).mean() > 0.5


def test_samples_table(digits_samples):
    df, stdout = digits_samples
    assert "digits_samples: Heun vs ERK-Guid" in stdout
    assert len(df) == 8 and set(df["method"]) == {"Heun", "ERK-Guid"}
    assert (df.loc[df.method == "Heun", "w_stiff"] == 0).all()
    erk = df[df.method == "ERK-Guid"].set_index(["num_steps", "guidance"])
    assert erk.loc[(16, "none"), ["w_stiff", "w_con"]].tolist() == [0.75, 0.3]
    assert erk.loc[(16, "cfg"), ["w_stiff", "w_con"]].tolist() == [0.75, 0.5]
    assert erk.loc[(8, "cfg"), ["w_stiff", "w_con"]].tolist() == [0.5, 0.1]
    assert (df.loc[df.guidance == "cfg", "w_cfg"] == 2.0).all()
    assert df["class_consistency"].between(0, 1).all() and (df["fd_digits"] >= 0).all()
    assert (df["nfe"] == 2 * df["num_steps"] - 1).all()  # zero extra evaluations
    # The samplers differ, less with more steps.
    for _, part in df.groupby("guidance"):
        d = part.groupby("num_steps")["mean_abs_diff"].first()
        assert d[8] > d[16] > 0


@pytest.mark.parametrize("script", ["digits_alignment", "digits_samples"])
def test_quick_outputs_match_the_golden_values(script, request):
    df, _ = request.getfixturevalue(script)
    _golden.compare(script, df)  # tests/experiments/_golden.py says how to regenerate
