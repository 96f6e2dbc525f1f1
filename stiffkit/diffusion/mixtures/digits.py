"""The digits distribution: the 1797 images of ``sklearn.datasets.load_digits`` as a mixture.

:func:`digits_mixture` is the empirical distribution of the images (optionally smoothed by
an isotropic Gaussian), an :class:`~stiffkit.diffusion.mixtures.IsotropicMixture` on states
``[batch, 1, R, R]`` with an exact denoiser — the image-shaped testbed where the true
score, drift Jacobian and stiffness are known in closed form. Pixels (integers 0..16) are
scaled to ``[−1, 1]`` as ``pixel / 8 − 1``. Resolutions above 8 upsample every image once
by a fixed bilinear interpolation (``torch.nn.functional.interpolate``, ``mode="bilinear"``,
``align_corners=False``, the convention of image libraries: output pixel centres map to
``(i + ½)/s − ½`` in input pixels, borders clamp), so the values stay in ``[−1, 1]``. The
upsampling is linear, so the images keep spanning the same 61-dimensional affine subspace
at every resolution (the Jacobian's non-trivial part) while ``d = R²`` grows to 256 or
1024 — dimensions where dense, matrix-free-estimated Jacobians cost seconds.

The dataset ships with scikit-learn (no download); it is loaded once per process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import check_int, check_real
from stiffkit.diffusion.mixtures.isotropic import IsotropicMixture

__all__ = ["digits_images", "digits_mixture"]

#: Side of the original images, and the number of images and of classes.
DIGITS_SIZE = 8
NUM_DIGITS = 1797
NUM_DIGIT_CLASSES = 10
#: Cached upsampled image sets (one per resolution).
_CACHED_RESOLUTIONS = 4


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return the images ``[1797, 8, 8]`` in ``[−1, 1]`` and their labels ``[1797]`` (read-only)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.asarray(data.images, dtype=np.float64) / 8.0 - 1.0
    labels = np.asarray(data.target, dtype=np.int64)
    for arr in (images, labels):
        arr.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=_CACHED_RESOLUTIONS)
def _images_at(resolution: int) -> Tensor:
    """Return the images at `resolution`, ``[1797, 1, R, R]`` float64 (cached; never mutate)."""
    images = torch.tensor(_raw_digits()[0])[:, None]  # a copy: [N, 1, 8, 8]
    if resolution == DIGITS_SIZE:
        return images
    return torch.nn.functional.interpolate(images, size=(resolution, resolution),
                                           mode="bilinear", align_corners=False)


def _check_resolution(resolution) -> int:
    resolution = check_int(resolution, "resolution", 1)
    if resolution % DIGITS_SIZE:
        raise ValueError(f"`resolution` must be a positive multiple of {DIGITS_SIZE} "
                         f"(8, 16, 32, ...), got {resolution}.")
    return resolution


def _check_classes(classes) -> list[int] | None:
    if classes is None:
        return None
    wanted = list(classes) if isinstance(classes, Sequence) else [classes]
    if not wanted:
        raise ValueError("`classes` must name at least one digit.")
    for c in wanted:
        check_int(c, "classes", 0)
        if c >= NUM_DIGIT_CLASSES:
            raise ValueError(f"`classes` must be digits 0..9, got {classes!r}.")
    return wanted


def digits_images(resolution: int = DIGITS_SIZE) -> tuple[Tensor, Tensor]:
    """Return the digits as images in ``[−1, 1]`` and their labels (fresh copies).

    Parameters
    ----------
    resolution : int
        Side ``R``: 8 (the originals) or a multiple of 8 (bilinear upsampling).

    Returns
    -------
    images : Tensor, shape [1797, 1, R, R], float64
    labels : Tensor, shape [1797], int64
        The digit 0..9 of each image.
    """
    resolution = _check_resolution(resolution)
    return _images_at(resolution).clone(), torch.tensor(_raw_digits()[1])


def digits_mixture(
    resolution: int = DIGITS_SIZE,
    bandwidth: float = 0.0,
    *,
    classes: int | Sequence[int] | None = None,
    chunk_size: int | None = None,
) -> IsotropicMixture:
    """Return the exact digits distribution: ``(1/K) Σ_k N(image_k, bandwidth² I)``.

    Parameters
    ----------
    resolution : int
        Image side ``R`` (``d = R²``): 8 (the originals, d = 64) or a multiple of 8 —
        16 (d = 256) and 32 (d = 1024) upsample bilinearly (module docstring).
    bandwidth : float
        Standard deviation ``≥ 0`` of the isotropic Gaussian smoothing each image, per pixel
        of the ``R × R`` image in ``[−1, 1]`` units; 0 (default) is the empirical
        distribution itself.
    classes : int or sequence of int, optional
        Keep only these digits (equal weights over the kept images): the exact
        class-conditional distribution. Equivalent to ``digits_mixture(...).conditional(c)``.
    chunk_size : int, optional
        Points per chunk of the batched maps.

    Returns
    -------
    IsotropicMixture
        States ``[batch, 1, R, R]``; ``labels`` holds each component's digit, so
        ``.conditional(y)`` gives ``p(x | y)`` next to the unconditional mixture.

    Examples
    --------
    >>> mix = digits_mixture(8, 0.0)
    >>> x = mix.sample(4, 0.5, torch.Generator().manual_seed(0))  # [4, 1, 8, 8]
    >>> mix(x, 0.5).shape  # the exact denoiser
    torch.Size([4, 1, 8, 8])
    """
    resolution = _check_resolution(resolution)
    bandwidth = check_real(bandwidth, "bandwidth", lo=0.0)
    wanted = _check_classes(classes)
    images, labels = _images_at(resolution), torch.tensor(_raw_digits()[1])
    if wanted is not None:
        keep = torch.isin(labels, torch.tensor(wanted))
        images, labels = images[keep], labels[keep]
    return IsotropicMixture(images, bandwidth, labels=labels, chunk_size=chunk_size)
