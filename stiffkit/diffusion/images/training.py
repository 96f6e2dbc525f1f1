"""Train the digits denoisers with EDM's recipe on CPU (Karras et al. 2022, §5 and Table 1).

``python -m stiffkit.diffusion.images.training`` retrains the shipped models
(:data:`DIGITS_RUNS`) and atomically rewrites ``stiffkit/diffusion/weights/digits*.pt``.

Data: all 1797 images of ``sklearn.datasets.load_digits`` in ``[−1, 1]``
(:func:`stiffkit.diffusion.mixtures.digits.digits_images`), no augmentation — flips and
shifts would change the digits' distribution away from the exact mixture the learned
denoiser is compared with. ``σ_d`` of the preconditioning is the standard deviation of all
pixels (:func:`measure_sigma_data`, 0.752).

Per iteration, for a batch of images ``y`` drawn uniformly with replacement, labels
dropped to the null label with probability ``p_uncond`` (label dropout, Ho & Salimans 2022),
``ln σ ~ N(P_mean, P_std²)`` and ``n ~ N(0, σ² I)``, minimise EDM's loss
``mean_batch λ(σ) · mean_pixels (D(y + n; σ, label) − y)²`` with
``λ(σ) = (σ² + σ_d²)/(σ σ_d)²`` (the weight that makes the raw network's target unit
variance). One change to EDM: a fraction ``p_wide`` (0.1) of the σ are drawn log-uniformly on
the sampler's whole range ``[0.002, 80]`` instead. EDM's log-normal puts 1% of the σ above 5
and 0.02% above 20, so the network is extrapolating where sampling starts (measured on a
pure log-normal run of 4000 iterations: 0.23 RMS per pixel from the exact conditional
denoiser at σ = 80, where it returns the class mean; 0.076 with the tail). Adam at
``lr_t = lr · min(1, t/warmup) / √max(t / lr_ref_iter, 1)``. The model that is evaluated and
shipped is the power-function EMA of the weights (EDM2, Karras et al. 2024;
:func:`stiffkit.diffusion.training.ema_exponent`), relative width ``ema_std``.

The autoguidance guide (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version
of Itself") is the same recipe, conditioning and seed with half the channels and 1/8 of the
iterations.

Determinism: one private ``torch.Generator`` seeded with ``config.seed`` draws the initial
weights and then, per iteration, the image indices, the dropout mask, σ and the noise; the
global RNG is never touched. Two runs of one config on the same torch build and thread
count give bitwise-equal weights; the command line pins one thread (float32 convolutions
may split their reductions differently with more).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import check_int, check_real
from stiffkit._utils import progress as progress_bar
from stiffkit.diffusion.images.denoiser import NULL_LABEL, DigitsDenoiser
from stiffkit.diffusion.images.pretrained import DIGITS_PRETRAINED, WEIGHTS_DIR, save_digits_model
from stiffkit.diffusion.mixtures.digits import digits_images
from stiffkit.diffusion.training import MAX_EMA_STD, ema_exponent, ema_update

__all__ = [
    "DIGITS_RUNS",
    "DigitsTrainConfig",
    "DigitsTrainResult",
    "edm_loss",
    "main",
    "measure_sigma_data",
    "train_digits",
    "train_digits_pretrained",
]

#: The sampling range (EDM's): ``p_wide`` of the training σ are log-uniform on it.
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
#: Torch threads of the command line (bitwise reproducibility; also the fastest on a busy
#: 2-core machine, see :data:`stiffkit.diffusion.training.DEFAULT_THREADS`).
DEFAULT_THREADS = 1


@dataclasses.dataclass(frozen=True)
class DigitsTrainConfig:
    """Everything that determines a digits training run (defaults: the main model).

    Attributes
    ----------
    channels, blocks, emb_dim : int
        Architecture of :class:`DigitsDenoiser`.
    iterations, batch_size : int
    lr : float
        Peak learning rate of Adam.
    warmup : int
        Iterations of the linear learning-rate ramp (0: none).
    lr_ref_iter : int
        Iteration where the inverse-square-root decay starts.
    betas : (float, float)
        Adam's ``(β₁, β₂)``.
    p_mean, p_std : float
        ``ln σ ~ N(p_mean, p_std²)`` (EDM: −1.2, 1.2) for a fraction ``1 − p_wide`` of samples.
    p_wide : float
        Fraction of samples, in ``[0, 1)``, with ``ln σ`` uniform on
        ``[ln SIGMA_MIN, ln SIGMA_MAX]`` instead (module docstring).
    p_uncond : float
        Probability of replacing a label by the null label, in ``[0, 1)``.
    ema_std : float
        Relative width of the power-function EMA, in ``(0, 1/√12)``.
    sigma_data : float, optional
        ``σ_d`` of the preconditioning; None (default) measures it (:func:`measure_sigma_data`).
    seed : int
    """

    channels: int = 32
    blocks: int = 4
    emb_dim: int = 64
    iterations: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200
    lr_ref_iter: int = 1000
    betas: tuple[float, float] = (0.9, 0.99)
    p_mean: float = -1.2
    p_std: float = 1.2
    p_wide: float = 0.1
    p_uncond: float = 0.1
    ema_std: float = 0.05
    sigma_data: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("channels", "blocks", "emb_dim", "iterations", "batch_size",
                     "lr_ref_iter"):
            check_int(getattr(self, name), name)
        check_int(self.warmup, "warmup", minimum=0)
        check_int(self.seed, "seed", minimum=0)
        for name in ("lr", "p_std"):
            check_real(getattr(self, name), name, lo=0, lo_open=True)
        check_real(self.p_mean, "p_mean")
        check_real(self.p_uncond, "p_uncond", lo=0, hi=1, hi_open=True)
        check_real(self.p_wide, "p_wide", lo=0, hi=1, hi_open=True)
        check_real(self.ema_std, "ema_std", lo=0, hi=MAX_EMA_STD, lo_open=True, hi_open=True)
        if self.sigma_data is not None:
            check_real(self.sigma_data, "sigma_data", lo=0, lo_open=True)
        if len(self.betas) != 2:
            raise ValueError(f"`betas` must be two numbers in [0, 1), got {self.betas}.")
        for beta in self.betas:
            check_real(beta, "betas", lo=0, hi=1, hi_open=True)

    def as_dict(self) -> dict:
        """Return the config as plain python values (stored in the weight files)."""
        return {**dataclasses.asdict(self), "betas": list(self.betas)}


class DigitsTrainResult(NamedTuple):
    """What :func:`train_digits` returns."""

    model: DigitsDenoiser  # EMA weights after the last iteration, eval mode, frozen
    snapshots: dict[int, DigitsDenoiser]  # iteration -> EMA model at that iteration
    losses: Tensor  # [iterations] float64: the loss of the raw (non-EMA) weights
    config: DigitsTrainConfig


#: The shipped models: ``name -> (config, iteration of the EMA snapshot that is shipped)``.
#: Same seed and recipe; the guide has half the channels and 1/8 of the training.
DIGITS_RUNS: dict[str, tuple[DigitsTrainConfig, int]] = {
    "digits": (DigitsTrainConfig(), 3000),
    "digits_ag_guide": (DigitsTrainConfig(channels=16, iterations=375), 375),
}


def measure_sigma_data() -> float:
    """Return the standard deviation of all pixels of the digits in ``[−1, 1]`` (0.7521)."""
    images, _ = digits_images(8)
    return float(images.std(unbiased=False))


def learning_rate(config: DigitsTrainConfig, t: int) -> float:
    """Return the learning rate of iteration ``t`` (0-based)."""
    ramp = min(1.0, (t + 1) / config.warmup) if config.warmup else 1.0
    return config.lr * ramp / math.sqrt(max(t / config.lr_ref_iter, 1.0))


def edm_loss(
    model: DigitsDenoiser, y: Tensor, sigma: Tensor, noise: Tensor, labels: Tensor | None
) -> Tensor:
    """Return EDM's loss ``mean_batch λ(σ) mean_pixels (D(y + σ noise; σ) − y)²`` (scalar).

    Parameters
    ----------
    y : Tensor, shape [batch, 1, 8, 8]
        Clean images.
    sigma : Tensor, shape [batch]
    noise : Tensor, shape [batch, 1, 8, 8]
        Standard normal.
    labels : Tensor of shape [batch], or None
        Digits, ``-1`` for unconditional samples.
    """
    sd2 = model.sigma_data**2
    weight = (sigma.square() + sd2) / (sigma.square() * sd2)  # λ(σ) = (σ² + σ_d²)/(σ σ_d)²
    denoised = model(y + sigma.view(-1, 1, 1, 1) * noise, sigma, labels)
    return (weight * (denoised - y).square().mean(dim=(1, 2, 3))).mean()


def _draw_sigma(config: DigitsTrainConfig, batch: int, gen: torch.Generator) -> Tensor:
    """Return ``[batch]`` noise levels: EDM's log-normal, a fraction ``p_wide`` log-uniform."""
    log_normal = config.p_mean + config.p_std * torch.randn(batch, generator=gen)
    wide = torch.rand(batch, generator=gen) < config.p_wide
    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    log_uniform = lo + (hi - lo) * torch.rand(batch, generator=gen)
    return torch.where(wide, log_uniform, log_normal).exp()


