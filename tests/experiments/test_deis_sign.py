"""Smoke test of ``experiments/deis_sign.py`` (a ``--quick`` run, as a user runs it)."""

import os
import subprocess
import sys
from pathlib import Path

import _golden
import numpy as np
import pandas as pd
import pytest
from _lib import ROOT


@pytest.fixture(scope="module")
def deis_sign(tmp_path_factory):
    out = tmp_path_factory.mktemp("deis_sign") / "out"  # cache: $STIFFKIT_CACHE (conftest)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "deis_sign.py"), "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_writes_csv_png_and_markdown(deis_sign):
    out, stdout = deis_sign
    png = out / "deis_sign.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(Path(os.environ["STIFFKIT_CACHE"]).glob("deis_sign-*.pkl")), "not cached"
    md = (out / "deis_sign.md").read_text(encoding="utf-8")
    assert md.startswith("**DEIS + ERK-Guid") and "| variant | order | N |" in md
    assert "−1 beats +1" in stdout
    assert not list(out.glob("*.tmp"))


def test_every_variant_and_sign_is_measured(deis_sign):
    df = pd.read_csv(deis_sign[0] / "deis_sign.csv")
    assert set(df["variant"]) == {"rhoab", "tab"} and set(df["sign"]) == {1, -1, 0}
    assert (df.loc[df["sign"] == 0, "w_stiff"] == 0).all()
    assert (df.loc[df["sign"] != 0, "w_stiff"] > 0).all()
    assert (df["nfe"] == df["num_steps"]).all()  # DEIS: one evaluation per step, ERK-Guid free
    ok = df[~df["diverged"]]
    assert len(ok) and np.isfinite(ok[["mean", "lo", "hi"]]).all().all()
    assert ((ok["lo"] <= ok["mean"]) & (ok["mean"] <= ok["hi"])).all()
    # The runs differ: the variants are different methods, the signs different corrections.
    key = ["denoiser", "max_order", "num_steps", "w_stiff", "sign"]
    wide = df.pivot_table(index=key, columns="variant", values="mean")
    assert (wide["rhoab"] != wide["tab"]).all()
    assert df.loc[df["sign"] == 1, "mean"].mean() != df.loc[df["sign"] == -1, "mean"].mean()


def test_the_images_testbed_runs_in_process():
    pytest.importorskip("stiffkit.diffusion.mixtures.digits")
    import deis_sign

    config = dict(deis_sign.QUICK, denoisers=["digits"], digits_samples=16, steps=[6],
                  num_bootstrap=20, reference_steps=8, seed=0, quick=True)
    df = deis_sign.compute(config)
    assert len(df) == 2 * 3 and set(df["n"]) == {16} and set(df["sigma_max"]) == {80.0}
    assert np.isfinite(df.loc[~df["diverged"], "mean"]).all()
    with pytest.raises(ValueError, match="`denoisers`"):
        deis_sign.testbed("ring", config)


def test_quick_output_matches_the_golden_values(deis_sign):
    _golden.compare("deis_sign", pd.read_csv(deis_sign[0] / "deis_sign.csv"))
