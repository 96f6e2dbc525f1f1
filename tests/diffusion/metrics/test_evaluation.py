"""Tests for ``stiffkit.diffusion.metrics.evaluation``: the one-row ``evaluate`` and its floor."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from _metric_data import F64, PR_SAME_BOUND, _gen

from stiffkit.diffusion.metrics import (
    COLUMNS,
    MetricSettings,
    evaluate,
    noise_floor,
    sliced_wasserstein,
)


def test_evaluate_returns_one_documented_finite_row(ring):
    x = ring.sample(600, 0.0, _gen(40))
    kw = dict(reference=x + 0.01, num_bootstrap=50, seed=3)
    df = evaluate(x, ring, **kw)
    assert len(df) == 1
    assert tuple(df.columns) == COLUMNS
    assert df.attrs["sw_p"] == 2 and df.attrs["k"] == 3
    row = df.iloc[0]
    assert np.isfinite(row.to_numpy(dtype=float)).all()
    assert row["n"] == 600 and row["n_truth"] == 600 and row["nonfinite_rate"] == 0.0
    assert row["endpoint_error_mean"] == pytest.approx(0.01 * math.sqrt(2))
    for name in ("nll_mean", "precision", "recall"):
        assert row[f"{name}_lo"] <= row[name] <= row[f"{name}_hi"]
    # An exact sampler sits at the floor and at the truth's NLL.
    assert row["sw"] < 3 * row["sw_floor"]
    assert abs(row["nll_mean"] - row["nll_truth_mean"]) < 0.2
    pd.testing.assert_frame_equal(df, evaluate(x, ring, **kw))  # deterministic under a seed


def test_evaluate_drops_and_reports_nonfinite_samples(ring):
    x = ring.sample(400, 0.0, _gen(41))
    ref = x + 0.02
    bad = x.clone()
    bad[::10, 0] = float("nan")
    bad[5, 1] = float("inf")
    keep = torch.isfinite(bad).all(dim=1)
    df = evaluate(bad, ring, reference=ref, num_bootstrap=20, seed=4)
    assert df["nonfinite_rate"][0] == pytest.approx(41 / 400)
    clean = evaluate(bad[keep], ring, reference=ref[keep], num_bootstrap=20, seed=4)
    cols = [c for c in COLUMNS if c != "nonfinite_rate"]
    pd.testing.assert_frame_equal(df[cols], clean[cols])

    diverged = evaluate(torch.full((30, 2), float("nan"), dtype=F64), ring, num_bootstrap=20)
    assert diverged["n"][0] == 0 and diverged["nonfinite_rate"][0] == 1.0
    assert diverged[["sw", "nll_mean", "precision"]].isna().all(axis=None)


def test_evaluate_with_given_truth_and_without_floor(ring):
    x = ring.sample(300, 0.0, _gen(42))
    truth = ring.sample(900, 0.0, _gen(43))
    df = evaluate(x, ring, truth=truth, noise_floor=False, num_bootstrap=0)
    assert df["n_truth"][0] == 900
    assert df[[c for c in COLUMNS if c.endswith("_floor")]].isna().all(axis=None)
    assert df[["sw_lo", "sw_hi"]].isna().all(axis=None)  # no resamples, no interval
    # Other directions than sliced_wasserstein's default seed, but 2-D stratified ones agree.
    direct = sliced_wasserstein(x, truth, num_bootstrap=0).value
    assert df["sw"][0] == pytest.approx(direct, rel=0.02)


def test_noise_floor_is_truth_against_truth(ring):
    floor = noise_floor(ring, 500, num_bootstrap=20, seed=5)
    assert tuple(floor.columns) == COLUMNS and floor["n"][0] == 500
    assert floor["precision"][0] > PR_SAME_BOUND - 0.02 and floor["occupancy"][0] == 1.0
    assert floor["endpoint_error_mean"].isna()[0]
    pd.testing.assert_frame_equal(floor, noise_floor(ring, 500, num_bootstrap=20, seed=5))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(samples=[[0.0, 1.0]]), TypeError, "`samples`"),
        (dict(samples=torch.zeros(5, 3, dtype=F64)), ValueError, "`samples`"),
        (dict(samples=torch.zeros(0, 2, dtype=F64)), ValueError, "`samples` is empty"),
        (dict(samples=torch.zeros(5, dtype=F64)), ValueError, "`samples`"),
        (dict(samples=torch.zeros(5, 2, dtype=torch.complex128)), TypeError, "`samples`"),
        (dict(reference=torch.zeros(4, 2, dtype=F64)), ValueError, "`reference`"),
        (dict(reference=torch.full((5, 2), float("nan"), dtype=F64)), ValueError, "`reference`"),
        (dict(truth=torch.zeros(5, 3, dtype=F64)), ValueError, "`truth`"),
        (dict(gmm="ring"), TypeError, "`gmm`"),
        (dict(level=1.5), ValueError, "`level`"),
        (dict(ci="bca"), ValueError, "`ci`"),
        (dict(num_bootstrap=-1), ValueError, "`num_bootstrap`"),
        (dict(sw_p=0.5), ValueError, "`sw_p`"),
        (dict(k=0), ValueError, "`k`"),
        (dict(seed=-3), ValueError, "`seed`"),
    ],
)
def test_evaluate_rejects_bad_input(ring, kwargs, error, match):
    args = dict(samples=torch.zeros(5, 2, dtype=F64), gmm=ring)
    args.update(kwargs)
    samples, gmm = args.pop("samples"), args.pop("gmm")
    with pytest.raises(error, match=match):
        evaluate(samples, gmm, num_bootstrap=args.pop("num_bootstrap", 0), **args)


# ---------------------------------------------------------------------- settings
def test_settings_object_and_keyword_form_give_the_same_row(ring):
    x = ring.sample(300, 0.0, _gen(44))
    kw = {"num_bootstrap": 20, "ci": "basic", "k": 4, "sw_p": 1}
    by_keyword = evaluate(x, ring, reference=x + 0.02, seed=6, **kw)
    by_settings = evaluate(x, ring, reference=x + 0.02, seed=6, settings=MetricSettings(**kw))
    pd.testing.assert_frame_equal(by_keyword, by_settings)
    assert by_keyword.attrs == by_settings.attrs
    # Keywords override the settings object's fields.
    mixed = evaluate(x, ring, reference=x + 0.02, seed=6,
                     settings=MetricSettings(num_bootstrap=20, k=9), ci="basic", k=4, sw_p=1)
    pd.testing.assert_frame_equal(mixed, by_keyword)
    floor = noise_floor(ring, 200, seed=2, settings=MetricSettings(num_bootstrap=0))
    pd.testing.assert_frame_equal(floor, noise_floor(ring, 200, seed=2, num_bootstrap=0))


def test_metric_settings_keep_the_documented_defaults():
    # The committed tables were computed with these; changing one changes every number.
    s = MetricSettings()
    assert (s.num_bootstrap, s.level, s.ci, s.sw_p, s.num_projections) == (
        200, 0.95, "percentile", 2, 256,
    )
    assert (s.bootstrap_projections, s.k, s.outlier_quantile, s.nll_threshold, s.min_count) == (
        None, 3, 0.999, None, 1,
    )
    assert (s.bootstrap_projections_for(2), s.bootstrap_projections_for(3)) == (16, 64)
    assert MetricSettings(bootstrap_projections=5).bootstrap_projections_for(2) == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_bootstrap", -1), ("num_bootstrap", 2.0), ("level", 1.0), ("ci", "bca"),
        ("sw_p", 0.5), ("sw_p", math.inf), ("num_projections", 0), ("bootstrap_projections", 0),
        ("k", 0), ("outlier_quantile", 0.0), ("nll_threshold", math.nan), ("min_count", 0),
    ],
)  # fmt: skip
def test_metric_settings_validate_each_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        MetricSettings(**{field: value})


def test_metric_settings_are_frozen_and_store_python_ints():
    s = MetricSettings(num_bootstrap=np.int64(7), k=np.int32(5))
    assert type(s.num_bootstrap) is int and type(s.k) is int and s.k == 5
    with pytest.raises(AttributeError):
        s.k = 4


def test_evaluate_rejects_unknown_settings(ring):
    x = ring.sample(20, 0.0, _gen(45))
    with pytest.raises(TypeError, match="`num_bootstrp`"):
        evaluate(x, ring, num_bootstrp=3)
    with pytest.raises(TypeError, match="`settings`"):
        evaluate(x, ring, settings={"num_bootstrap": 3})
    with pytest.raises(TypeError, match="`reference`"):
        noise_floor(ring, 20, reference=x)
