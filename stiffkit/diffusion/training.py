"""Train the toy energy denoisers on the tree's exact score (docs/theory/toy_world.md#training).

``python -m stiffkit.diffusion.training`` retrains every shipped model
(:data:`PRETRAINED_RUNS`) and atomically rewrites ``stiffkit/diffusion/weights/*.pt``.

The recipe is the autoguidance toy's (Karras et al., NeurIPS 2024): per iteration draw
``ln σ ~ N(P_mean, P_std²)`` per sample, ``x ~ p_σ`` exactly from the mixture, and minimise
``mean_batch σ² ‖s_θ(x; σ) − s*(x; σ)‖²`` against the exact score ``s*`` with Adam
``(β₁, β₂) = (0.9, 0.99)`` at ``lr_t = lr / √max(t / lr_ref_iter, 1)``. Weights are
projected back to fixed row norms after every step (forced weight normalisation, see
:meth:`EnergyDenoiser.project_weights`), and the model we evaluate and ship is a
**power-function EMA** of the weights (EDM2, Karras et al., CVPR 2024, §3.1):
``θ̄_t = β_t θ̄_{t−1} + (1 − β_t) θ_t`` with ``β_t = (1 − 1/t)^{γ+1}``, which averages the
whole run with weights ``∝ τ^γ`` — a profile whose width relative to the run length is
``ema_std`` (0.010 → γ ≈ 97), independent of the total length. So the EMA at iteration 512
of any run is the same model, whatever the run's length.

Determinism: one private ``torch.Generator`` seeded with ``config.seed`` draws the initial
weights, then per iteration σ and the exact samples; the global RNG is never touched. Two
runs with the same config, torch build and thread count give bitwise-equal weights.
CPU float32 matmul/reduction results can change with the number of threads or the torch
build, so bitwise equality across machines is not promised; the command line pins one
thread (:data:`DEFAULT_THREADS`) to remove the thread count from that list.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from stiffkit._utils import check_int, check_real
from stiffkit._utils import progress as progress_bar
from stiffkit.diffusion.mixtures import GaussianMixture, tree_gmm
from stiffkit.diffusion.models import (
    PRETRAINED_NAMES,
    SIGMA_DATA,
    WEIGHTS_DIR,
    EnergyDenoiser,
    save_model,
)

__all__ = [
    "PRETRAINED_RUNS",
    "TrainConfig",
    "TrainResult",
    "denoiser_loss",
    "ema_exponent",
    "learning_rate",
    "main",
    "train",
    "train_pretrained",
]

#: Points per chunk of the exact score: a ``[chunk, K]`` float64 slab (1 MB at K = 1016)
#: stays in cache through the ~10 elementwise passes (measured 3-4x faster than one
#: 4096-point slab).
SCORE_CHUNK = 128
#: CPU threads of the command-line run. One thread makes the shipped weights bitwise
#: reproducible wherever the torch build is the same (float32 reductions can split
#: differently with more threads), and on a 2-core machine that is busy with other work it
#: is also the fastest: torch's 2-thread parallel regions stall when a core is taken away
#: (measured: 10 s instead of 0.2 s for one exact score under load).
DEFAULT_THREADS = 1
#: An EMA profile needs γ > 0, i.e. ``ema_std < 1/√12``.
MAX_EMA_STD = 1 / math.sqrt(12)


def _check_ema_std(std: float, name: str) -> None:
    """Raise unless `std` is a relative EMA std in ``(0, MAX_EMA_STD)``."""
    check_real(std, name, lo=0, hi=MAX_EMA_STD, lo_open=True, hi_open=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (all defaults = the main model).

    Attributes
    ----------
    classes : {"A", "B", "AB"}
        Classes of :func:`tree_gmm` to learn.
    width, depth : int
        Hidden width and number of hidden blocks of :class:`EnergyDenoiser`.
    iterations, batch_size : int
    lr : float
        Reference learning rate; ``lr_t = lr / √max(t / lr_ref_iter, 1)``.
    lr_ref_iter : int
        Iteration where the inverse-square-root decay starts.
    betas : (float, float)
        Adam's ``(β₁, β₂)``.
    p_mean, p_std : float
        ``ln σ ~ N(p_mean, p_std²)``.
    ema_std : float
        Relative width of the power-function EMA profile (:func:`ema_exponent`).
    sigma_data : float
    seed : int
        Seed of the private generator (initial weights, σ, samples).
    """

    classes: str = "A"
    width: int = 64
    depth: int = 4
    iterations: int = 4096
    batch_size: int = 4096
    lr: float = 1e-2
    lr_ref_iter: int = 512
    betas: tuple[float, float] = (0.9, 0.99)
    p_mean: float = -2.3
    p_std: float = 1.5
    ema_std: float = 0.010
    sigma_data: float = SIGMA_DATA
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classes not in ("A", "B", "AB"):
            raise ValueError(f'`classes` must be "A", "B" or "AB", got {self.classes!r}.')
        for name in ("width", "depth", "iterations", "batch_size", "lr_ref_iter"):
            check_int(getattr(self, name), name)
        check_int(self.seed, "seed", minimum=0)
        for name in ("lr", "p_std", "sigma_data"):
            check_real(getattr(self, name), name, lo=0, lo_open=True)
        check_real(self.p_mean, "p_mean")
        if len(self.betas) != 2:
            raise ValueError(f"`betas` must be two numbers in [0, 1), got {self.betas}.")
        for beta in self.betas:
            check_real(beta, "betas", lo=0, hi=1, hi_open=True)
        _check_ema_std(self.ema_std, "ema_std")

    def as_dict(self) -> dict:
        """Return the config as plain python values (stored in the weight files)."""
        return {**dataclasses.asdict(self), "betas": list(self.betas)}


