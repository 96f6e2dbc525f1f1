"""Image metrics of the digits testbed, in the feature space of the shipped digits classifier.

* :func:`fd_digits` — the testbed's FID: the Fréchet distance (Heusel et al., 2017) between
  Gaussians fitted to the classifier's penultimate features of samples and reference;
* :func:`digits_precision_recall` — kNN precision / recall (Kynkäänniemi et al., 2019) in
  the same feature space;
* :func:`class_consistency` — the fraction of conditional samples the classifier assigns to
  their conditioning label.

Images are ``[n, *dims]`` with ``dims`` one of ``(1, R, R)``, ``(R, R)``, ``(R²,)`` and side
``R`` a multiple of 8; sides above 8 are average-pooled back to 8 × 8 before classification
(:func:`~stiffkit.diffusion.metrics.classifier.to_classifier_input`). The classifier
(:func:`~stiffkit.diffusion.metrics.classifier.digits_classifier` unless one is passed) runs
in float64 in row chunks of :data:`FEATURE_CHUNK` images. Pixel-space metrics (sliced
Wasserstein, endpoint error) take images directly (:mod:`~stiffkit.diffusion.metrics.transport`);
:func:`~stiffkit.diffusion.metrics.evaluate_images` gathers everything in one row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.metrics.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_NUM_BOOTSTRAP,
    Estimate,
    _boot_weights,
    _bootstrap,
    _mean_estimate,
    _seed_sequence,
)
from stiffkit.diffusion.metrics.classifier import (
    NUM_CLASSES,
    DigitsClassifier,
    digits_classifier,
    to_classifier_input,
)
from stiffkit.diffusion.metrics.coverage import (
    DEFAULT_K,
    PrecisionRecall,
    _covered,
    _knn_radii,
    _pr_summary,
)
from stiffkit.diffusion.metrics.frechet import _fd_estimate

__all__ = [
    "class_consistency",
    "digits_precision_recall",
    "fd_digits",
    "image_features",
    "predict_digits",
]

#: Images per classifier call (bounds the activations to ~30 MiB in float64).
FEATURE_CHUNK = 1024


def _classifier(classifier: Any) -> DigitsClassifier:
    if classifier is None:
        return digits_classifier()
    if not isinstance(classifier, DigitsClassifier):
        raise TypeError(f"`classifier` must be a DigitsClassifier or None, got "
                        f"{type(classifier).__name__}.")
    return classifier


@torch.no_grad()
def _run(images: Any, classifier: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return features ``[n, 64]`` and predicted labels ``[n]`` of `images` (numpy)."""
    model = _classifier(classifier)
    x = to_classifier_input(images, name)
    dtype = next(model.parameters()).dtype
    feats, preds = [], []
    for s in range(0, len(x), FEATURE_CHUNK):
        h = model.features(x[s : s + FEATURE_CHUNK].to(dtype))
        feats.append(h.double())
        preds.append(model.fc2(h).argmax(1))
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def image_features(
    images: Tensor | np.ndarray, classifier: DigitsClassifier | None = None
) -> np.ndarray:
    """Return the classifier's penultimate features of `images`.

    Parameters
    ----------
    images : Tensor or ndarray, shape [n, *dims]
        Finite digits images of side 8, 16, 32, … (module docstring).
    classifier : DigitsClassifier, optional
        Default: the shipped one.

    Returns
    -------
    ndarray, shape [n, 64], float64
    """
    return _run(images, classifier, "images")[0]


def predict_digits(
    images: Tensor | np.ndarray, classifier: DigitsClassifier | None = None
) -> np.ndarray:
    """Return the classifier's digit ``[n]`` (int64, 0..9) for images ``[n, *dims]``."""
    return _run(images, classifier, "images")[1]


