"""Side-by-side timing: interleaved repetitions, medians and ratios from one process.

Shared machines are noisy, so absolute times drift between runs; ratios of candidates
timed in alternation within one process are far more stable. Each repetition runs every
candidate once, in a rotating order, and the table reports medians.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

__all__ = ["compare", "peak_memory", "to_markdown"]


def compare(
    candidates: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 7,
    warmup: int = 1,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Time each candidate, interleaved, and return medians and ratios to `baseline`.

    Parameters
    ----------
    candidates : mapping of name to zero-argument callable
    repeats : int
        Timed rounds; every round runs every candidate once (rotating order).
    warmup : int
        Untimed rounds first.
    baseline : str, optional
        Name whose median is the denominator of ``ratio`` (default: the first).

    Returns
    -------
    pandas.DataFrame
        ``name, median_s, min_s, iqr_s, ratio, paired_ratio, paired_iqr`` (one row per
        candidate). ``ratio`` is the ratio of medians; ``paired_ratio`` the median over rounds
        of ``t_name / t_baseline`` within the same round, which cancels load that drifts on a
        time scale longer than one round (``paired_iqr``: its interquartile range).
    """
    if not candidates:
        raise ValueError("`candidates` must not be empty.")
    if repeats < 1:
        raise ValueError("`repeats` must be >= 1.")
    names = list(candidates)
    baseline = baseline or names[0]
    if baseline not in candidates:
        raise ValueError(f"`baseline` {baseline!r} is not a candidate.")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - t0)
    rows = []
    base = np.array(times[baseline])
    for name in names:
        t = np.array(times[name])
        paired = t / base
        rows.append(dict(name=name, median_s=float(np.median(t)), min_s=float(t.min()),
                         iqr_s=float(np.subtract(*np.percentile(t, [75, 25]))),
                         paired_ratio=float(np.median(paired)),
                         paired_iqr=float(np.subtract(*np.percentile(paired, [75, 25])))))
    df = pd.DataFrame(rows)
    df.insert(4, "ratio", df.median_s / float(df.loc[df.name == baseline, "median_s"].iloc[0]))
    return df


def peak_memory(fn: Callable[[], object]) -> int:
    """Return the extra peak resident memory (bytes) of running `fn` in a forked child.

    The child starts as a copy of this process; the result is its peak RSS
    (``ru_maxrss``) minus its RSS at the start, so it counts what `fn` allocates
    (torch and NumPy alike), not what the parent already holds. POSIX only.
    """
    import multiprocessing as mp
    import resource

    def status_kib(field: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def child(queue):
        try:
            # Reset this process's peak RSS (VmHWM) to its current RSS: a forked child may
            # otherwise carry a high-water mark from before its own work began.
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            reset = True
        except OSError:  # no clear_refs: fall back to ru_maxrss against the starting RSS
            reset = False
        if reset:
            start = status_kib("VmRSS") * 1024
            fn()
            peak = status_kib("VmHWM") * 1024
        else:
            with open("/proc/self/statm") as fh:
                start = int(fh.read().split()[1]) * resource.getpagesize()
            fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        queue.put(max(peak - start, 0))

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"`fn` failed in the measuring child (exit code {proc.exitcode}).")
    return int(queue.get())


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """Render a DataFrame as a GitHub Markdown table (no extra dependency)."""
    cols = list(df.columns)

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)
