"""Every image metric of the digits testbed as one DataFrame row, with its noise floor.

:func:`evaluate_images` is the images counterpart of :func:`~stiffkit.diffusion.metrics.evaluate`:
FD-digits, kNN precision / recall in the classifier's feature space, class consistency of
conditional samples, sliced Wasserstein in pixel space and the endpoint error against a
converged solve, each with its bootstrap interval, and the value the truth itself scores
(``*_floor``). It reuses :class:`~stiffkit.diffusion.metrics.MetricSettings` (the interval,
sliced Wasserstein and ``k`` fields; the NLL and occupancy fields do not apply to images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.metrics._inputs import _as_samples
from stiffkit.diffusion.metrics.bootstrap import (
    _NAN,
    Estimate,
    _boot_weights,
    _draw,
    _mean_estimate,
    _seed_sequence,
)
from stiffkit.diffusion.metrics.classifier import DigitsClassifier
from stiffkit.diffusion.metrics.coverage import _covered, _knn_radii
from stiffkit.diffusion.metrics.evaluation import MetricSettings, _resolve_settings
from stiffkit.diffusion.metrics.frechet import _fd_estimate
from stiffkit.diffusion.metrics.images import _check_labels, _classifier, _feature_pr, _run
from stiffkit.diffusion.metrics.transport import (
    _directions,
    _endpoint_summary,
    _sw_estimate,
    _sw_point,
)
from stiffkit.diffusion.mixtures import GaussianMixture

__all__ = ["IMAGE_COLUMNS", "evaluate_images"]

#: Columns of :func:`evaluate_images`'s row, in order (NaN: not computed).
IMAGE_COLUMNS = (
    "n", "n_truth", "n_floor", "nonfinite_rate",
    "fd", "fd_lo", "fd_hi", "fd_floor",
    "precision", "precision_lo", "precision_hi", "precision_floor",
    "recall", "recall_lo", "recall_hi", "recall_floor",
    "class_consistency", "class_consistency_lo", "class_consistency_hi",
    "class_consistency_floor",
    "sw", "sw_lo", "sw_hi", "sw_floor",
    "endpoint_error_mean", "endpoint_error_mean_lo", "endpoint_error_mean_hi",
    "endpoint_error_median", "endpoint_error_median_lo", "endpoint_error_median_hi",
    "endpoint_error_rms", "endpoint_error_rms_lo", "endpoint_error_rms_hi",
)  # fmt: skip
#: Directions per chunk of the sliced Wasserstein projections (cache-sized blocks).
SW_CHUNK = 32


def _reference_truth(
    reference: Any, d: int, n: int, num_truth: int | None, noise_floor: bool, ss_truth, ss_floor
) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """Return the truth ``[m, d]`` and the floor's plan: ``n`` independent exact draws
    ``[n, d]`` (a mixture), or the row indices of two disjoint halves of the truth (images);
    None for the plan not used."""
    if isinstance(reference, GaussianMixture):
        if reference.dim != d:
            raise ValueError(f"`samples` have {d} features per sample but `reference` has "
                             f"{reference.dim}.")
        t = _draw(reference, num_truth or n, ss_truth)
        return t, (_draw(reference, n, ss_floor) if noise_floor else None), None
    if num_truth is not None:
        raise ValueError("`num_truth` applies only when `reference` is a GaussianMixture.")
    t = _as_samples(reference, "reference")
    if t.shape[1] != d:
        raise ValueError(f"`samples` have {d} features per sample but `reference` has "
                         f"{t.shape[1]}.")
    if not noise_floor or len(t) < 4:
        return t, None, None
    perm = np.random.default_rng(ss_floor).permutation(len(t))
    return t, None, (perm[: len(t) // 2], perm[len(t) // 2 :])


def _consistency_floor(
    reference: Any,
    reference_labels: Any,
    lab: np.ndarray,
    model: DigitsClassifier,
    preds: np.ndarray,
    ss: np.random.SeedSequence,
) -> float:
    """Accuracy of the classifier on exact conditional draws with the label counts of `lab`
    (`preds`: its digits for image `reference`)."""
    classes, counts = np.unique(lab, return_counts=True)
    if isinstance(reference, GaussianMixture):
        if getattr(reference, "labels", None) is None:
            return _NAN
        known = set(reference.labels.tolist())
        hits = 0.0
        for c, m, s in zip(classes, counts, ss.spawn(len(classes))):
            if int(c) not in known:
                raise ValueError(f"`labels` holds the digit {int(c)}, which `reference` has "
                                 "no component of.")
            x = _draw(reference.conditional(int(c)), int(m), s)
            hits += float((_run(x, model, "reference")[1] == c).sum())
        return hits / len(lab)
    if reference_labels is None:
        return _NAN
    ref_lab = _check_labels(reference_labels, len(preds))
    acc = 0.0
    for c, m in zip(classes, counts):
        mine = ref_lab == c
        if not mine.any():
            raise ValueError(f"`labels` holds the digit {int(c)}, which `reference_labels` "
                             "does not.")
        acc += m * float((preds[mine] == c).mean())
    return acc / len(lab)


def evaluate_images(
    samples: Tensor | np.ndarray,
    reference: GaussianMixture | Tensor | np.ndarray,
    *,
    labels: int | Tensor | np.ndarray | None = None,
    endpoint_reference: Tensor | np.ndarray | None = None,
    reference_labels: Tensor | np.ndarray | None = None,
    num_truth: int | None = None,
    classifier: DigitsClassifier | None = None,
    seed: int = 0,
    settings: MetricSettings | None = None,
    noise_floor: bool = True,
    **overrides: Any,
) -> pd.DataFrame:
    """Return every image metric of `samples` as a one-row DataFrame (:data:`IMAGE_COLUMNS`).

    Rows of `samples` with a NaN/Inf entry are dropped and counted in ``nonfinite_rate``
    (with their labels and endpoint references); every metric uses the finite rows.

    The truth and the floor depend on `reference`:

    * a :class:`~stiffkit.diffusion.mixtures.GaussianMixture` (the exact distribution,
      e.g. ``digits_mixture(R, b)`` or its ``.conditional(c)``): the truth is ``num_truth``
      (default ``n``) exact draws, and each ``*_floor`` is the metric of ``n`` further,
      independent exact draws against that truth — what a perfect sampler scores at the
      same sizes (``n_floor = n``);
    * images ``[m, *dims]`` (e.g. the real digits): the truth is `reference` itself and each
      floor compares two disjoint random halves of it (``n_floor = ⌊m/2⌋``). At half the
      sizes this floor is larger than the one at ``(n, m)``; FD's bias grows about as
      ``1/n + 1/m``.

    ``class_consistency_floor`` is the classifier's accuracy on exact conditional draws
    with the same label counts (a labelled mixture: draws of ``reference.conditional(c)``;
    images: per-class accuracy on `reference` with `reference_labels`, weighted by the
    counts of `labels`); NaN without labels. Endpoint errors have no floor (0 by
    construction).

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
        Images of side 8, 16, 32, … (:mod:`~stiffkit.diffusion.metrics.images`).
    reference : GaussianMixture or Tensor or ndarray, shape [m, *dims]
        The exact distribution, or reference images, with the samples' feature count.
    labels : int or Tensor or ndarray, shape [n], optional
        Conditioning digits of conditional samples (the class consistency columns).
    endpoint_reference : Tensor or ndarray, shape [n, *dims], optional
        Converged solve of the same ODE from the same noise, row for row; finite.
    reference_labels : Tensor or ndarray, shape [m], optional
        Digits of image `reference` (for ``class_consistency_floor``).
    num_truth : int, optional
        Exact truth draws (mixture `reference` only).
    classifier : DigitsClassifier, optional
        Default: the shipped one.
    seed : int
        Root of independent streams: truth, floor, SW directions and each interval.
    settings : MetricSettings, optional
        ``num_bootstrap``, ``level``, ``ci``, ``sw_p``, ``num_projections``,
        ``bootstrap_projections`` and ``k`` are used.
    noise_floor : bool
        Compute the ``*_floor`` columns (``False``: NaN, cheaper in sweeps).
    **overrides
        Fields of :class:`MetricSettings`, applied on top of `settings`.

    Returns
    -------
    pandas.DataFrame
        One row with the columns :data:`IMAGE_COLUMNS`; the settings are in ``df.attrs``.
    """
    x_all = _as_samples(samples, "samples", allow_nonfinite=True)
    finite = np.isfinite(x_all).all(axis=1)
    x = x_all[finite]
    end_ref = None
    if endpoint_reference is not None:
        end_ref = _as_samples(endpoint_reference, "endpoint_reference")
        if tuple(np.shape(endpoint_reference)) != tuple(np.shape(samples)):
            raise ValueError(f"`endpoint_reference` must have the shape of `samples`, "
                             f"{tuple(np.shape(samples))}, got "
                             f"{tuple(np.shape(endpoint_reference))}.")
        end_ref = end_ref[finite]
    lab = None if labels is None else _check_labels(labels, len(x_all))[finite]
    if num_truth is not None:
        num_truth = check_int(num_truth, "num_truth", 1)
    model = _classifier(classifier)
    cfg = _resolve_settings(settings, overrides)
    boot, k, p = cfg.bootstrap, cfg.k, float(cfg.sw_p)
    d, n = x_all.shape[1], len(x)
    boot_dirs = cfg.bootstrap_projections_for(d)
    row: dict[str, float] = dict.fromkeys(IMAGE_COLUMNS, _NAN)
    row["n"], row["nonfinite_rate"] = n, 1.0 - n / len(x_all)
    attrs = {
        "seed": seed, "num_bootstrap": cfg.num_bootstrap, "level": cfg.level, "ci": cfg.ci,
        "sw_p": cfg.sw_p, "num_projections": cfg.num_projections,
        "bootstrap_projections": boot_dirs, "k": k, "noise_floor": noise_floor,
        "reference": "mixture" if isinstance(reference, GaussianMixture) else "images",
    }  # fmt: skip
    ss = _seed_sequence(seed).spawn(9)
    if n == 0:  # nothing finite to evaluate: every metric NaN
        is_mix = isinstance(reference, GaussianMixture)
        row["n_truth"] = (num_truth or 0) if is_mix else len(_as_samples(reference, "reference"))
        return _frame(row, attrs)
    t, floor_draw, halves = _reference_truth(reference, d, n, num_truth, noise_floor, ss[0],
                                             ss[1])
    row["n_truth"] = len(t)

    def put(name: str, est: Estimate) -> None:
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = est

    def rng(i: int) -> np.random.Generator:
        return np.random.default_rng(ss[i])

    feat_x, pred_x = _run(x, model, "samples")
    feat_t, pred_t = _run(t, model, "reference")
    if n >= 2 and len(t) >= 2:
        put("fd", _fd_estimate(feat_x, feat_t, boot, rng(2)))
    if n > k and len(t) > k:
        pr = _feature_pr(feat_x, feat_t, k, boot, rng(3))
        put("precision", pr.precision)
        put("recall", pr.recall)
    if lab is not None:
        hit = (pred_x == lab).astype(np.float64)
        put("class_consistency", _mean_estimate(hit, _boot_weights(n, boot, rng(4)), boot))
        if noise_floor:
            row["class_consistency_floor"] = _consistency_floor(
                reference, reference_labels, lab, model, pred_t, ss[5])
    ss_dirs, ss_sw_boot = ss[6].spawn(2)
    dirs = _directions(d, cfg.num_projections, np.random.default_rng(ss_dirs))
    # Column-major copies: the exact projections run feature by feature, and reading a
    # contiguous column is ~5× faster in d = 256..1024 (same arithmetic, same bits).
    xf, tf = np.asfortranarray(x), np.asfortranarray(t)
    sw_rng = np.random.default_rng(ss_sw_boot)
    put("sw", _sw_estimate(xf, tf, dirs, p, boot_dirs, boot, sw_rng, SW_CHUNK))
    if end_ref is not None:
        end = _endpoint_summary(np.linalg.norm(x - end_ref, axis=1), boot, rng(7))
        put("endpoint_error_mean", end.mean)
        put("endpoint_error_median", end.median)
        put("endpoint_error_rms", end.rms)
    if floor_draw is not None:  # n further exact draws against the truth
        feat_f = _run(floor_draw, model, "reference")[0]
        _put_floors(row, np.asfortranarray(floor_draw), tf, feat_f, feat_t, dirs, p, k, boot)
    elif halves is not None:  # one half of the reference images against the other
        a, b = halves
        _put_floors(row, tf[a], tf[b], feat_t[a], feat_t[b], dirs, p, k, boot)
    return _frame(row, attrs)


def _put_floors(row, fa, fb, ga, gb, dirs, p, k, boot) -> None:
    """Fill the FD, precision / recall and SW floors: images ``fa`` against ``fb`` (pixels,
    column-major), with features ``ga`` and ``gb``."""
    row["n_floor"] = len(fa)
    if len(ga) >= 2 and len(gb) >= 2:
        row["fd_floor"] = _fd_estimate(ga, gb, boot._replace(num=0), None).value
    if len(ga) > k and len(gb) > k:
        row["precision_floor"] = float(_covered_mean(ga, gb, k))
        row["recall_floor"] = float(_covered_mean(gb, ga, k))
    row["sw_floor"] = _sw_point(fa, fb, dirs, p, SW_CHUNK)


def _covered_mean(query: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Fraction of `query` features inside the kNN manifold of `ref` (brute force)."""
    return _covered(query, ref, _knn_radii(ref, k, "brute", None), "brute", None).mean()


def _frame(row: dict[str, float], attrs: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame([row], columns=list(IMAGE_COLUMNS))
    df["n"] = df["n"].astype(np.int64)
    df["n_truth"] = df["n_truth"].astype(np.int64)
    df.attrs.update(attrs)
    return df
