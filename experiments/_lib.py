"""Shared plumbing of the figure scripts in ``experiments/``: CLI, cache, outputs, binning.

Every script is ``compute(config) -> DataFrame`` (pure, cached on disk under a key of its
configuration) plus ``plot(df, config) -> Figure``; :func:`run_experiment` wires them to the
command line (``--quick``, ``--seed``, ``--out``, ``--refresh``) and writes the PNG and the CSV
of the plotted numbers atomically. :func:`binned` is the binning-with-confidence-band
statistic the alignment figures share.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stiffkit.io import (
    atomic_write,
    cached_frame,
    ensure_folder,
    save_figure,
    save_frame,
    source_fingerprint,
)

__all__ = ["ROOT", "run_experiment", "cache_dir", "cached_compute", "code_fingerprint", "binned",
           "bootstrap_mean_ci", "verdict"]

#: Repository root (where ``figures/`` and ``experiments/`` live in a source checkout).
ROOT = Path(__file__).resolve().parent.parent
#: Where quick runs write by default, so they never overwrite the committed full-run figures.
QUICK_SUBDIR = "quick"
#: Significant digits of the committed CSVs (plotted numbers, not a lossless archive: the
#: cache keeps full precision) and the resolution of the PNGs — both keep figures/ small.
CSV_FLOAT_FORMAT = "%.6g"
FIGURE_DPI = 110
#: Largest integer a ``--set`` accepts (no configuration count comes near it; beyond it a run
#: would not finish). Integer entries must be at least 1, except these, where 0 means
#: something (no bootstrap intervals, no bin dropped, grid level 0).
MAX_COUNT = 10**7
ZERO_OK = frozenset({"num_bootstrap", "min_count", "map_steps", "line_step"})
#: Torch intra-op threads of a figure run unless ``OMP_NUM_THREADS`` is set: the toy's calls are
#: small batched 2-D ops, where a second thread only contends (measured on the shared 2-core
#: machine: fig1's quick compute 4.8 s on one thread, 23 s on two).
NUM_THREADS = 1


def cache_dir() -> Path:
    """Return the result cache of the figure scripts: ``$STIFFKIT_CACHE`` or
    ``experiments/.cache``."""
    return Path(os.environ.get("STIFFKIT_CACHE", ROOT / "experiments" / ".cache"))


def code_fingerprint() -> str:
    """Return the fingerprint of the code behind every figure: ``stiffkit`` plus these scripts.

    All of ``experiments/*.py`` is covered (the scripts import each other's helpers), so an edit
    to the library or to any script invalidates the cached results instead of serving them.
    """
    return source_fingerprint(sorted((ROOT / "experiments").glob("*.py")))


def cached_compute(name: str, compute: Callable[[dict[str, Any]], pd.DataFrame],
                   config: Mapping[str, Any], *, refresh: bool = False) -> pd.DataFrame:
    """Return ``compute(config)`` through the cache the scripts use (same key as the CLI).

    A notebook calling ``cached_compute("fig2", fig2.compute, dict(fig2.QUICK, seed=0,
    quick=True))`` reuses the result of ``python experiments/fig2.py --quick``, and vice versa.
    """
    config = dict(config)
    return cached_frame(config, lambda: compute(config), cache_dir(), name=name, refresh=refresh,
                        fingerprint=code_fingerprint())


def run_experiment(
    name: str,
    *,
    compute: Callable[[dict[str, Any]], pd.DataFrame],
    plot: Callable[[pd.DataFrame, dict[str, Any]], Any],
    full: Mapping[str, Any],
    quick: Mapping[str, Any],
    summarize: Callable[[pd.DataFrame, dict[str, Any]], str] | None = None,
    markdown: Callable[[pd.DataFrame, dict[str, Any]], str] | None = None,
    description: str = "",
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run one figure script from the command line and write its outputs.

    Parameters
    ----------
    name : str
        Output stem: ``{out}/{name}.png`` and ``{out}/{name}.csv``.
    compute : callable
        ``compute(config) -> DataFrame``, pure; cached under ``config``.
    plot : callable
        ``plot(df, config) -> matplotlib Figure``.
    full, quick : mapping
        The configuration of the full run and of the CI-sized ``--quick`` run (``seed`` and
        ``quick`` are added from the command line).
    summarize : callable, optional
        ``summarize(df, config) -> str``, printed after the run (the one-line findings).
    markdown : callable, optional
        ``markdown(df, config) -> str``, written atomically to ``{out}/{name}.md`` (the
        tables' Markdown form); its path joins ``paths``.
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        ``config``, ``frame``, the output ``paths`` and the wall ``seconds``.
    """
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (minutes → seconds)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of every random draw")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: figures/, or figures/quick/ with --quick)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="result cache (default: experiments/.cache)")
    parser.add_argument("--refresh", action="store_true", help="recompute even if cached")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration entry (VALUE parsed as JSON when it can "
                        "be), e.g. --set stiffness=h_lambda; repeatable")
    args = parser.parse_args(argv)
    from stiffkit.diffusion.noise import MAX_RUN_SEED

    if args.seed < 0:
        parser.error("--seed must be non-negative")
    if args.seed > MAX_RUN_SEED:
        parser.error(f"--seed must be at most {MAX_RUN_SEED} (per-sample seeds must fit 64 bits)")
    out = args.out or (ROOT / "figures" / (QUICK_SUBDIR if args.quick else ""))
    cache = args.cache_dir or cache_dir()
    # Both folders are checked before computing, so a bad one does not cost a run.
    for flag, folder in (("--out", out), ("--cache-dir", cache)):
        try:
            ensure_folder(folder, flag.lstrip("-"))
        except OSError as err:
            parser.error(f"{flag} {folder}: {err.strerror}")
        if not os.access(folder, os.W_OK):
            parser.error(f"{flag} {folder}: the folder is not writable")
    defaults = dict(quick if args.quick else full)
    config = dict(defaults, seed=args.seed, quick=args.quick)
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(NUM_THREADS)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if key in ("seed", "quick"):
            parser.error(f"--set {item!r}: use --{key} instead")
        if not sep or key not in config:
            parser.error(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(config)}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
        if isinstance(defaults[key], list) and not isinstance(config[key], list):
            config[key] = [config[key]]  # --set steps=8 means [8]
        problem = _mismatch(config[key], defaults[key], 0 if key in ZERO_OK else 1)
        if problem:
            parser.error(f"--set {item!r}: {key} must be {problem} (its default is "
                         f"{defaults[key]!r})")

    start = time.perf_counter()
    df = cached_frame(config, lambda: compute(config), cache, name=name, refresh=args.refresh,
                      fingerprint=code_fingerprint())
    fig = plot(df, config)
    png = save_figure(fig, Path(out) / f"{name}.png", dpi=FIGURE_DPI)
    csv = save_frame(df, Path(out) / f"{name}.csv", float_format=CSV_FLOAT_FORMAT)
    seconds = time.perf_counter() - start
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    print(f"{name}: wrote {png} and {csv} in {seconds:.1f} s")
    paths: tuple[Path, ...] = (png, csv)
    if markdown is not None:
        text = markdown(df, config)
        md = atomic_write(Path(out) / f"{name}.md",
                          lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"{name}: wrote {md}")
        paths = (*paths, md)
    if summarize is not None:
        print(summarize(df, config))
    return dict(config=config, frame=df, paths=paths, seconds=seconds)


def _mismatch(value: Any, default: Any, minimum: int = 1) -> str | None:
    """Describe what a ``--set`` value must be to stand in for `default`, or None if it can.

    The value must have the default's kind: a bool, an integer in ``[minimum, MAX_COUNT]``
    (every integer of the scripts' configurations is a count, or a grid level in
    :data:`ZERO_OK`), a finite non-negative number (weights and thresholds), a string, or a
    non-empty list of such (a single value given for a list is a list of one). Finer limits
    are the script's and the library's to check.
    """
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        ok = (isinstance(value, int) and not isinstance(value, bool)
              and minimum <= value <= MAX_COUNT)
        return None if ok else f"an integer in [{minimum}, {MAX_COUNT:.0e}]"
    if isinstance(default, float):
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value) and value >= 0)
        return None if ok else "a finite non-negative number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, list):
        if not isinstance(value, list) or not value:
            return "a non-empty JSON list, e.g. [8, 16]"
        if default:
            kinds = {_mismatch(v, default[0], minimum) for v in value} - {None}
            if kinds:
                return f"a list whose entries are each {kinds.pop()}"
    return None


def bootstrap_mean_ci(values: np.ndarray, *, level: float = 0.95, num_bootstrap: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Return the percentile-bootstrap interval of the mean of `values` (NaN if empty)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(num_bootstrap, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def binned(
    df: pd.DataFrame,
    x: str,
    y: str | Sequence[str],
    *,
    bins: int | Sequence[float] = 10,
    log: bool = True,
    by: str | Sequence[str] | None = None,
    level: float = 0.95,
    num_bootstrap: int = 1000,
    min_count: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Bin rows by `x` and summarise each `y` per bin: count, mean, bootstrap CI, median.

    Parameters
    ----------
    df : DataFrame
    x : str
        Binning column (e.g. ``lambda_max``); rows with non-finite or (``log``) non-positive
        `x` are dropped.
    y : str or sequence of str
        Columns to summarise (long format: one output row per bin and column).
    bins : int or sequence of float
        Number of quantile-free bins (log- or linearly spaced over the data range) or edges.
    log : bool
        Space the bins logarithmically (stiffness spans decades).
    by : str or sequence of str, optional
        Grouping columns (e.g. the method); bins are shared across groups.
    min_count : int
        Drop bins with fewer rows.

    Returns
    -------
    DataFrame
        ``[*by, quantity, bin, x_lo, x_hi, x_mid, count, mean, ci_lo, ci_hi, median]``.
    """
    ys = [y] if isinstance(y, str) else list(y)
    groups = [] if by is None else ([by] if isinstance(by, str) else list(by))
    missing = [c for c in [x, *ys, *groups] if c not in df.columns]
    if missing:
        raise ValueError(f"`df` has no column(s) {missing}.")
    xv = df[x].to_numpy(dtype=float)
    keep = np.isfinite(xv) & ((xv > 0) if log else True)
    data = df.loc[keep]
    xv = xv[keep]
    if data.empty:
        raise ValueError(f"`df` has no finite values of `{x}` to bin.")
    if np.isscalar(bins):
        lo, hi = xv.min(), xv.max()
        if hi <= lo:
            hi = lo * 1.001 + 1e-12
        edges = np.geomspace(lo, hi, int(bins) + 1) if log else np.linspace(lo, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    which = np.clip(np.searchsorted(edges, xv, side="right") - 1, 0, len(edges) - 2)
    data = data.assign(_bin=which)
    rows = []
    grouped = (data.groupby(groups + ["_bin"], sort=True) if groups
               else data.groupby("_bin", sort=True))
    for key, part in grouped:
        key = key if isinstance(key, tuple) else (key,)
        b = int(key[-1])
        for col in ys:
            vals = part[col].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size < min_count:
                continue
            ci_lo, ci_hi = bootstrap_mean_ci(vals, level=level, num_bootstrap=num_bootstrap,
                                             seed=seed + b)
            x_lo, x_hi = edges[b], edges[b + 1]
            rows.append({**dict(zip(groups, key[:-1])), "quantity": col, "bin": b,
                         "x_lo": x_lo, "x_hi": x_hi,
                         "x_mid": float(np.sqrt(x_lo * x_hi)) if log else (x_lo + x_hi) / 2,
                         "count": int(vals.size), "mean": float(vals.mean()),
                         "ci_lo": ci_lo, "ci_hi": ci_hi, "median": float(np.median(vals))})
    return pd.DataFrame(rows)


def verdict(a: pd.Series, b: pd.Series, col: str, lower_is_better: bool) -> str:
    """Return "better", "worse" (non-overlapping 95 % intervals ``{col}_lo``…``{col}_hi``) or
    "~" (overlapping) for row `a` against row `b` — the tables' comparison of two methods."""
    if a[f"{col}_hi"] < b[f"{col}_lo"]:
        return "better" if lower_is_better else "worse"
    if a[f"{col}_lo"] > b[f"{col}_hi"]:
        return "worse" if lower_is_better else "better"
    return "~"


def pair_lines(at: pd.DataFrame, pairs, metrics) -> list[str]:
    """Return one summary line per ``(new, old)`` of `pairs` present in `at` (rows by method).

    `metrics` are ``(column, label, scale, lower_is_better)``; each part reads
    ``label old→new (verdict)`` with both values times `scale` (:func:`verdict`).
    """
    lines = []
    for new, old in pairs:
        if new not in at.index or old not in at.index:
            continue
        a, b = at.loc[new], at.loc[old]
        parts = [f"{name} {b[col] * s:.3g}→{a[col] * s:.3g} ({verdict(a, b, col, low)})"
                 for col, name, s, low in metrics]
        lines.append(f"  {new} vs {old}: " + ", ".join(parts))
    return lines