def fd_digits(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    *,
    classifier: DigitsClassifier | None = None,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> Estimate:
    """Return FD-digits: the Fréchet distance in the digits classifier's feature space.

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
    reference : Tensor or ndarray, shape [m, *dims]
        Images (module docstring), ``n, m ≥ 2``; typically real digits or exact draws of
        :func:`~stiffkit.diffusion.digits_mixture` at the samples' resolution.
    classifier : DigitsClassifier, optional
    num_bootstrap, level, ci, seed
        Two-sample bootstrap over images, replicates recentred on the estimate
        (:func:`~stiffkit.diffusion.metrics.frechet_distance`).

    Returns
    -------
    Estimate
        FD in squared feature units, with its interval. Compare it with the value of two
        independent reference sets of the same sizes (:func:`evaluate_images`'s ``fd_floor``).
    """
    fx = _run(samples, classifier, "samples")[0]
    fr = _run(reference, classifier, "reference")[0]
    for arr, name in ((fx, "samples"), (fr, "reference")):
        if len(arr) < 2:
            raise ValueError(f"`{name}` needs at least 2 images for a covariance, got {len(arr)}.")
    boot = _bootstrap(num_bootstrap, level, ci)
    return _fd_estimate(fx, fr, boot, np.random.default_rng(_seed_sequence(seed)))


def digits_precision_recall(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    *,
    classifier: DigitsClassifier | None = None,
    k: int = DEFAULT_K,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> PrecisionRecall:
    """Return kNN precision / recall of image samples in the classifier's feature space.

    :func:`~stiffkit.diffusion.metrics.precision_recall` (Kynkäänniemi et al., 2019) on the
    64-dimensional features of :func:`image_features` (brute-force distances).

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
    reference : Tensor or ndarray, shape [m, *dims]
        Images, both with more than ``k`` of them.
    classifier : DigitsClassifier, optional
    k : int
    num_bootstrap, level, ci, seed
        As for :func:`~stiffkit.diffusion.metrics.precision_recall`.

    Returns
    -------
    PrecisionRecall
    """
    k = check_int(k, "k", 1)
    fx = _run(samples, classifier, "samples")[0]
    fr = _run(reference, classifier, "reference")[0]
    for arr, name in ((fx, "samples"), (fr, "reference")):
        if len(arr) <= k:
            raise ValueError(f"`{name}` needs more than k = {k} images, got {len(arr)}.")
    boot = _bootstrap(num_bootstrap, level, ci)
    return _feature_pr(fx, fr, k, boot, np.random.default_rng(_seed_sequence(seed)))


def _feature_pr(fx, fr, k, boot, rng) -> PrecisionRecall:
    """Precision / recall of features ``fx`` ``[n, F]`` against ``fr`` ``[m, F]``."""
    in_r = _covered(fx, fr, _knn_radii(fr, k, "brute", None), "brute", None)
    in_x = _covered(fr, fx, _knn_radii(fx, k, "brute", None), "brute", None)
    return _pr_summary(in_r, in_x, boot, rng)


def _check_labels(labels: Any, n: int) -> np.ndarray:
    """Return `labels` (an int, or ``[n]`` integers) as int64 ``[n]`` digits 0..9."""
    if isinstance(labels, int | np.integer) and not isinstance(labels, bool):
        lab = np.full(n, int(labels), dtype=np.int64)
    else:
        arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"`labels` must be an integer or integers, got dtype {arr.dtype}.")
        if arr.shape != (n,):
            raise ValueError(f"`labels` must have shape [{n}] (one per sample), got "
                             f"{arr.shape}.")
        lab = arr.astype(np.int64)
    if not ((lab >= 0) & (lab < NUM_CLASSES)).all():
        raise ValueError(f"`labels` must be digits 0..{NUM_CLASSES - 1}.")
    return lab


def class_consistency(
    samples: Tensor | np.ndarray,
    labels: int | Tensor | np.ndarray,
    *,
    classifier: DigitsClassifier | None = None,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    ci: str = "percentile",
    seed: int = 0,
) -> Estimate:
    """Return the fraction of conditional samples classified as their conditioning label.

    A perfect conditional sampler does not score 1 but the classifier's accuracy on exact
    conditional draws (:func:`evaluate_images`'s ``class_consistency_floor``; on the real
    held-out split it is the held-out accuracy stored in the classifier's metadata).

    Parameters
    ----------
    samples : Tensor or ndarray, shape [n, *dims]
        Images (module docstring).
    labels : int or Tensor or ndarray, shape [n]
        The digit each sample was conditioned on (an int: the same for all).
    classifier : DigitsClassifier, optional
    num_bootstrap, level, ci, seed
        Percentile (or basic) bootstrap over samples.

    Returns
    -------
    Estimate
    """
    preds = _run(samples, classifier, "samples")[1]
    lab = _check_labels(labels, len(preds))
    boot = _bootstrap(num_bootstrap, level, ci)
    rng = np.random.default_rng(_seed_sequence(seed))
    hit = (preds == lab).astype(np.float64)
    return _mean_estimate(hit, _boot_weights(len(hit), boot, rng), boot)
