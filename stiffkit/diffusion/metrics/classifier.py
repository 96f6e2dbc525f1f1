"""A small digits classifier, trained here and shipped: the feature space of the images metrics.

The images testbed (:func:`stiffkit.diffusion.digits_mixture`) has no Inception network; its
"FID" is the Fréchet distance (Heusel et al., 2017) in the penultimate layer of this network,
and class consistency of conditional samples is judged by its predictions.

Architecture (:class:`DigitsClassifier`, 38 282 parameters): on ``[n, 1, 8, 8]`` images in
``[−1, 1]``, ``conv 3×3 (1→16) → ReLU → conv 3×3 (16→32) → ReLU → 2×2 average pool →
linear (512→64) → ReLU → linear (64→10)``. The **features** are the 64 ReLU activations
before the last layer.

Resolutions: images at side ``R = 8m`` (the upsampled testbeds, 16 and 32) are brought back to
8 × 8 by ``m × m`` **average pooling** before classification (:func:`to_classifier_input`).
Average pooling of the testbed's bilinear upsampling is a mild blur of the original image, not
the original itself, so the training set holds every image three times: as is, and pooled
back from its 16 × 16 and 32 × 32 upsamplings (``stiffkit.diffusion.digits_images``).

Training (:func:`train_classifier`): a stratified split (:func:`digits_split`, 20 % held
out, fixed seed) of ``sklearn.datasets.load_digits``; Adam, cross-entropy, with Gaussian
pixel noise of a uniformly drawn level ``≤ NOISE_MAX`` added to each training image (samplers'
outputs are not pixel-perfect). One private generator seeded with ``seed`` draws the initial
weights, the batches and the noise; with one torch thread two runs give bitwise-equal weights
(the command line pins one thread). ``python -m stiffkit.diffusion.metrics.classifier
--train`` retrains and atomically rewrites :data:`CLASSIFIER_PATH`; the held-out accuracy,
the seed and the training time are stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stiffkit._utils import check_int, check_real
from stiffkit.diffusion._weights import check_dtype, read_weights
from stiffkit.diffusion.mixtures.digits import digits_images
from stiffkit.io import atomic_write

__all__ = [
    "CLASSIFIER_PATH",
    "CLASSIFIER_REGENERATE_COMMAND",
    "DigitsClassifier",
    "digits_classifier",
    "digits_split",
    "held_out_accuracy",
    "load_classifier",
    "save_classifier",
    "to_classifier_input",
    "train_classifier",
]

#: The shipped weights, and the one command that regenerates them.
CLASSIFIER_PATH = Path(__file__).resolve().parents[1] / "weights" / "digits_classifier.pt"
CLASSIFIER_REGENERATE_COMMAND = "python -m stiffkit.diffusion.metrics.classifier --train"
#: Side of the classifier's input images, number of classes and of features.
INPUT_SIZE = 8
NUM_CLASSES = 10
NUM_FEATURES = 64
#: Held-out fraction and seed of :func:`digits_split`.
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0
#: Training recipe of the shipped weights.
TRAIN_SEED = 0
EPOCHS = 60
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
NOISE_MAX = 0.3
#: Resolutions whose pooled images join the training set (8 is the original).
TRAIN_RESOLUTIONS = (8, 16, 32)
#: Version of the ``.pt`` layout written by :func:`save_classifier`.
FORMAT_VERSION = 1
_STATE_KEYS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
               "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


class DigitsClassifier(nn.Module):
    """Tiny CNN on 8 × 8 digits: two 3 × 3 convolutions, a pool, two linear layers.

    Parameters
    ----------
    dtype : torch.dtype
        Parameter dtype (float32 for training; float64 for the metrics).
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, dtype=dtype)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, dtype=dtype)
        self.fc1 = nn.Linear(32 * 4 * 4, NUM_FEATURES, dtype=dtype)
        self.fc2 = nn.Linear(NUM_FEATURES, NUM_CLASSES, dtype=dtype)
        self.metadata: dict[str, Any] = {}

    def features(self, x: Tensor) -> Tensor:
        """Return the penultimate activations ``[n, 64]`` of images ``[n, 1, 8, 8]``."""
        h = torch.relu(self.conv1(x))
        h = torch.nn.functional.avg_pool2d(torch.relu(self.conv2(h)), 2)
        return torch.relu(self.fc1(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Return the class logits ``[n, 10]`` of images ``[n, 1, 8, 8]``."""
        return self.fc2(self.features(x))


def to_classifier_input(images: Tensor | np.ndarray, name: str = "images") -> Tensor:
    """Return images of side ``R = 8m`` as the classifier's float64 8 × 8 input.

    Parameters
    ----------
    images : Tensor or ndarray, shape [n, *dims]
        ``dims`` is ``(1, R, R)``, ``(R, R)`` or ``(R²,)`` with ``R`` a multiple of 8; sides
        above 8 are average-pooled over ``m × m`` blocks.
    name : str
        The argument's name in error messages.

    Returns
    -------
    Tensor, shape [n, 1, 8, 8], float64

    Raises
    ------
    ValueError
        For other shapes, an empty batch or NaN / Inf entries (naming `name`).
    """
    x = torch.as_tensor(images).detach().to("cpu", torch.float64)
    if x.is_complex() or x.ndim < 2:
        raise ValueError(f"`{name}` must be real images [n, *dims], got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    d = x[0].numel()
    side = round(d**0.5)
    if side * side != d or side % INPUT_SIZE or side == 0:
        raise ValueError(f"`{name}` must hold square images of side 8, 16, 32, ... "
                         f"([n, 1, R, R], [n, R, R] or [n, R²]), got shape {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"`{name}` contains NaN or Inf.")
    x = x.reshape(-1, 1, side, side)
    if side > INPUT_SIZE:
        x = torch.nn.functional.avg_pool2d(x, side // INPUT_SIZE)
    return x


def digits_split(
    held_out: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Return a stratified split of the 1797 digits: train and held-out indices (sorted).

    Per class, a permutation from ``numpy.random.default_rng(seed)`` puts the first
    ``round(held_out · count)`` images in the held-out set.

    Parameters
    ----------
    held_out : float
        Held-out fraction, strictly between 0 and 1.
    seed : int

    Returns
    -------
    train, held_out : ndarray, shape [n_train] and [n_held_out], int64
        Indices into :func:`~stiffkit.diffusion.mixtures.digits_images` (1438 and 359 by
        default).
    """
    held_out = check_real(held_out, "held_out", lo=0, hi=1, lo_open=True, hi_open=True)
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    labels = digits_images()[1].numpy()
    test = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        test.append(rng.permutation(idx)[: round(held_out * len(idx))])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def _training_images(train_idx: np.ndarray) -> tuple[Tensor, Tensor]:
    """Return the training images (every resolution of :data:`TRAIN_RESOLUTIONS`, pooled)."""
    xs, ys = [], []
    for r in TRAIN_RESOLUTIONS:
        images, labels = digits_images(r)
        xs.append(to_classifier_input(images[train_idx]))
        ys.append(labels[train_idx])
    return torch.cat(xs).float(), torch.cat(ys)


@torch.no_grad()
def held_out_accuracy(model: DigitsClassifier, resolution: int = INPUT_SIZE) -> float:
    """Return `model`'s accuracy on the held-out split of :func:`digits_split`.

    Parameters
    ----------
    model : DigitsClassifier
    resolution : int
        Side of the images (8, 16, 32, …: upsampled as the testbed does, then pooled).

    Returns
    -------
    float
    """
    images, labels = digits_images(resolution)
    test_idx = digits_split()[1]
    p = next(model.parameters())
    x = to_classifier_input(images[test_idx]).to(p.dtype)
    return float((model(x).argmax(1) == labels[test_idx]).double().mean())


def train_classifier(
    *, seed: int = TRAIN_SEED, epochs: int = EPOCHS, progress: bool = False
) -> DigitsClassifier:
    """Train a :class:`DigitsClassifier` on the training split (module docstring's recipe).

    Parameters
    ----------
    seed : int
        Seeds the private generator of the initial weights, the batches and the noise.
    epochs : int
    progress : bool
        Print the loss and the held-out accuracy every 10 epochs.

    Returns
    -------
    DigitsClassifier
        In eval mode; ``metadata`` holds the recipe, the held-out accuracy (at 8, 16 and
        32), the parameter count and the training time in seconds.
    """
    seed, epochs = check_int(seed, "seed", 0), check_int(epochs, "epochs", 1)
    start = time.perf_counter()
    train_idx, test_idx = digits_split()
    x, y = _training_images(train_idx)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the default init draws from the global RNG
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
        model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), BATCH_SIZE):
            idx = perm[s : s + BATCH_SIZE]
            level = NOISE_MAX * torch.rand(len(idx), 1, 1, 1, generator=gen)
            xb = x[idx] + level * torch.randn(x[idx].shape, generator=gen)
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if progress and (epoch + 1) % 10 == 0:
            model.eval()
            print(f"epoch {epoch + 1:3d}  loss {total / len(x):.4f}  "
                  f"held-out accuracy {held_out_accuracy(model):.4f}", flush=True)
    model.eval().requires_grad_(False)
    model.metadata = {
        "seed": seed, "epochs": epochs, "batch_size": BATCH_SIZE, "lr": LEARNING_RATE,
        "weight_decay": WEIGHT_DECAY, "noise_max": NOISE_MAX,
        "train_resolutions": list(TRAIN_RESOLUTIONS), "split_seed": SPLIT_SEED,
        "held_out_fraction": HELD_OUT_FRACTION, "num_train": len(train_idx),
        "num_held_out": len(test_idx),
        "held_out_accuracy": {str(r): held_out_accuracy(model, r) for r in TRAIN_RESOLUTIONS},
        "num_params": sum(p.numel() for p in model.parameters()),
        "train_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    return model


def save_classifier(model: DigitsClassifier, path: str | os.PathLike = CLASSIFIER_PATH) -> Path:
    """Write `model`'s float32 weights and metadata atomically to `path`.

    Parameters
    ----------
    model : DigitsClassifier
    path : path-like
        Default: the shipped file :data:`CLASSIFIER_PATH`.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(model, DigitsClassifier):
        raise TypeError(f"`model` must be a DigitsClassifier, got {type(model).__name__}.")
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()},
        "metadata": {**model.metadata, "torch_version": str(torch.__version__)},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_classifier(
    path: str | os.PathLike = CLASSIFIER_PATH, *, dtype: torch.dtype = torch.float64
) -> DigitsClassifier:
    """Load a classifier written by :func:`save_classifier`: eval mode, frozen, in `dtype`.

    Parameters
    ----------
    path : path-like
        Default: the shipped file :data:`CLASSIFIER_PATH`.
    dtype : torch.dtype
        float64 (default, as the metrics use it) or float32.

    Returns
    -------
    DigitsClassifier
        With the training recipe, held-out accuracy and torch version in ``.metadata``.

    Raises
    ------
    FileNotFoundError
        If there is no file at `path`.
    ValueError
        If the file is unreadable, not a classifier file of this format, lacks an entry or
        a weight, has weights of the wrong shape, or holds NaN / Inf weights; the message
        names the path and the command that regenerates the shipped weights.
    """
    path = Path(path)
    hint = f" Regenerate the shipped weights with `{CLASSIFIER_REGENERATE_COMMAND}`."
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no classifier weight file at {path}.{hint}")
    check_dtype(dtype)
    payload = read_weights(path, what="DigitsClassifier", format_version=FORMAT_VERSION,
                           required=("state_dict", "metadata"), hint=hint)
    state = payload["state_dict"]
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"`path`: {path} lacks the weights {missing}.{hint}")
    model = DigitsClassifier(dtype=dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"`path`: {path} does not hold weights of a DigitsClassifier "
                         f"({err}).{hint}") from None
    model.metadata = dict(payload["metadata"])
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def digits_classifier() -> DigitsClassifier:
    """Return the shipped classifier in float64 (loaded once per process; do not modify)."""
    return load_classifier(CLASSIFIER_PATH)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``--train`` retrains and rewrites the shipped weights; else a summary."""
    parser = argparse.ArgumentParser(prog="python -m stiffkit.diffusion.metrics.classifier",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="retrain and rewrite the weights")
    parser.add_argument("--out", type=Path, default=CLASSIFIER_PATH,
                        help=f"weight file (default: {CLASSIFIER_PATH})")
    args = parser.parse_args(argv)
    if args.train:
        torch.set_num_threads(1)  # bitwise-reproducible weights (module docstring)
        model = train_classifier(progress=True)
        print(f"wrote {save_classifier(model, args.out)}")
    else:
        model = load_classifier(args.out)
    for key, value in model.metadata.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