class TrainResult(NamedTuple):
    """What :func:`train` returns."""

    model: EnergyDenoiser  # EMA weights after the last iteration, eval mode, frozen
    snapshots: dict[int, EnergyDenoiser]  # iteration -> EMA model at that iteration
    losses: Tensor  # [iterations] float64: the training loss of the raw (non-EMA) weights
    config: TrainConfig


#: The shipped models: ``name -> (config, iteration of the EMA snapshot that is shipped)``.
#: One seed for all three, so the guides see the same first 512 batches of σ as the main
#: model (the AG guide is then literally an early, smaller version of the same run).
PRETRAINED_RUNS: dict[str, tuple[TrainConfig, int]] = {
    "main": (TrainConfig(), 4096),
    "ag_guide": (TrainConfig(width=32, iterations=512), 512),
    "cfg_guide": (TrainConfig(classes="AB", width=32, iterations=512), 512),
}


def learning_rate(config: TrainConfig, t: int) -> float:
    """Return the learning rate of iteration ``t`` (0-based): ``lr / √max(t / ref, 1)``."""
    return config.lr / math.sqrt(max(t / config.lr_ref_iter, 1.0))


def ema_exponent(std: float) -> float:
    """Return γ of the power-function EMA whose profile has relative std `std`.

    The profile ``∝ τ^γ`` on ``[0, t]`` has relative variance
    ``(γ + 1) / ((γ + 2)² (γ + 3))``, decreasing in γ ≥ 0; solved by bisection.
    """
    _check_ema_std(std, "std")

    def rel_var(g: float) -> float:
        return (g + 1) / ((g + 2) ** 2 * (g + 3))

    lo, hi = 0.0, 1.0
    while rel_var(hi) > std**2:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rel_var(mid) > std**2 else (lo, mid)
    return 0.5 * (lo + hi)


