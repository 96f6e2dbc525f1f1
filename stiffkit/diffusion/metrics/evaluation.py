"""Every metric as one DataFrame row (:func:`evaluate`), and what the truth itself scores.

:class:`MetricSettings` holds the per-metric settings (interval, sliced Wasserstein, kNN,
outlier and occupancy parameters) in one frozen, validated object; :func:`evaluate` checks
its inputs once and calls the metric families' kernels directly. :func:`noise_floor` is
:func:`evaluate` of exact samples against an independent exact truth.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.metrics._inputs import (
    CHUNK_ELEMENTS,
    _as_reference,
    _as_samples,
    _check_dim,
    _check_fraction,
    _check_gmm,
    _check_order,
    _check_threshold,
    _samples_of,
)
from stiffkit.diffusion.metrics.bootstrap import (
    _NAN,
    DEFAULT_LEVEL,
    DEFAULT_NUM_BOOTSTRAP,
    Estimate,
    _Bootstrap,
    _bootstrap,
    _draw,
    _seed_sequence,
)
from stiffkit.diffusion.metrics.coverage import (
    DEFAULT_K,
    DEFAULT_MIN_COUNT,
    _covered,
    _knn_radii,
    _occupancy,
    _pr_summary,
    _resolve_pr_method,
)
from stiffkit.diffusion.metrics.likelihood import DEFAULT_OUTLIER_QUANTILE, _nll, _nll_summary
from stiffkit.diffusion.metrics.transport import (
    DEFAULT_NUM_PROJECTIONS,
    DEFAULT_SW_P,
    _default_boot_projections,
    _directions,
    _endpoint_summary,
    _sw_estimate,
    _sw_point,
)
from stiffkit.diffusion.mixtures import GaussianMixture
from stiffkit.diffusion.noise import sub_seed

__all__ = ["COLUMNS", "MetricSettings", "evaluate", "noise_floor"]

#: Columns of :func:`evaluate`'s row, in order. ``*_lo``/``*_hi`` bound the interval; NaN marks
#: "not computed" (no reference, too few finite samples, ``noise_floor=False``).
COLUMNS = (
    "n", "n_truth", "nonfinite_rate",
    "endpoint_error_mean", "endpoint_error_mean_lo", "endpoint_error_mean_hi",
    "endpoint_error_median", "endpoint_error_median_lo", "endpoint_error_median_hi",
    "endpoint_error_rms", "endpoint_error_rms_lo", "endpoint_error_rms_hi",
    "sw", "sw_lo", "sw_hi", "sw_floor",
    "nll_mean", "nll_mean_lo", "nll_mean_hi",
    "nll_median", "nll_median_lo", "nll_median_hi",
    "nll_truth_mean", "nll_truth_median", "nll_threshold",
    "outlier_rate", "outlier_rate_lo", "outlier_rate_hi", "outlier_rate_floor",
    "precision", "precision_lo", "precision_hi", "precision_floor",
    "recall", "recall_lo", "recall_hi", "recall_floor",
    "occupancy", "occupancy_lo", "occupancy_hi", "occupancy_floor",
    "component_tv", "component_tv_lo", "component_tv_hi", "component_tv_floor",
)  # fmt: skip


@dataclass(frozen=True)
class MetricSettings:
    """The per-metric settings of :func:`evaluate`, validated once on construction.

    Integer fields are stored as python ``int``; everything else as given. Derive variants
    with :func:`dataclasses.replace` (which validates again).

    Attributes
    ----------
    num_bootstrap : int
        Bootstrap resamples per interval (``0``: no intervals, NaN bounds).
    level : float
        Confidence level of every interval, strictly between 0 and 1.
    ci : {"percentile", "basic"}
        Interval kind (see the package notes of :mod:`stiffkit.diffusion.metrics`).
    sw_p : float
        Order ``p ≥ 1`` of the sliced Wasserstein distance (:func:`sliced_wasserstein`'s ``p``).
    num_projections : int
        Directions of the sliced Wasserstein point estimate.
    bootstrap_projections : int, optional
        Directions reused by each sliced Wasserstein resample; by default 16 in 2-D and 64
        otherwise (:meth:`bootstrap_projections_for`).
    k : int
        Neighbourhood size of kNN precision/recall.
    outlier_quantile : float
        Quantile of the truth's NLL above which a sample is an outlier.
    nll_threshold : float, optional
        Fixed outlier threshold on the NLL (overrides ``outlier_quantile``).
    min_count : int
        Samples a component needs to count as occupied.
    """

    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP
    level: float = DEFAULT_LEVEL
    ci: str = "percentile"
    sw_p: float = DEFAULT_SW_P
    num_projections: int = DEFAULT_NUM_PROJECTIONS
    bootstrap_projections: int | None = None
    k: int = DEFAULT_K
    outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE
    nll_threshold: float | None = None
    min_count: int = DEFAULT_MIN_COUNT

    def __post_init__(self) -> None:
        def store(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        store("num_bootstrap", _bootstrap(self.num_bootstrap, self.level, self.ci).num)
        _check_order(self.sw_p, "sw_p")
        store("num_projections", check_int(self.num_projections, "num_projections", 1))
        if self.bootstrap_projections is not None:
            store(
                "bootstrap_projections",
                check_int(self.bootstrap_projections, "bootstrap_projections", 1),
            )
        store("k", check_int(self.k, "k", 1))
        _check_fraction(self.outlier_quantile, "outlier_quantile")
        store("min_count", check_int(self.min_count, "min_count", 1))
        _check_threshold(self.nll_threshold, "nll_threshold")

    @property
    def bootstrap(self) -> _Bootstrap:
        """The interval settings ``(num_bootstrap, level, ci)`` the metric kernels take."""
        return _Bootstrap(self.num_bootstrap, self.level, self.ci)

    def bootstrap_projections_for(self, dim: int) -> int:
        """Return ``bootstrap_projections``, or its default for points of dimension `dim`."""
        if self.bootstrap_projections is None:
            return _default_boot_projections(dim)
        return self.bootstrap_projections


_SETTING_NAMES = frozenset(f.name for f in fields(MetricSettings))


def _resolve_settings(settings: Any, overrides: dict[str, Any]) -> MetricSettings:
    """Return `settings` (default: the defaults) with the keyword `overrides` applied."""
    unknown = sorted(set(overrides) - _SETTING_NAMES)
    if unknown:
        names = ", ".join(f"`{name}`" for name in unknown)
        raise TypeError(
            f"unexpected keyword argument(s) {names}: the metric settings are the fields of "
            "MetricSettings."
        )
    if settings is None:
        return MetricSettings(**overrides)
    if not isinstance(settings, MetricSettings):
        raise TypeError(f"`settings` must be a MetricSettings, got {type(settings).__name__}.")
    return replace(settings, **overrides) if overrides else settings


def evaluate(
    samples: Tensor | np.ndarray,
    gmm: GaussianMixture,
    *,
    reference: Tensor | np.ndarray | None = None,
    truth: Tensor | np.ndarray | None = None,
    num_truth: int | None = None,
    seed: int = 0,
    settings: MetricSettings | None = None,
    noise_floor: bool = True,
    **overrides: Any,
) -> pd.DataFrame:
    """Return every metric of `samples` against the exact mixture as a one-row DataFrame.

    Rows of `samples` with any NaN/Inf entry (a diverged sampler) are dropped and counted in
    ``nonfinite_rate``; every metric is computed on the finite rows (all NaN if none is).
    The ``*_floor`` columns are the same metric for an independent exact draw of the same
    size against the same truth (``noise_floor=False`` skips them: NaN). ``nll_truth_*`` is
    the truth's own NLL: a sampler with a lower ``nll_mean`` is over-contracting.

    Cost is dominated by the mixture's log-density and responsibility passes (five with the
    floor, three without, each ``n × K``); in a sweep over samplers at one ``n``, pass
    ``noise_floor=False`` and compute :func:`noise_floor` once.

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
        Feature count (flattened) ``gmm.dim``.
    gmm : GaussianMixture
    reference : Tensor or ndarray, shape [n, *dims], optional
        Converged solve from the same noise, row for row; must be finite. Without it the
        endpoint columns are NaN.
    truth : Tensor or ndarray, shape [m, *dims], optional
        Ground-truth samples; drawn exactly from ``gmm`` when omitted (``num_truth``,
        default: the number of finite samples).
    seed : int
        Root of independent streams for the truth draw, the floor draw, the SW directions
        and each metric's resampling.
    settings : MetricSettings, optional
        The per-metric settings (default: ``MetricSettings()``). The precision/recall
        columns are NaN when ``n ≤ k``.
    noise_floor : bool
        Compute the ``*_floor`` columns.
    **overrides
        Fields of :class:`MetricSettings` (``num_bootstrap=0``, ``ci="basic"``, …), applied
        on top of `settings`.

    Returns
    -------
    pandas.DataFrame
        One row with the columns :data:`COLUMNS`; the settings are in ``df.attrs``.
    """
    x_all = _samples_of(samples, gmm, allow_nonfinite=True)
    finite = np.isfinite(x_all).all(axis=1)
    x = x_all[finite]
    ref = None if reference is None else _as_reference(reference, samples)[finite]
    if truth is not None:
        truth = _as_samples(truth, "truth")
        _check_dim(truth, gmm.dim, "truth", "`gmm`")
    if num_truth is not None:
        num_truth = check_int(num_truth, "num_truth", 1)
    cfg = _resolve_settings(settings, overrides)
    root = _seed_sequence(seed)
    boot, p, k = cfg.bootstrap, float(cfg.sw_p), cfg.k
    boot_dirs = cfg.bootstrap_projections_for(gmm.dim)

    n = len(x)
    row: dict[str, float] = dict.fromkeys(COLUMNS, _NAN)
    row["n"] = n
    row["nonfinite_rate"] = 1.0 - n / len(x_all)
    attrs = {
        "seed": seed, "num_bootstrap": cfg.num_bootstrap, "level": cfg.level, "ci": cfg.ci,
        "sw_p": cfg.sw_p, "num_projections": cfg.num_projections,
        "bootstrap_projections": boot_dirs, "k": k, "outlier_quantile": cfg.outlier_quantile,
        "min_count": cfg.min_count, "noise_floor": noise_floor,
    }  # fmt: skip
    if n == 0:
        row["n_truth"] = 0 if truth is None else len(truth)
        return _frame(row, attrs)

    ss_truth, ss_floor, ss_sw, ss_end, ss_nll, ss_pr, ss_occ = root.spawn(7)
    t = truth if truth is not None else _draw(gmm, num_truth or n, ss_truth)
    row["n_truth"] = len(t)
    t_floor = _draw(gmm, n, ss_floor) if noise_floor else None

    def put(name: str, est: Estimate) -> None:
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = est

    def rng(ss: np.random.SeedSequence) -> np.random.Generator:
        return np.random.default_rng(ss)

    if ref is not None:
        end = _endpoint_summary(np.linalg.norm(x - ref, axis=1), boot, rng(ss_end))
        put("endpoint_error_mean", end.mean)
        put("endpoint_error_median", end.median)
        put("endpoint_error_rms", end.rms)

    ss_dirs, ss_sw_boot = ss_sw.spawn(2)
    dirs = _directions(gmm.dim, cfg.num_projections, rng(ss_dirs))
    put("sw", _sw_estimate(x, t, dirs, p, boot_dirs, boot, rng(ss_sw_boot), None))

    nll_t = _nll(t, gmm)
    threshold = cfg.nll_threshold
    if threshold is None:
        threshold = np.quantile(nll_t, cfg.outlier_quantile)
    threshold = float(threshold)
    nll = _nll_summary(_nll(x, gmm), nll_t, threshold, boot, rng(ss_nll))
    put("nll_mean", nll.mean)
    put("nll_median", nll.median)
    put("outlier_rate", nll.outlier_rate)
    row["nll_threshold"], row["nll_truth_mean"], row["nll_truth_median"] = (
        threshold, nll.truth_mean, nll.truth_median,
    )  # fmt: skip

    method = _resolve_pr_method("auto", gmm.dim)
    radii_t = None
    if n > k and len(t) > k:
        radii_t = _knn_radii(t, k, method, None)
        in_t = _covered(x, t, radii_t, method, None)
        in_x = _covered(t, x, _knn_radii(x, k, method, None), method, None)
        pr = _pr_summary(in_t, in_x, boot, rng(ss_pr))
        put("precision", pr.precision)
        put("recall", pr.recall)

    occ = _occupancy(x, gmm, cfg.min_count, boot, rng(ss_occ))
    put("occupancy", occ.occupancy)
    put("component_tv", occ.tv)

    if t_floor is not None:
        chunk = max(1, CHUNK_ELEMENTS // (n + len(t)))
        row["sw_floor"] = _sw_point(t_floor, t, dirs, p, chunk)
        row["outlier_rate_floor"] = float((_nll(t_floor, gmm) > threshold).mean())
        if radii_t is not None:
            row["precision_floor"] = float(_covered(t_floor, t, radii_t, method, None).mean())
            radii_f = _knn_radii(t_floor, k, method, None)
            row["recall_floor"] = float(_covered(t, t_floor, radii_f, method, None).mean())
        occ_f = _occupancy(t_floor, gmm, cfg.min_count, boot._replace(num=0), None)
        row["occupancy_floor"], row["component_tv_floor"] = occ_f.occupancy.value, occ_f.tv.value
    return _frame(row, attrs)


def _frame(row: dict[str, float], attrs: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame([row], columns=list(COLUMNS))
    df["n"] = df["n"].astype(np.int64)
    df["n_truth"] = df["n_truth"].astype(np.int64)
    df.attrs.update(attrs)
    return df


def noise_floor(
    gmm: GaussianMixture,
    n: int,
    *,
    num_truth: int | None = None,
    seed: int = 0,
    settings: MetricSettings | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Return :func:`evaluate` of ``n`` exact samples against an independent exact truth.

    This is what a perfect sampler scores at sample size ``n`` (with ``num_truth`` truth
    samples, default ``n``): the value below which no difference is measurable. Columns as
    :func:`evaluate` (the endpoint and ``*_floor`` columns are NaN).

    Parameters
    ----------
    gmm : GaussianMixture
    n : int
    num_truth : int, optional
    seed : int
    settings : MetricSettings, optional
    **overrides
        Fields of :class:`MetricSettings` (``num_bootstrap``, ``level``, ``sw_p``, ``k``, …),
        as for :func:`evaluate`.

    Returns
    -------
    pandas.DataFrame
        One row with the columns :data:`COLUMNS`.
    """
    _check_gmm(gmm)
    n = check_int(n, "n", 1)
    num_truth = n if num_truth is None else check_int(num_truth, "num_truth", 1)
    cfg = _resolve_settings(settings, overrides)
    ss_x, ss_t, ss_eval = _seed_sequence(seed).spawn(3)
    x, t = _draw(gmm, n, ss_x), _draw(gmm, num_truth, ss_t)
    seed_eval = sub_seed(ss_eval)
    return evaluate(x, gmm, truth=t, seed=seed_eval, settings=cfg, noise_floor=False)