def _snapshot(ema: DigitsDenoiser) -> DigitsDenoiser:
    snap = DigitsDenoiser(**ema.architecture)
    snap.load_state_dict(ema.state_dict())
    return snap.eval().requires_grad_(False)


def train_digits(
    config: DigitsTrainConfig = DigitsTrainConfig(),
    *,
    snapshots: Iterable[int] = (),
    progress: bool = True,
) -> DigitsTrainResult:
    """Train a :class:`DigitsDenoiser` on the 1797 digits (module docstring).

    Parameters
    ----------
    config : DigitsTrainConfig
    snapshots : iterable of int
        Iterations (1-based, ``≤ config.iterations``) at which to keep a copy of the EMA model.
    progress : bool
        Show a progress bar with the running loss.

    Returns
    -------
    DigitsTrainResult
    """
    if not isinstance(config, DigitsTrainConfig):
        raise TypeError(f"`config` must be a DigitsTrainConfig, got {type(config).__name__}.")
    snapshots = sorted({check_int(s, "snapshots") for s in snapshots})
    if snapshots and snapshots[-1] > config.iterations:
        raise ValueError(f"`snapshots` must be iterations in [1, {config.iterations}], "
                         f"got {snapshots}.")
    images, labels = digits_images(8)
    images = images.float()
    sigma_data = measure_sigma_data() if config.sigma_data is None else config.sigma_data
    gen = torch.Generator().manual_seed(config.seed)
    net = DigitsDenoiser(config.channels, config.blocks, config.emb_dim, sigma_data,
                         generator=gen).train()
    ema = _snapshot(net)
    gamma = ema_exponent(config.ema_std)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas)
    losses = torch.empty(config.iterations, dtype=torch.float64)
    kept: dict[int, DigitsDenoiser] = {}
    b = config.batch_size
    bar = progress_bar(range(config.iterations), enabled=progress,
                       desc=f"train digits c{config.channels}")
    for t in bar:
        idx = torch.randint(images.shape[0], (b,), generator=gen)
        drop = torch.rand(b, generator=gen) < config.p_uncond
        lab = torch.where(drop, NULL_LABEL, labels[idx])
        sigma = _draw_sigma(config, b, gen)
        noise = torch.randn(b, 1, 8, 8, generator=gen)
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, t)
        opt.zero_grad(set_to_none=True)
        loss = edm_loss(net, images[idx], sigma, noise, lab)
        loss.backward()
        opt.step()
        losses[t] = loss.item()
        ema_update(ema, net, t, gamma)
        if t + 1 in snapshots:
            kept[t + 1] = _snapshot(ema)
        if progress and (t % 16 == 0 or t + 1 == config.iterations):
            bar.set_postfix(loss=f"{losses[max(0, t - 63) : t + 1].mean():.4f}")
    if progress:
        bar.close()
    return DigitsTrainResult(ema, kept, losses, config)


