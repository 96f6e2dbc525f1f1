"""Golden values of the figure scripts' ``--quick`` outputs: what they must keep computing.

The smoke tests check that each script runs and that its numbers make sense; these pin the
numbers themselves, so that a change to a formula the scripts rely on (a grid, a guard, a
reference solve) shows up as a failing test rather than as a silently different figure.

For each script the stored reduction of its quick CSV lives in ``tests/experiments/golden/``:
the CSV itself for the small tables (wall-time columns dropped), and, for the large per-point
tables (fig1, fig3), the count, mean, min and max of every numeric column per group.
Categorical and integer columns must match exactly, floats to :data:`RTOL` or one unit in the
last digit the scripts write (:data:`DIGITS` significant digits, whichever is larger: a
roundoff-sized difference can flip that digit, so no tighter comparison is meaningful). The
quick runs are deterministic on one kind of machine, and that is where values are pinned this
tightly: ``golden/MACHINE`` records the CPU, its vector capability and the torch build that
wrote them. Another CPU rounds the float32 learned models differently and the samplers amplify
it (see ``stiffkit.diffusion.sample``): measured between two CPUs on the quick runs, up to 7 %
of a column's largest value in fig2's small-bin means and CIs, 0.5 % in table1 / fig4 recall,
≤ 1e-5 elsewhere. There every numeric column is compared to :data:`CROSS_MACHINE` of its
largest magnitude — loose, but a changed formula (a sign, a factor, a dropped term) still
fails it — while names, categories and row counts stay exact.

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
#: Significant digits of the scripts' CSVs (``experiments/_lib.py``'s ``CSV_FLOAT_FORMAT``).
DIGITS = 6
#: Tolerance on another kind of machine, relative to a column's largest magnitude.
CROSS_MACHINE = 0.1
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
    same = same_machine()
    for col in want.columns:
        a, b = got[col], want[col]
        numeric = (pd.api.types.is_numeric_dtype(b) and pd.api.types.is_numeric_dtype(a)
                   and not pd.api.types.is_bool_dtype(b))
        if same and (pd.api.types.is_float_dtype(b) or pd.api.types.is_float_dtype(a)):
            _assert_close(a.to_numpy(float), b.to_numpy(float), f"{script}: {col}")
        elif not same and numeric:
            _assert_close_loosely(a.to_numpy(float), b.to_numpy(float), f"{script}: {col}")
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), f"{script}: {col}"


def machine() -> str:
    """Return what decides the quick runs' roundoff: CPU model, vector capability, torch."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__}"


def same_machine() -> bool:
    """Whether this machine is the kind that wrote the golden files (``golden/MACHINE``)."""
    stamp = GOLDEN / "MACHINE"
    return stamp.exists() and stamp.read_text().strip() == machine()


def _assert_close_loosely(got: np.ndarray, want: np.ndarray, message: str) -> None:
    """`got` equals `want` to :data:`CROSS_MACHINE` of the column's largest magnitude."""
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{message}: NaN pattern changed"
    finite = np.isfinite(want) & np.isfinite(got)
    scale = np.abs(want[finite]).max() if finite.any() else 0.0
    bad = finite & ~(np.abs(got - want) <= CROSS_MACHINE * scale + last_digit(want) + ATOL)
    assert not bad.any(), (f"{message} (another machine: tolerance {CROSS_MACHINE:g} of the "
                           f"column's largest value): {int(bad.sum())} of {len(want)} differ; "
                           f"first {got[bad][0]!r} vs golden {want[bad][0]!r}")


def last_digit(values: np.ndarray) -> np.ndarray:
    """Return one unit in the last of :data:`DIGITS` significant digits of each of `values`."""
    mag = np.abs(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0))
    exponent = np.floor(np.log10(np.where(mag > 0, mag, 1.0)))
    return np.where(mag > 0, 10.0 ** (exponent - (DIGITS - 1)), 0.0)


def _assert_close(got: np.ndarray, want: np.ndarray, message: str) -> None:
    """`got` equals `want` to RTOL, or to one unit in the last stored digit; NaN where NaN."""
    tol = np.maximum(RTOL * np.abs(want), last_digit(want)) * (1 + 1e-9) + ATOL
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{message}: NaN pattern changed"
    finite = ~nan & np.isfinite(want)
    assert np.array_equal(got[~finite & ~nan], want[~finite & ~nan]), f"{message}: inf changed"
    bad = finite & ~(np.abs(got - want) <= tol)
    assert not bad.any(), (f"{message}: {int(bad.sum())} of {len(want)} values differ beyond "
                           f"the last stored digit; first at {int(np.argmax(bad))}: "
                           f"{got[bad][0]!r} vs golden {want[bad][0]!r}")


def _to_csv(df: pd.DataFrame):
    from io import StringIO

    buf = StringIO()
    df.to_csv(buf, index=False, float_format="%.12g")
    buf.seek(0)
    return buf


def write(script: str, df: pd.DataFrame) -> Path:
    """Store the golden reduction of `df` for `script`."""
    GOLDEN.mkdir(exist_ok=True)
    stamp = GOLDEN / "MACHINE"
    if stamp.exists() and stamp.read_text().strip() != machine():
        raise SystemExit(f"golden/ was written on {stamp.read_text().strip()!r}, this is "
                         f"{machine()!r}: regenerate every script (no names), so that one "
                         "kind of machine pins them all.")
    path = GOLDEN / f"{script}.csv"
    reduce(script, df).to_csv(path, index=False, float_format="%.12g")
    return path


def main(scripts: list[str] | None = None) -> None:
    """Run the quick `scripts` (default: all) in a fresh cache and write their golden files."""
    if not scripts:  # all of them: this machine becomes the one that pins the values
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / "MACHINE").write_text(machine() + "\n")
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
