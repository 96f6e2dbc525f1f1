"""The digits world of the paper's image tables: learned models, guidance, real digits as truth.

The counterpart of :mod:`stiffkit.paper.toy` and of :func:`stiffkit.paper.quality.compare` on
the 8 × 8 digits testbed (issue 13): :class:`DigitsWorld` gathers the shipped class-conditional
denoiser (``load_pretrained("digits")``, whose null label is the unconditional model), the
autoguidance guide (``load_pretrained("digits_ag_guide")``) and the guidance weights, and builds
each method's denoiser for per-sample labels; samplers start from ``σ_max · N(0, I)`` with
σ_max = 80 on EDM's grid (σ_min 0.002, ρ = 7), as the paper does. :func:`compare_digits` runs
a plan through :func:`~stiffkit.paper.quality.run_plan` and scores every run with
:func:`~stiffkit.diffusion.metrics.evaluate_images` against the 1797 real digits (FD-digits,
kNN precision / recall, class consistency against the conditioning labels, sliced Wasserstein,
endpoint error against a converged solve of the same ODE), plus a real-vs-real row — one
random half of the digits scored against the other — whose metrics are the noise floors.
:func:`guidance_sweep` picks the guidance weights by FD-digits on samples disjoint from the
table's.

Everything random derives from one ``seed``: sample i of a run uses the per-sample seed
``seed · SEED_STRIDE + i`` for its 64 noise values *and* its label (:meth:`DigitsWorld.
initial_state`), so a quick run's samples are the first of a full run's; the sweep uses seeds
offset by :data:`SWEEP_SEED_OFFSET`; the metrics and the real-vs-real split come from
independent streams of ``SeedSequence(seed)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stiffkit._utils import check_int, check_real
from stiffkit.diffusion.guidance import Guided
from stiffkit.diffusion.images import DigitsDenoiser, load_digits_pretrained
from stiffkit.diffusion.metrics import MetricSettings, evaluate_images
from stiffkit.diffusion.metrics.bootstrap import DEFAULT_NUM_BOOTSTRAP
from stiffkit.diffusion.mixtures.digits import digits_images
from stiffkit.diffusion.noise import SEED_STRIDE, as_seeds, randn_per_sample, run_seeds, sub_seed
from stiffkit.diffusion.samplers import REFERENCE_STEPS
from stiffkit.diffusion.schedules import SIGMA_MAX, SIGMA_MIN, edm_sigmas
from stiffkit.paper.quality import Method, blank_row, check_plan, run_method, run_plan
from stiffkit.paper.toy import GUIDED_METHODS

__all__ = ["DIGITS_GUIDANCE_WEIGHTS", "REAL_LABEL", "SWEEP_SEED_OFFSET", "DigitsWorld",
           "digits_world", "compare_digits", "guidance_sweep", "best_weights"]

#: Guidance weights before a sweep picks them (EDM2 convention: w = 1 is no guidance).
DIGITS_GUIDANCE_WEIGHTS = {"cfg": 2.0, "ag": 2.0}
#: Label of :func:`compare_digits`'s real-vs-real row (its metrics are the noise floors).
REAL_LABEL = "real vs real (floor)"
#: Offset of the sweep's per-sample seeds within a run seed: disjoint from the table's
#: samples (at most SEED_STRIDE / 2 of them).
SWEEP_SEED_OFFSET = SEED_STRIDE // 2
#: Images per network call: 8 × 8 convolutions run ~2× faster per image in blocks of 256 than
#: in one batch of 4096 on one CPU core (cache-sized activations; measured).
CHUNK = 256
#: Metric columns whose real-vs-real value :func:`compare_digits` copies into ``{name}_floor``.
_FLOORED = ("fd", "precision", "recall", "class_consistency", "sw")
#: Image shape of the states.
_DIMS = (1, 8, 8)


class _Labelled(torch.nn.Module):
    """``D(x, σ) = model(x, σ, labels)`` evaluated in blocks of :data:`CHUNK` samples."""

    def __init__(self, model: DigitsDenoiser, labels: Tensor | None) -> None:
        super().__init__()
        self.model, self.labels = model, labels

    def forward(self, x: Tensor, sigma: Any) -> Tensor:
        """Return ``D(x; σ, labels)`` ``[n, 1, 8, 8]`` (σ a scalar or ``[n]``)."""
        n = x.shape[0]
        if self.labels is not None and self.labels.shape[0] != n:
            raise ValueError(f"`x` has {n} samples but the denoiser holds "
                             f"{self.labels.shape[0]} labels.")
        per_sample = isinstance(sigma, Tensor) and sigma.ndim == 1 and sigma.shape[0] == n
        out = []
        for s in range(0, n, CHUNK):
            part = slice(s, s + CHUNK)
            out.append(self.model(x[part], sigma[part] if per_sample else sigma,
                                  None if self.labels is None else self.labels[part]))
        return out[0] if len(out) == 1 else torch.cat(out)


@dataclasses.dataclass(frozen=True, eq=False)
class DigitsWorld:
    """The learned digits models and guidance weights (see :func:`digits_world`).

    Attributes
    ----------
    main : DigitsDenoiser
        The class-conditional model (``labels=None``: its unconditional side, the CFG guide).
    ag_guide : DigitsDenoiser
        The autoguidance guide (smaller, trained 1/8 as long).
    weights : mapping
        Guidance weights ``{"cfg": w, "ag": w}``.
    sigma_max : float
        Start of the grid (80, EDM's and the paper's).
    """

    main: DigitsDenoiser
    ag_guide: DigitsDenoiser
    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: dict(DIGITS_GUIDANCE_WEIGHTS))
    sigma_max: float = SIGMA_MAX

    def __post_init__(self) -> None:
        for name in ("main", "ag_guide"):
            if not isinstance(getattr(self, name), DigitsDenoiser):
                raise TypeError(f"`{name}` must be a DigitsDenoiser, got "
                                f"{type(getattr(self, name)).__name__}.")
        if set(self.weights) != {"cfg", "ag"}:
            raise ValueError(f"`weights` must have the keys 'cfg' and 'ag', got "
                             f"{sorted(self.weights)}.")
        for key, w in self.weights.items():
            check_real(w, f"weights[{key!r}]", lo=0)
        check_real(self.sigma_max, "sigma_max", lo=SIGMA_MIN, lo_open=True)

    def with_weights(self, **weights: float) -> DigitsWorld:
        """Return a copy with some guidance weights replaced (``cfg=…``, ``ag=…``)."""
        unknown = sorted(set(weights) - {"cfg", "ag"})
        if unknown:
            raise ValueError(f"Unknown guidance {unknown}: the weights are 'cfg' and 'ag'.")
        return dataclasses.replace(self, weights={**self.weights, **weights})

    def denoiser(self, guidance: str = "none", *, labels: Tensor | None = None,
                 w: float | None = None):
        """Return the denoiser ``D(x, σ)`` of a method for per-sample `labels` ``[n]``.

        Parameters
        ----------
        guidance : {"none", "cfg", "ag"}
            The conditional model alone, CFG (guide: its unconditional side) or autoguidance
            (guide: the weak model with the same labels).
        labels : Tensor, [n], optional
            Digits 0..9 (−1: unconditional); None: the unconditional model throughout.
        w : float, optional
            Guidance weight (default ``weights[guidance]``).
        """
        if guidance not in GUIDED_METHODS:
            raise ValueError(f"`guidance` must be one of {GUIDED_METHODS}, got {guidance!r}.")
        if labels is not None:
            self.main.conditioned(labels)  # validates the labels now
        main = _Labelled(self.main, labels)
        if guidance == "none":
            return main
        guide = (_Labelled(self.main, None) if guidance == "cfg"
                 else _Labelled(self.ag_guide, labels))
        return Guided(main, guide, self.weights[guidance] if w is None else w)

    def sigmas(self, num_steps: int) -> Tensor:
        """Return EDM's grid σ_max → 0.002 (ρ = 7) with the trailing 0, ``[num_steps + 1]``."""
        return edm_sigmas(num_steps, SIGMA_MIN, self.sigma_max)

    def initial_state(self, seeds: int | Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Return start states ``σ_max · ε`` ``[n, 1, 8, 8]`` (float32) and labels ``[n]``.

        Seed i draws 65 normals: 64 are the noise ε, the last ``z`` the label
        ``⌊10 Φ(z)⌋``, uniform on the digits.
        """
        z = randn_per_sample(as_seeds(seeds), (65,), dtype=torch.float64)
        labels = (torch.special.ndtr(z[:, -1]) * 10).long().clamp_(0, 9)
        x = (self.sigma_max * z[:, :64]).reshape(-1, *_DIMS).float()
        return x, labels


@functools.lru_cache(maxsize=2)
def _models(dtype: torch.dtype) -> tuple[DigitsDenoiser, DigitsDenoiser]:
    return (load_digits_pretrained("digits", dtype=dtype),
            load_digits_pretrained("digits_ag_guide", dtype=dtype))


def digits_world(weights: Mapping[str, float] | None = None, *,
                 dtype: torch.dtype = torch.float32) -> DigitsWorld:
    """Return the digits world with the shipped models (cached) and guidance `weights`."""
    main, guide = _models(dtype)
    return DigitsWorld(main, guide, dict(weights or DIGITS_GUIDANCE_WEIGHTS))


def _settings(num_bootstrap: int, ci: str) -> MetricSettings:
    return MetricSettings(num_bootstrap=check_int(num_bootstrap, "num_bootstrap", 0), ci=ci)


def _real() -> tuple[Tensor, Tensor]:
    images, labels = digits_images(8)
    return images.float(), labels


def compare_digits(
    world: DigitsWorld,
    plan: Iterable[tuple[int, Method]],
    *,
    num_samples: int,
    seed: int = 0,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    ci: str = "percentile",
    reference_steps: int = REFERENCE_STEPS,
    include_floor: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Sample and score each ``(num_steps, method)`` of `plan` from the same noise and labels.

    Parameters
    ----------
    world : DigitsWorld
    plan : iterable of (int, Method)
        Runs, in order (``Method.guidance`` picks the world's denoiser).
    num_samples, seed, num_bootstrap : int
        Samples per run; root of every random draw (module notes); bootstrap resamples.
    ci : {"percentile", "basic"}
        Interval kind of :func:`~stiffkit.diffusion.metrics.evaluate_images`.
    reference_steps : int
        RK4 steps of the converged solve behind the endpoint errors.
    include_floor : bool
        Append the real-vs-real row (a random half of the 1797 digits, with its labels,
        against the other half): its metrics are the noise floors, also copied into every
        row's ``*_floor`` columns (sizes ``n_floor``, not ``n``: see the notes).
    progress : bool
        Show a tqdm bar over the runs.

    Returns
    -------
    DataFrame
        One row per run with :func:`~stiffkit.paper.quality.run_plan`'s columns and
        :data:`~stiffkit.diffusion.metrics.IMAGE_COLUMNS` (truth: the 1797 real digits;
        class consistency against each sample's label); the real-vs-real row last.

    Notes
    -----
    The floor row compares 898 against 899 images, the runs ``num_samples`` against 1797:
    FD-digits is biased upwards by about ``c (1/n + 1/m)``, so the floor at the runs' sizes is
    about the row's FD times ``(1/n + 1/1797) / (1/898 + 1/899)`` (1.13 at n = 512, 0.47 at
    n = 2048).
    """
    if not isinstance(world, DigitsWorld):
        raise TypeError(f"`world` must be a DigitsWorld, got {type(world).__name__}.")
    plan = check_plan(plan)
    num_samples = check_int(num_samples, "num_samples", 2)
    if num_samples > SWEEP_SEED_OFFSET:
        raise ValueError(f"`num_samples` must be at most {SWEEP_SEED_OFFSET}, got {num_samples}.")
    seed = check_int(seed, "seed", 0)
    reference_steps = check_int(reference_steps, "reference_steps")
    settings = _settings(num_bootstrap, ci)
    x_init, labels = world.initial_state(run_seeds(seed, num_samples))
    real, real_labels = _real()
    ss_metric, ss_split = np.random.SeedSequence(seed).spawn(2)
    metric_seed = sub_seed(ss_metric)

    def score(samples: Tensor, reference: Tensor | None) -> dict[str, Any]:
        row = evaluate_images(samples, real, labels=labels, endpoint_reference=reference,
                              seed=metric_seed, settings=settings, noise_floor=False)
        return row.iloc[0].to_dict()

    rows = run_plan(world, plan, x_init, score, reference_steps=reference_steps, labels=labels,
                    progress=progress)
    if include_floor:
        perm = torch.from_numpy(np.random.default_rng(ss_split).permutation(len(real)))
        a, b = perm[: len(real) // 2], perm[len(real) // 2 :]
        floor = evaluate_images(real[a], real[b], labels=real_labels[a], seed=metric_seed,
                                settings=settings, noise_floor=False).iloc[0].to_dict()
        rows.append({**blank_row(REAL_LABEL), **floor})
        for row in rows:
            row["n_floor"] = floor["n"]
            for name in _FLOORED:
                row[f"{name}_floor"] = floor[name]
    df = pd.DataFrame(rows)
    for col in ("num_steps", "nfe", "network_calls", "n", "n_truth"):
        df[col] = df[col].astype(np.int64)
    return df


def guidance_sweep(
    world: DigitsWorld,
    weights: Mapping[str, Sequence[float]],
    *,
    num_steps: int = 16,
    num_samples: int = 512,
    seed: int = 0,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    ci: str = "percentile",
) -> pd.DataFrame:
    """Score plain Heun with each guidance weight on samples disjoint from the table's.

    Parameters
    ----------
    world : DigitsWorld
    weights : mapping
        ``{"cfg": [w, …], "ag": [w, …]}`` (either key may be missing), each ``w >= 0``.
    num_steps, num_samples, seed, num_bootstrap : int
        Grid size; samples per weight, from the per-sample seeds ``seed · SEED_STRIDE +``
        :data:`SWEEP_SEED_OFFSET` ``+ i``; root seed; bootstrap resamples.
    ci : {"percentile", "basic"}

    Returns
    -------
    DataFrame
        One row per ``(guidance, w)``: ``guidance, guidance_weight, num_steps, nfe`` and
        :data:`~stiffkit.diffusion.metrics.IMAGE_COLUMNS` without endpoint errors (NaN).
    """
    if not isinstance(world, DigitsWorld):
        raise TypeError(f"`world` must be a DigitsWorld, got {type(world).__name__}.")
    if not isinstance(weights, Mapping) or not weights or set(weights) - {"cfg", "ag"}:
        raise ValueError(f"`weights` must map 'cfg' and/or 'ag' to lists of weights, got "
                         f"{weights!r}.")
    num_samples = check_int(num_samples, "num_samples", 2)
    if num_samples > SEED_STRIDE - SWEEP_SEED_OFFSET:
        raise ValueError(f"`num_samples` must be at most {SEED_STRIDE - SWEEP_SEED_OFFSET}.")
    seed = check_int(seed, "seed", 0)
    settings = _settings(num_bootstrap, ci)
    base = run_seeds(seed, 1)[0] + SWEEP_SEED_OFFSET
    x_init, labels = world.initial_state(range(base, base + num_samples))
    real, _ = _real()
    metric_seed = sub_seed(np.random.SeedSequence(seed).spawn(3)[2])
    rows = []
    for guidance, ws in weights.items():
        for w in ws:
            w = check_real(w, f"weights[{guidance!r}]", lo=0)
            run = run_method(world.with_weights(**{guidance: w}), Method(guidance, guidance),
                             x_init, num_steps, labels=labels)
            score = evaluate_images(run.samples, real, labels=labels, seed=metric_seed,
                                    settings=settings, noise_floor=False).iloc[0].to_dict()
            rows.append({"guidance": guidance, "guidance_weight": w, "num_steps": int(num_steps),
                         "nfe": run.nfe, **score})
    return pd.DataFrame(rows)


def best_weights(sweep: pd.DataFrame, metric: str = "fd") -> dict[str, float]:
    """Return each guidance's weight of lowest `metric` in a :func:`guidance_sweep` frame."""
    missing = {"guidance", "guidance_weight", metric} - set(sweep.columns)
    if missing:
        raise ValueError(f"`sweep` has no column(s) {sorted(missing)}.")
    out = {}
    for guidance, part in sweep.groupby("guidance", sort=True):
        values = part[metric].to_numpy(float)
        if not np.isfinite(values).any():
            raise ValueError(f"`sweep` has no finite {metric!r} for guidance {guidance!r}.")
        out[str(guidance)] = float(part["guidance_weight"].iloc[int(np.nanargmin(values))])
    return out

