"""How good are the learned digits denoisers? Learned vs exact, memorisation, class consistency.

``python -m stiffkit.diffusion.images.report`` prints (and with ``--out`` writes as CSV):

1. :func:`denoiser_error_table` — the RMS per pixel of ``D_θ(x; σ) − D_b(x; σ)`` against the
   exact denoiser of ``digits_mixture(bandwidth=b)``, per σ and ``b``, unconditional
   (``labels=None`` against the mixture) and conditional (each sample's digit against
   ``.conditional(digit)``), at ``x = y + σ ε`` with ``y`` a training image: the points of
   the empirical ``p_σ`` (the learned model's training distribution), the same points for
   every ``b``.
2. :func:`nearest_image_table` — distance (L2 over the 64 pixels, ``[−1, 1]`` units) from
   samples to the nearest training image: the learned model's (Heun on EDM's grid), and the
   exact ``b``-smoothed mixture's at σ = 0 (a training image plus ``b ε``, so about
   ``8 b``), next to the leave-one-out distance between training images. ``b = 0`` copies
   the training set; the ``b`` whose exact model generalises like the learned one is the
   one the learned samples' distances match, and the one closest in denoiser error at the
   σ where the two differ.
3. :func:`class_consistency_table` — the fraction of conditional samples that a digits
   classifier assigns to the requested digit: no guidance, CFG (the model's own
   unconditional side as guide, Ho & Salimans 2022) and autoguidance (the shipped guide,
   Karras et al. 2024). The default classifier is a **stand-in**,
   :func:`standin_classifier` — scikit-learn's ``LogisticRegression`` fitted on all 1797
   images; the command line also reports stiffkit's own small CNN
   (:mod:`stiffkit.diffusion.metrics.classifier`, :func:`stiffkit_classifier`) where its
   weights are present.

All draws come from per-sample seeds (:mod:`stiffkit.diffusion.noise`), so a row does not
depend on the batch size.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import check_int
from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.images.denoiser import DigitsDenoiser
from stiffkit.diffusion.images.pretrained import load_digits_pretrained
from stiffkit.diffusion.mixtures.digits import digits_images, digits_mixture
from stiffkit.diffusion.noise import initial_noise, randn_per_sample, run_seeds
from stiffkit.diffusion.samplers import sample_final
from stiffkit.diffusion.schedules import edm_sigmas
from stiffkit.io import save_frame

__all__ = [
    "BANDWIDTHS",
    "SIGMA_GRID",
    "class_consistency_table",
    "denoiser_error_table",
    "main",
    "nearest_image_distance",
    "nearest_image_table",
    "sample_digits",
    "standin_classifier",
    "stiffkit_classifier",
]

#: Noise levels of the error table, EDM's range 0.002 … 80.
SIGMA_GRID = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0)
#: Bandwidths of the exact mixtures compared with.
BANDWIDTHS = (0.0, 0.05, 0.1, 0.2, 0.3)
#: Heun steps of the report's samples (EDM's grid, 2N − 1 evaluations).
NUM_STEPS = 18

Classifier = Callable[[Tensor], Tensor]


def _draw_training_points(n: int, sigma: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(x, y, labels)``: ``y`` training images, ``x = y + σ ε`` (per-sample seeds)."""
    images, labels = digits_images(8)
    z = randn_per_sample(run_seeds(seed, n), (65,), dtype=torch.float64)  # [n, 1 + 64]
    uniform = torch.special.ndtr(z[:, 0])  # the image index: Φ(z₀) is uniform on (0, 1)
    idx = (uniform * images.shape[0]).long().clamp_(max=images.shape[0] - 1)
    y = images[idx]
    return y + sigma * z[:, 1:].reshape(n, 1, 8, 8), y, labels[idx]