def denoiser_loss(model: EnergyDenoiser, x: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """Return ``mean_batch σ² ‖model.score(x, σ) − target‖²`` (scalar).

    Parameters
    ----------
    x : Tensor [batch, dim]
    sigma : Tensor [batch]
    target : Tensor [batch, dim]
        The exact score ``s*(x; σ)``.
    """
    err = model.score(x, sigma) - target
    return (sigma**2 * err.square().sum(dim=1)).mean()


class _ExactScore:
    """Exact score of a full-covariance :class:`GaussianMixture`, one σ per point.

    The same float64 closed form as ``GaussianMixture.score`` (agreement to ~1e-13 is
    tested), organised for speed: the eigen-coordinates ``U_kᵀ(x − μ_k)`` of all components
    come from one GEMM on ``[x, 1]``, the softmax normaliser is applied after the final
    GEMM, and points go through in cache-sized chunks. Measured on this project's 2-core
    CPU, 4096 points × 1016 components: 35-80 ms against 200-600 ms for
    ``GaussianMixture.score`` (3-6x, depending on the load).
    """

    def __init__(self, gmm: GaussianMixture) -> None:
        eigvals, eigvecs = torch.linalg.eigh(gmm.covs)  # e: [K, d], U: [K, d, d]
        k, d = eigvals.shape
        self.dim, self.num_components = d, k
        self.eigvals = eigvals.T.contiguous()  # [d, K]
        self.basis = eigvecs.permute(1, 2, 0).reshape(d, d * k)  # [d, d*K], K fastest
        mean_coef = torch.einsum("kdr,kd->rk", eigvecs, gmm.means).reshape(1, d * k)
        self.basis_aug = torch.cat([self.basis, -mean_coef])  # [d + 1, d*K]
        self.log_weights = gmm.weights.log()  # [K]

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Return the score at float64 ``x: [batch, d]``, ``sigma: [batch]``."""
        d, k = self.dim, self.num_components
        out = torch.empty_like(x)
        for start in range(0, x.shape[0], SCORE_CHUNK):
            xc, sc = x[start : start + SCORE_CHUNK], sigma[start : start + SCORE_CHUNK]
            b = xc.shape[0]
            ones = torch.ones(b, 1, dtype=x.dtype)
            coef = (torch.cat([xc, ones], 1) @ self.basis_aug).view(b, d, k)  # [b, d, K]
            var = self.eigvals + sc.square()[:, None, None]  # e + σ²: [b, d, K]
            y = coef / var  # C_k⁻¹(x − μ_k) in eigen-coordinates: [b, d, K]
            logit = torch.log(var.prod(1))  # log det C_k: [b, K]
            logit.add_((y * coef).sum(1)).mul_(-0.5).add_(self.log_weights)
            p = logit.sub_(logit.amax(1, keepdim=True)).exp_()  # unnormalised r_k: [b, K]
            y.mul_(p[:, None, :])
            out[start : start + b] = -(y.view(b, d * k) @ self.basis.T) / p.sum(1, keepdim=True)
        return out


def ema_update(ema: torch.nn.Module, net: torch.nn.Module, t: int, gamma: float) -> None:
    """Fold `net` into the power-function EMA `ema` after iteration `t` (0-based), in place.

    ``β_t = (1 − 1/(t + 1))^(γ+1)`` (so ``β`` of the first iteration is 0: the EMA starts at
    the network); ``ema ← β·ema + (1 − β)·net``. Shared by every trainer in the package.
    """
    beta = (1 - 1 / (t + 1)) ** (gamma + 1)
    with torch.no_grad():
        for p_ema, p_net in zip(ema.parameters(), net.parameters()):
            p_ema.lerp_(p_net.detach(), 1 - beta)


def _ema_snapshot(ema: EnergyDenoiser) -> EnergyDenoiser:
    snap = EnergyDenoiser(ema.dim, ema.width, ema.depth, ema.sigma_data)
    snap.load_state_dict(ema.state_dict())
    return snap.eval().requires_grad_(False)


def train(
    config: TrainConfig = TrainConfig(),
    *,
    snapshots: Iterable[int] = (),
    progress: bool = True,
    gmm: GaussianMixture | None = None,
) -> TrainResult:
    """Train an :class:`EnergyDenoiser` on the exact score of the tree mixture.

    Parameters
    ----------
    config : TrainConfig
    snapshots : iterable of int
        Iterations (1-based, ``≤ config.iterations``) at which to keep a copy of the EMA
        model; the final EMA model is always returned as ``result.model``.
    progress : bool
        Show a tqdm progress bar with the running loss.
    gmm : GaussianMixture, optional
        Target distribution; default ``tree_gmm(config.classes)`` (then ``config.classes``
        only names it). Any dimension works — the model is built to match — but the exact
        score forms every ``Σ_k``, so keep ``K · d²`` small.

    Returns
    -------
    TrainResult
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}.")
    snapshots = sorted({check_int(s, "snapshots") for s in snapshots})
    if snapshots and snapshots[-1] > config.iterations:
        raise ValueError(f"`snapshots` must be iterations in [1, {config.iterations}], "
                         f"got {snapshots}.")
    gmm = tree_gmm(config.classes) if gmm is None else gmm
    exact_score = _ExactScore(gmm)
    gen = torch.Generator().manual_seed(config.seed)
    net = EnergyDenoiser(gmm.dim, config.width, config.depth, config.sigma_data, generator=gen)
    net.train()
    ema = _ema_snapshot(net)
    gamma = ema_exponent(config.ema_std)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas)
    losses = torch.empty(config.iterations, dtype=torch.float64)
    kept: dict[int, EnergyDenoiser] = {}
    bar = progress_bar(range(config.iterations), enabled=progress,
                       desc=f"train {config.classes} w{config.width}")
    for t in bar:
        sigma = torch.exp(config.p_mean + config.p_std *
                          torch.randn(config.batch_size, dtype=torch.float64, generator=gen))
        x = gmm.sample(config.batch_size, sigma, generator=gen)  # exact draws of p_σ
        target = exact_score(x, sigma)  # float64, then the net's float32 below
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, t)
        opt.zero_grad(set_to_none=True)
        loss = denoiser_loss(net, x.float(), sigma.float(), target.float())
        loss.backward()
        opt.step()
        net.project_weights()
        losses[t] = loss.item()
        ema_update(ema, net, t, gamma)
        if t + 1 in snapshots:
            kept[t + 1] = _ema_snapshot(ema)
        if progress and (t % 16 == 0 or t + 1 == config.iterations):
            bar.set_postfix(loss=f"{losses[max(0, t - 15) : t + 1].mean():.4f}")
    if progress:
        bar.close()
    return TrainResult(ema, kept, losses, config)