def train_digits_pretrained(
    names: Sequence[str] | None = None,
    *,
    out_dir: str | Path = WEIGHTS_DIR,
    progress: bool = True,
) -> dict[str, Path]:
    """Train the shipped digits models (:data:`DIGITS_RUNS`) and write ``{out_dir}/{name}.pt``.

    Each file records the architecture (with the measured ``σ_d``), the config, seed, shipped
    iteration, mean loss of the last 64 iterations, wall and CPU time, the 1-minute load
    average at the end, thread count and torch version.
    """
    names = list(DIGITS_RUNS) if names is None else list(names)
    for name in names:
        if name not in DIGITS_RUNS:
            raise ValueError(f"`names` must be drawn from {tuple(DIGITS_RUNS)}, got {name!r}.")
    paths = {}
    for name in names:
        config, iteration = DIGITS_RUNS[name]
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train_digits(config, snapshots=(iteration,), progress=progress)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        tail = result.losses[max(0, iteration - 64) : iteration]
        metadata = {"name": name, "train_config": config.as_dict(), "seed": config.seed,
                    "iteration": iteration, "final_loss": float(tail.mean()),
                    "train_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                    "load_average": round(os.getloadavg()[0], 2),
                    "threads": torch.get_num_threads()}
        paths[name] = save_digits_model(result.snapshots[iteration],
                                        Path(out_dir) / DIGITS_PRETRAINED[name],
                                        metadata=metadata)
        print(f"{name}: {paths[name]}  loss {metadata['final_loss']:.4f}  {wall:.0f} s wall, "
              f"{cpu:.0f} s CPU, load {metadata['load_average']}")
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: retrain the shipped digits models and overwrite their weight files."""
    parser = argparse.ArgumentParser(prog="python -m stiffkit.diffusion.images.training",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", choices=list(DIGITS_RUNS),
                        help="models to retrain (default: all)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR,
                        help=f"output folder (default: {WEIGHTS_DIR})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch CPU threads (default {DEFAULT_THREADS})")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be a positive integer")
    torch.set_num_threads(args.threads)
    train_digits_pretrained(args.names, out_dir=args.out, progress=not args.no_progress)


if __name__ == "__main__":
    main()
