"""The benchmark harness: table shape, paired ratios, peak memory, Markdown rendering.

No wall time is asserted: the candidates' relative cost is made unmistakable by counting
work, and the checks are on structure and on quantities that do not depend on load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _harness import compare, peak_memory, to_markdown


def test_compare_runs_every_candidate_interleaved_and_reports_ratios():
    calls = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    df = compare(candidates, repeats=4, warmup=1, baseline="b")
    assert list(df.name) == ["a", "b", "c"]
    assert list(df.columns) == ["name", "median_s", "min_s", "iqr_s", "ratio", "paired_ratio",
                                "paired_iqr"]
    # one warm-up round in order, then rounds in rotating order
    assert calls[:3] == ["a", "b", "c"]
    assert calls[3:6] == ["a", "b", "c"] and calls[6:9] == ["b", "c", "a"]
    assert calls[9:12] == ["c", "a", "b"]
    assert len(calls) == 3 * 5
    base = df.set_index("name").loc["b"]
    assert base.ratio == 1.0 and base.paired_ratio == 1.0 and base.paired_iqr == 0.0
    assert np.isfinite(df[["median_s", "min_s", "iqr_s", "ratio", "paired_ratio"]].to_numpy()).all()
    assert (df.min_s <= df.median_s).all()


class FakeClock:
    """Stands in for the `time` module: ``perf_counter`` advances only when a candidate runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_compare_statistics_on_a_controlled_clock(monkeypatch):
    """Medians, minima, IQRs and both ratios, exactly, from known durations.

    "heavy" costs 10 units while "light" costs 1, except that round 2 is slowed 3× for both
    (load that drifts between rounds): the ratio of medians stays 10 and the paired ratio,
    which divides within each round, is exactly 10 in every round.
    """
    import _harness

    clock = FakeClock()
    monkeypatch.setattr(_harness, "time", clock)
    rounds = {"light": iter([1.0, 1.0, 1.0, 3.0, 1.0, 1.0]),   # warm-up, then 5 timed rounds
              "heavy": iter([10.0, 10.0, 10.0, 30.0, 10.0, 10.0])}

    def candidate(name):
        def run():
            clock.now += next(rounds[name])
        return run

    df = compare({"light": candidate("light"), "heavy": candidate("heavy")}, repeats=5,
                 warmup=1).set_index("name")
    assert df.loc["light", "median_s"] == 1.0 and df.loc["heavy", "median_s"] == 10.0
    assert df.loc["light", "min_s"] == 1.0 and df.loc["heavy", "min_s"] == 10.0
    assert df.loc["light", "iqr_s"] == 0.0
    assert df.loc["heavy", "ratio"] == 10.0 and df.loc["light", "ratio"] == 1.0
    assert df.loc["heavy", "paired_ratio"] == 10.0 and df.loc["heavy", "paired_iqr"] == 0.0
    # The warm-up round is not timed: every duration is used up, no more and no less.
    assert all(next(it, None) is None for it in rounds.values())


def test_compare_paired_ratio_cancels_drifting_load(monkeypatch):
    """Load that changes between rounds moves the medians; the paired ratio stays put."""
    import _harness

    clock = FakeClock()
    monkeypatch.setattr(_harness, "time", clock)
    load = iter([1.0, 1.0, 5.0, 5.0, 9.0, 9.0])  # per call: both candidates share a round

    def make(cost):
        def run():
            clock.now += cost * next(load)
        return run

    df = compare({"a": make(1.0), "b": make(2.0)}, repeats=3, warmup=0).set_index("name")
    assert df.loc["a", "median_s"] == 5.0 and df.loc["b", "median_s"] == 10.0
    assert df.loc["a", "iqr_s"] == pytest.approx(4.0)  # percentiles of 1, 5, 9
    assert df.loc["b", "paired_ratio"] == 2.0 and df.loc["b", "paired_iqr"] == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(candidates={}), "candidates"),
    (dict(candidates={"a": lambda: None}, repeats=0), "repeats"),
    (dict(candidates={"a": lambda: None}, baseline="b"), "baseline"),
])
def test_compare_rejects_bad_arguments(kwargs, match):
    candidates = kwargs.pop("candidates")
    with pytest.raises(ValueError, match=match):
        compare(candidates, **kwargs)


def test_peak_memory_counts_what_the_function_allocates():
    size = 64 * 2**20

    def allocate():
        buf = np.ones(size // 8)  # touched pages: resident
        return float(buf[-1])

    extra = peak_memory(allocate)
    assert 0.9 * size <= extra <= 1.5 * size
    assert peak_memory(lambda: None) < 0.25 * size


def test_peak_memory_reports_a_failing_function():
    def boom():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="failed in the measuring child"):
        peak_memory(boom)


def test_to_markdown_renders_every_cell():
    df = pd.DataFrame({"method": ["pair", "dense"], "error": [0.123456, 1e-16], "n": [3, 4]})
    md = to_markdown(df, floatfmt=".3g").splitlines()
    assert md[0] == "| method | error | n |"
    assert md[1] == "|---|---|---|"
    assert md[2] == "| pair | 0.123 | 3 |" and md[3] == "| dense | 1e-16 | 4 |"
