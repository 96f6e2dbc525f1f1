"""Golden values of the figure scripts' ``--quick`` outputs: what they must keep computing.

The smoke tests check that each script runs and that its numbers make sense; these pin the
numbers themselves, so that a change to a formula the scripts rely on (a grid, a guard, a
reference solve) shows up as a failing test rather than as a silently different figure.

For each script the stored reduction of its quick CSV lives in ``tests/experiments/golden/``:
the CSV itself for the small tables (wall-time columns dropped), and, for the large per-point
tables (fig1, fig3), the count, mean, min and max of every numeric column per group.
Categorical and integer columns must match exactly, floats to :data:`RTOL` (the quick runs are
deterministic on one machine; the tolerance leaves room for another BLAS build's roundoff in
the float32 learned models, amplified by the samplers: see ``stiffkit.diffusion.sample``).

After an intended change, regenerate them — and say why in the commit — with::

    python tests/experiments/_golden.py            # runs every quick script, writes golden/
    python tests/experiments/_golden.py fig2 fig4  # only these scripts
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GOLDEN = HERE / "golden"
#: Relative and absolute tolerances of float columns.
RTOL, ATOL = 1e-6, 1e-12
#: Columns that are timings, not results.
TIMING = re.compile(r"(seconds|time_ms|time_vs_plain|wall)")
#: script -> the columns that group its per-point rows (None: keep every row).
GROUPS: dict[str, list[str] | None] = {
    "fig1": ["panel", "model"],
    "fig2": None,
    "fig3": ["model", "num_steps", "step"],
    "fig4": None,
    "table1": None,
    "deis_sign": None,
    "digits_table": None,
    "digits_grid": None,
    "node_regularization": None,
    "digits_alignment": ["model", "num_steps", "step"],
    "digits_samples": None,
}


def reduce(script: str, df: pd.DataFrame) -> pd.DataFrame:
    """Return what is stored of `script`'s quick CSV `df`: rows or per-group statistics."""
    df = df.drop(columns=[c for c in df.columns if TIMING.search(c)])
    keys = GROUPS[script]
    if keys is None:
        return df.reset_index(drop=True)
    numeric = [c for c in df.columns if c not in keys and pd.api.types.is_numeric_dtype(df[c])]
    grouped = df.groupby([df[k].fillna("<NA>") for k in keys], sort=True)[numeric]
    stats = grouped.agg(["count", "mean", "min", "max"])
    stats.columns = [f"{col}:{stat}" for col, stat in stats.columns]
    return stats.reset_index()


def compare(script: str, df: pd.DataFrame) -> None:
    """Assert that `df` (a quick CSV of `script`) reduces to the stored golden values."""
    want = pd.read_csv(GOLDEN / f"{script}.csv", keep_default_na=True)
    got = reduce(script, df)
    # Round-trip through CSV so both sides have the same dtypes and text precision.
    got = pd.read_csv(_to_csv(got), keep_default_na=True)
    assert list(got.columns) == list(want.columns), f"{script}: columns changed"
    assert len(got) == len(want), f"{script}: {len(got)} rows, golden has {len(want)}"
    for col in want.columns:
        a, b = got[col], want[col]
        if pd.api.types.is_float_dtype(b) or pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=RTOL,
                                       atol=ATOL, equal_nan=True, err_msg=f"{script}: {col}")
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), f"{script}: {col}"


def _to_csv(df: pd.DataFrame):
    from io import StringIO

    buf = StringIO()
    df.to_csv(buf, index=False, float_format="%.12g")
    buf.seek(0)
    return buf


def write(script: str, df: pd.DataFrame) -> Path:
    """Store the golden reduction of `df` for `script`."""
    GOLDEN.mkdir(exist_ok=True)
    path = GOLDEN / f"{script}.csv"
    reduce(script, df).to_csv(path, index=False, float_format="%.12g")
    return path


def main(scripts: list[str] | None = None) -> None:
    """Run the quick `scripts` (default: all) in a fresh cache and write their golden files."""
    scripts = scripts or list(GROUPS)
    unknown = sorted(set(scripts) - set(GROUPS))
    if unknown:
        raise SystemExit(f"unknown scripts {unknown}; known: {sorted(GROUPS)}")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MPLBACKEND="Agg", STIFFKIT_CACHE=str(Path(tmp) / "cache"))
        for script in scripts:
            out = Path(tmp) / script
            subprocess.run([sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--quick",
                            "--out", str(out)], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            print(write(script, pd.read_csv(out / f"{script}.csv")))


if __name__ == "__main__":
    main(sys.argv[1:])