def denoiser_error_table(
    model: DigitsDenoiser,
    *,
    sigmas: Sequence[float] = SIGMA_GRID,
    bandwidths: Sequence[float] = BANDWIDTHS,
    n: int = 512,
    seed: int = 0,
    name: str = "",
) -> pd.DataFrame:
    """Return the learned-vs-exact denoiser error per σ and bandwidth.

    Parameters
    ----------
    model : DigitsDenoiser
    sigmas : sequence of float
        Positive noise levels.
    bandwidths : sequence of float
        Bandwidths ``b ≥ 0`` of :func:`digits_mixture`.
    n : int
        Points per σ (shared by all bandwidths).
    seed : int
    name : str
        Written in the ``model`` column.

    Returns
    -------
    pandas.DataFrame
        One row per ``(labels, sigma, bandwidth)`` with ``labels`` in {"none", "digit"};
        columns ``model, labels, sigma, bandwidth, rmse`` (RMS over points and pixels of
        ``D_θ − D_b``) and ``rmse_clean`` (RMS of ``D_θ − y``, the learned denoising error).
    """
    if not isinstance(model, DigitsDenoiser):
        raise TypeError(f"`model` must be a DigitsDenoiser, got {type(model).__name__}.")
    n = check_int(n, "n")
    mixtures = {b: digits_mixture(8, b) for b in bandwidths}
    rows = []
    for sigma in sigmas:
        x, y, labels = _draw_training_points(n, float(sigma), seed)
        xf = x.float()
        with torch.no_grad():
            learned = {"none": model(xf, sigma).double(), "digit": model(xf, sigma, labels)
                       .double()}
        for b, mix in mixtures.items():
            exact_cond = torch.empty_like(x)
            for c in labels.unique().tolist():
                sel = labels == c
                exact_cond[sel] = mix.conditional(c).denoise(x[sel], sigma)
            exact = {"none": mix.denoise(x, sigma), "digit": exact_cond}
            for kind in ("none", "digit"):
                rows.append({"model": name, "labels": kind, "sigma": float(sigma),
                             "bandwidth": float(b),
                             "rmse": float((learned[kind] - exact[kind]).square().mean().sqrt()),
                             "rmse_clean": float((learned[kind] - y).square().mean().sqrt())})
    return pd.DataFrame(rows)


def sample_digits(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    seeds: Sequence[int],
    *,
    num_steps: int = NUM_STEPS,
) -> Tensor:
    """Return samples ``[n, 1, 8, 8]`` of `denoiser` (EDM Heun, σ 80 → 0.002 → 0, float32)."""
    sigmas = edm_sigmas(num_steps, dtype=torch.float32)
    x0 = initial_noise(list(seeds), (1, 8, 8), float(sigmas[0]))
    with torch.no_grad():
        out, _ = sample_final(denoiser, x0, sigmas)
    return out


def nearest_image_distance(samples: Tensor) -> Tensor:
    """Return the L2 distance of each of ``samples [n, 1, 8, 8]`` to its nearest training image."""
    images, _ = digits_images(8)
    flat = samples.reshape(samples.shape[0], -1).double()
    return torch.cdist(flat, images.reshape(images.shape[0], -1)).amin(dim=1)


def _summary(dist: Tensor) -> dict[str, float]:
    q = torch.quantile(dist, torch.tensor([0.1, 0.5, 0.9], dtype=dist.dtype)).tolist()
    return {"nn_p10": q[0], "nn_median": q[1], "nn_p90": q[2]}


