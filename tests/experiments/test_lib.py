"""Tests for the experiment plumbing (``experiments/_lib.py``) and the toy world."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from _lib import binned, bootstrap_mean_ci, run_experiment

from stiffkit.paper.toy import GUIDANCE_WEIGHTS, toy_world


def test_binned_counts_means_and_intervals():
    rng = np.random.default_rng(0)
    x = np.geomspace(1, 1000, 600)
    df = pd.DataFrame({"x": x, "y": np.log10(x) + 0.1 * rng.standard_normal(600),
                       "g": np.repeat(["a", "b"], 300)})
    out = binned(df, "x", "y", bins=3, log=True)
    assert out["count"].sum() == 600 and len(out) == 3
    np.testing.assert_allclose(out["mean"], [0.5, 1.5, 2.5], atol=0.05)
    assert (out["ci_lo"] <= out["mean"]).all() and (out["mean"] <= out["ci_hi"]).all()
    by = binned(df, "x", ["y"], bins=[1, 10, 100, 1001], by="g")
    assert set(by["g"]) == {"a", "b"} and by["count"].sum() == 600
    with pytest.raises(ValueError, match="column"):
        binned(df, "x", "nope")


def test_bootstrap_mean_ci_brackets_and_shrinks():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(50)
    small = bootstrap_mean_ci(values)
    large = bootstrap_mean_ci(rng.standard_normal(5000))
    assert small[0] < values.mean() < small[1]
    # For a mean the percentile interval is close to the normal one, ±1.96·s/√n (here 0.96×).
    normal_width = 2 * 1.959964 * values.std(ddof=1) / np.sqrt(values.size)
    assert small[1] - small[0] == pytest.approx(normal_width, rel=0.15)
    assert large[1] - large[0] < small[1] - small[0]
    narrower = bootstrap_mean_ci(values, level=0.5)
    assert small[0] < narrower[0] < narrower[1] < small[1]
    # Non-finite values are dropped; the same seed gives the same interval.
    assert bootstrap_mean_ci(np.r_[values, np.nan, np.inf]) == small
    assert np.isnan(bootstrap_mean_ci(np.array([np.nan]))[0])


def test_run_experiment_writes_outputs_and_caches(tmp_path):
    calls = []

    def compute(config):
        calls.append(config)
        return pd.DataFrame({"a": np.arange(config["n"]), "b": np.arange(config["n"]) ** 2})

    def plot(df, config):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot(df.a, df.b)
        return fig

    args = ["--quick", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    res = run_experiment("demo", compute=compute, plot=plot, full={"n": 100}, quick={"n": 5},
                         argv=args)
    assert res["config"] == {"n": 5, "seed": 0, "quick": True}
    assert (tmp_path / "out" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(tmp_path / "out" / "demo.csv").shape == (5, 2)
    run_experiment("demo", compute=compute, plot=plot, full={"n": 100}, quick={"n": 5}, argv=args)
    assert len(calls) == 1  # second run read the cache
    res = run_experiment("demo", compute=compute, plot=plot, full={"n": 100}, quick={"n": 5},
                         argv=[*args, "--set", "n=7"])
    assert res["config"]["n"] == 7 and len(res["frame"]) == 7
    with pytest.raises(SystemExit):
        run_experiment("demo", compute=compute, plot=plot, full={"n": 1}, quick={"n": 1},
                       argv=[*args, "--set", "unknown=1"])
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_toy_world_methods():
    world = toy_world()
    x = world.initial_state(4, 5.0)
    assert x.shape == (4, 2) and x.dtype == torch.float32
    assert world.denoiser("none") is world.main
    cfg = world.denoiser("cfg")
    # CFG guides the class-A model with the unconditional one: D_g + w (D − D_g), w = 4.
    assert cfg.denoiser is world.main and cfg.guide is world.cfg_guide
    assert cfg.w == GUIDANCE_WEIGHTS["cfg"] == 4.0
    sigma = torch.tensor(0.5)
    d, d_g = world.main(x, sigma), world.cfg_guide(x, sigma)
    torch.testing.assert_close(cfg(x, sigma), d_g + 4.0 * (d - d_g))
    assert world.denoiser("ag", w=2.0).w == 2.0
    d = world.guidance_direction("ag", x, torch.tensor(0.5))
    assert d.shape == x.shape and torch.isfinite(d).all()
    torch.testing.assert_close(d, world.main(x, sigma) - world.ag_guide(x, sigma))
    with pytest.raises(ValueError, match="learned"):
        world.denoiser("ag", learned=False)
    with pytest.raises(ValueError, match="`guidance`"):
        world.denoiser("magic")
    assert float(world.sigmas(8)[0]) == pytest.approx(5.0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "{tmp}/afile"], "--out .*afile is a file, not a folder"),
        (["--out", "{tmp}/afile/sub"], "--out .*afile is a file, not a folder"),
        (["--cache-dir", "{tmp}/afile"], "--cache-dir .*afile is a file, not a folder"),
        (["--seed", str(10**30)], "--seed must be at most"),
        (["--set", "seed=-5"], "use --seed instead"),
        (["--set", "quick=5"], "use --quick instead"),
        (["--set", "n=-1"], r"n must be an integer in \[1, 1e\+07\]"),
        (["--set", "n=0"], r"n must be an integer in \[1, 1e\+07\]"),
        (["--set", "n=1.5"], r"n must be an integer in \[1, 1e\+07\]"),
        (["--set", "n=abc"], r"n must be an integer in \[1, 1e\+07\]"),
        (["--set", "n=1000000000000"], r"n must be an integer in \[1, 1e\+07\]"),
        (["--set", "steps=[]"], "steps must be a non-empty JSON list"),
        (["--set", "steps=[0]"], "steps must be a list whose entries are each an integer"),
        (["--set", "steps=0"], "steps must be a list whose entries are each an integer"),
        (["--set", "w=-1"], "w must be a finite non-negative number"),
        (["--set", "w=NaN"], "w must be a finite non-negative number"),
        (["--set", "name=3"], "name must be a string"),
    ],
)
def test_bad_options_are_refused_before_computing(tmp_path, capsys, extra, message):
    """Issue 12: a bad --out or --cache-dir failed after the whole computation, a huge --seed
    overflowed in torch, --set values of the wrong kind reached the computation."""
    (tmp_path / "afile").write_text("x")
    calls = []
    config = {"n": 5, "steps": [8, 16], "w": 0.5, "name": "a", "num_bootstrap": 10}
    args = ["--quick", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit):
        run_experiment("demo", compute=lambda c: calls.append(c) or pd.DataFrame({"a": [1]}),
                       plot=lambda df, c: None, full=config, quick=config,
                       argv=[*args, *(a.format(tmp=tmp_path) for a in extra)])
    assert re.search(message, capsys.readouterr().err)
    assert calls == []


def test_zero_is_a_valid_bootstrap_count(tmp_path):
    config = {"num_bootstrap": 10}
    args = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            "--set", "num_bootstrap=0"]

    def plot(df, config):
        import matplotlib.pyplot as plt

        return plt.figure()

    res = run_experiment("demo0", compute=lambda c: pd.DataFrame({"a": [c["num_bootstrap"]]}),
                         plot=plot, full=config, quick=config, argv=args)
    assert res["config"]["num_bootstrap"] == 0


def test_a_single_value_for_a_list_is_a_list_of_one(tmp_path):
    config = {"steps": [8, 16]}
    args = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            "--set", "steps=8"]

    def plot(df, config):
        import matplotlib.pyplot as plt

        return plt.figure()

    res = run_experiment("demo1", compute=lambda c: pd.DataFrame({"a": c["steps"]}), plot=plot,
                         full=config, quick=config, argv=args)
    assert res["config"]["steps"] == [8]


def test_verdict_reads_non_overlapping_intervals_in_the_metric_direction():
    from _lib import verdict

    low, mid, high = ({"m": v, "m_lo": v - 1, "m_hi": v + 1} for v in (0.0, 1.5, 5.0))
    assert verdict(low, high, "m", lower_is_better=True) == "better"
    assert verdict(low, high, "m", lower_is_better=False) == "worse"
    assert verdict(high, low, "m", lower_is_better=True) == "worse"
    assert verdict(low, mid, "m", lower_is_better=True) == "~"  # intervals overlap


def test_pair_lines_compare_present_pairs_with_scaled_values():
    import pandas as pd
    from _lib import pair_lines

    at = pd.DataFrame({"m": [0.0, 5.0], "m_lo": [-1.0, 4.0], "m_hi": [1.0, 6.0]},
                      index=["new", "old"])
    lines = pair_lines(at, (("new", "old"), ("new", "absent")), (("m", "M", 10.0, True),))
    assert lines == ["  new vs old: M 50→0 (better)"]