def train_pretrained(
    names: Sequence[str] | None = None,
    *,
    out_dir: str | Path = WEIGHTS_DIR,
    progress: bool = True,
) -> dict[str, Path]:
    """Train the shipped models (:data:`PRETRAINED_RUNS`) and write ``{out_dir}/{name}.pt``.

    Each file records the architecture, the training config, seed, shipped iteration,
    final mean loss (last 64 iterations), wall time and torch version.
    """
    names = list(PRETRAINED_RUNS) if names is None else list(names)
    for name in names:
        if name not in PRETRAINED_RUNS:
            raise ValueError(f"`names` must be drawn from {tuple(PRETRAINED_RUNS)}, got {name!r}.")
    paths = {}
    for name in names:
        config, iteration = PRETRAINED_RUNS[name]
        start = time.perf_counter()
        result = train(config, snapshots=(iteration,), progress=progress)
        wall = time.perf_counter() - start
        tail = result.losses[max(0, iteration - 64) : iteration]
        metadata = {"name": name, "train_config": config.as_dict(), "seed": config.seed,
                    "iteration": iteration, "final_loss": float(tail.mean()),
                    "train_seconds": round(wall, 1), "threads": torch.get_num_threads()}
        paths[name] = save_model(result.snapshots[iteration],
                                 Path(out_dir) / PRETRAINED_NAMES[name], metadata=metadata)
        print(f"{name}: {paths[name]}  loss {metadata['final_loss']:.4f}  {wall:.0f} s")
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: retrain every shipped model and overwrite its weight file."""
    parser = argparse.ArgumentParser(prog="python -m stiffkit.diffusion.training",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", choices=list(PRETRAINED_RUNS),
                        help="models to retrain (default: all)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR,
                        help=f"output folder (default: {WEIGHTS_DIR})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch CPU threads (default {DEFAULT_THREADS}: see the module "
                             "docstring)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be a positive integer")
    torch.set_num_threads(args.threads)
    train_pretrained(args.names, out_dir=args.out, progress=not args.no_progress)


if __name__ == "__main__":
    main()