def nearest_image_table(
    model: DigitsDenoiser,
    *,
    bandwidths: Sequence[float] = BANDWIDTHS,
    n: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Return nearest-training-image distances of learned and exact samples (module docstring).

    Rows: ``source`` = "training (leave-one-out)", "learned, unconditional", "learned,
    conditional" (digits ``k mod 10``) and "exact b=…" (σ = 0 samples of the mixture);
    columns ``nn_p10, nn_median, nn_p90`` (quantiles of the distance).
    """
    n = check_int(n, "n")
    images, _ = digits_images(8)
    flat = images.reshape(images.shape[0], -1)
    loo = torch.cdist(flat, flat).fill_diagonal_(float("inf")).amin(dim=1)
    rows = [{"source": "training (leave-one-out)", **_summary(loo)}]
    seeds = run_seeds(seed, n)
    digits = torch.arange(n) % 10
    for label, den in (("learned, unconditional", model.unconditional()),
                       ("learned, conditional", model.conditioned(digits))):
        rows.append({"source": label, **_summary(nearest_image_distance(
            sample_digits(den, seeds)))})
    for b in bandwidths:
        x = digits_mixture(8, b).sample(n, 0.0, torch.Generator().manual_seed(seed))
        rows.append({"source": f"exact b={b:g}", **_summary(nearest_image_distance(x))})
    return pd.DataFrame(rows)


def standin_classifier() -> tuple[Classifier, float]:
    """Return a stand-in digits classifier and its 5-fold cross-validated accuracy.

    scikit-learn's ``LogisticRegression`` on the 64 pixels in ``[−1, 1]``, fitted on all
    1797 images: a **stand-in** until stiffkit ships its own classifier. The classifier
    maps ``[n, 1, 8, 8]`` images to ``[n]`` int64 digits.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    images, labels = digits_images(8)
    features, target = images.reshape(images.shape[0], -1).numpy(), labels.numpy()
    # One BLAS thread: on a busy 2-core machine the fit is 25-45x faster (measured).
    with threadpool_limits(1):
        cv = float(np.mean(cross_val_score(LogisticRegression(max_iter=5000), features,
                                           target, cv=5)))
        fitted = LogisticRegression(max_iter=5000).fit(features, target)

    def classify(x: Tensor) -> Tensor:
        flat = x.detach().reshape(x.shape[0], -1).double().clamp(-1, 1).numpy()
        with threadpool_limits(1):
            return torch.as_tensor(fitted.predict(flat), dtype=torch.int64)

    return classify, cv


def stiffkit_classifier() -> tuple[Classifier, float] | None:
    """Return stiffkit's digits CNN as a classifier and its held-out accuracy, or None.

    None where :mod:`stiffkit.diffusion.metrics.classifier` or its weights are missing or
    unreadable (the report then uses :func:`standin_classifier` alone).
    """
    try:
        from stiffkit.diffusion.metrics import classifier as cnn

        model = cnn.digits_classifier()
    except (ImportError, FileNotFoundError, ValueError):
        return None
    accuracy = model.metadata.get("held_out_accuracy", float("nan"))
    accuracy = float(accuracy.get("8", float("nan")) if isinstance(accuracy, dict) else accuracy)

    def classify(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(cnn.to_classifier_input(x)).argmax(dim=1)

    return classify, accuracy


def class_consistency_table(
    model: DigitsDenoiser,
    guide: DigitsDenoiser | None = None,
    *,
    classifier: Classifier | None = None,
    weights: Sequence[float] = (2.0, 3.0),
    n_per_class: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """Return the class consistency of conditional samples with and without guidance.

    Parameters
    ----------
    model : DigitsDenoiser
    guide : DigitsDenoiser, optional
        The autoguidance guide (rows "autoguidance" only with one).
    classifier : callable, optional
        ``[n, 1, 8, 8] -> [n]`` digits; default :func:`standin_classifier`.
    weights : sequence of float
        Guidance weights ``w`` (EDM2 convention, ``w = 1`` is no guidance).
    n_per_class : int
        Samples per digit; sample ``k`` of digit ``c`` has seed ``run_seeds(seed, ·)[c n + k]``
        (the same noise for every guidance setting).
    seed : int

    Returns
    -------
    pandas.DataFrame
        Columns ``guidance, w, accuracy`` (fraction classified as the requested digit),
        ``worst_digit, worst_accuracy`` and ``nn_median`` (median nearest-training-image
        distance of the samples); a row "exact b=0 (training images)" gives the
        classifier's own accuracy on the data.
    """
    n_per_class = check_int(n_per_class, "n_per_class")
    if classifier is None:
        classifier, _ = standin_classifier()
    digits = torch.arange(10).repeat_interleave(n_per_class)
    seeds = run_seeds(seed, digits.shape[0])
    cond = model.conditioned(digits)
    settings = [("none", 1.0, cond)]
    settings += [("CFG", w, Guided(cond, model.unconditional(), w)) for w in weights]
    if guide is not None:
        settings += [("autoguidance", w, Guided(cond, guide.conditioned(digits), w))
                     for w in weights]
    images, labels = digits_images(8)
    rows = [_consistency_row("exact b=0 (training images)", 1.0, images, labels, classifier)]
    for kind, w, den in settings:
        rows.append(_consistency_row(kind, w, sample_digits(den, seeds), digits, classifier))
    return pd.DataFrame(rows)


def _consistency_row(kind: str, w: float, x: Tensor, digits: Tensor,
                     classifier: Classifier) -> dict:
    hit = (classifier(x) == digits).double()
    per_digit = torch.stack([hit[digits == c].mean() for c in range(10)])
    worst = int(per_digit.argmin())
    return {"guidance": kind, "w": w, "accuracy": float(hit.mean()), "worst_digit": worst,
            "worst_accuracy": float(per_digit[worst]),
            "nn_median": float(nearest_image_distance(x).median())}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the three tables of the shipped models (``--out``: also CSV)."""
    parser = argparse.ArgumentParser(prog="python -m stiffkit.diffusion.images.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="points per σ of the error table")
    parser.add_argument("--samples", type=int, default=50, help="samples per digit")
    parser.add_argument("--out", type=Path, help="folder for the CSV files")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    main_model, guide = load_digits_pretrained("digits"), load_digits_pretrained("digits_ag_guide")
    print(f"sigma_data = {main_model.sigma_data:.4f}")
    errors = pd.concat([denoiser_error_table(m, n=args.n, name=name) for name, m in
                        (("digits", main_model), ("digits_ag_guide", guide))])
    nearest = nearest_image_table(main_model, n=10 * args.samples)
    classify, cv = standin_classifier()
    consistency = class_consistency_table(main_model, guide, classifier=classify,
                                          n_per_class=args.samples)
    for name in ("digits", "digits_ag_guide"):
        for kind in ("none", "digit"):
            table = errors[(errors.model == name) & (errors.labels == kind)].pivot(
                index="sigma", columns="bandwidth", values="rmse")
            table["closest b"] = table.idxmin(axis=1)
            print(f"\n{name}, labels={kind}: RMSE of D_learned - D_exact(b) per pixel\n")
            print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nnearest-training-image distance (L2, 64 pixels)\n")
    print(nearest.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nclass consistency (STAND-IN classifier: sklearn LogisticRegression, "
          f"5-fold CV accuracy {cv:.3f})\n")
    print(consistency.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    frames = [consistency.assign(classifier="standin_logreg")]
    cnn = stiffkit_classifier()
    if cnn is not None:
        by_cnn = class_consistency_table(main_model, guide, classifier=cnn[0],
                                         n_per_class=args.samples)
        print(f"\nclass consistency (stiffkit.diffusion.metrics.classifier CNN, held-out "
              f"accuracy {cnn[1]:.3f})\n")
        print(by_cnn.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        frames.append(by_cnn.assign(classifier="stiffkit_cnn"))
    consistency = pd.concat(frames, ignore_index=True)
    if args.out is not None:
        for stem, df in (("digits_denoiser_error", errors), ("digits_nearest", nearest),
                         ("digits_class_consistency", consistency)):
            save_frame(df, args.out / f"{stem}.csv", float_format="%.6g")


if __name__ == "__main__":
    main()
