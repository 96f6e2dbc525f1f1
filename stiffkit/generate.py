"""Sample a shipped model to a ``.npz`` file, in one process or sharded with ``torchrun``.

::

    python -m stiffkit.generate --model toy --seeds 0-255 --batch 64 --steps 16 \\
        --w-stiff 0.5 --w-con 0.1 --out samples.npz
    torchrun --nproc_per_node 2 -m stiffkit.generate --model toy --seeds 0-255 --batch 64 \\
        --steps 16 --out samples.npz                       # the same file, bit for bit

The seeds are cut into fixed batches of ``--batch`` consecutive seeds; sample ``k`` starts
from noise drawn with its own seed (:mod:`stiffkit.diffusion.noise`), and every batch is
sampled with the same shapes whichever process takes it. Under ``torchrun`` (``WORLD_SIZE``
> 1) batch ``b`` goes to rank ``b mod K`` and rank 0 gathers the results
(``torch.distributed``: gloo on CPU, nccl when the samples live on GPUs), so the file is the
one a single process writes. ``--model digits`` samples the learned 8×8 digits model
(EDM grid σ 80 → 0.002, class ``seed mod 10`` unless ``--label`` is given; CFG guides with
its unconditional side, autoguidance with ``digits_ag_guide``). The file holds
``samples [n, *dims]`` (float32), ``seeds [n]`` and ``config`` (the command's settings, as
JSON); it is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from stiffkit._utils import progress

__all__ = ["GenerateConfig", "parse_seeds", "batches_of", "generate_batch", "main"]

#: Models the command can sample, and what sets each one up.
MODELS = ("toy", "digits")
GUIDANCE = ("none", "cfg", "ag")


@dataclass(frozen=True)
class GenerateConfig:
    """What one run samples (the command's options, checked)."""

    model: str
    seeds: tuple[int, ...]
    batch: int
    steps: int
    solver: str = "heun"
    w_stiff: float = 0.0
    w_con: float = 0.0
    guidance: str = "none"
    w: float | None = None
    label: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"`--model` must be one of {MODELS}, got {self.model!r}.")
        if self.guidance not in GUIDANCE:
            raise ValueError(f"`--guidance` must be one of {GUIDANCE}, got {self.guidance!r}.")
        for name in ("batch", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name}` must be a positive integer, got "
                                 f"{getattr(self, name)}.")
        if self.label is not None and self.model == "toy":
            raise ValueError("`--label` is for class-conditional models; the toy has one class.")
        if self.label is not None and not 0 <= self.label <= 9:
            raise ValueError(f"`--label` must be a digit 0 … 9, got {self.label}.")
        if len(self.seeds) % self.batch:
            raise ValueError(
                f"`--seeds` ({len(self.seeds)} seeds) does not split into batches of "
                f"`--batch` = {self.batch}: give a multiple of {self.batch} seeds (fixed "
                "batches keep every sample independent of the number of processes).")


def parse_seeds(text: str) -> tuple[int, ...]:
    """Return the seeds of ``"0-255"``, ``"3,5,7"`` or ``"0-63,128-191"`` (ranges inclusive).

    Raises
    ------
    ValueError
        Naming ``--seeds`` for an empty, malformed, descending, negative or repeated list.
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"`--seeds` must look like '0-255' or '1,2,5-9', got {text!r}.")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"`--seeds`: the range {part.strip()!r} runs backwards.")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"`--seeds` {text!r} repeats a seed.")
    return tuple(seeds)


def batches_of(config: GenerateConfig) -> list[tuple[int, ...]]:
    """Return the fixed batches of consecutive seeds, in order."""
    b = config.batch
    return [config.seeds[i:i + b] for i in range(0, len(config.seeds), b)]


#: Default guidance weight of the digits models (the class-consistency sweep of
#: ``python -m stiffkit.diffusion.images.report`` saturates there).
DIGITS_GUIDANCE_WEIGHT = 2.0
#: EDM's grid for the digits models.
DIGITS_SIGMA_MIN, DIGITS_SIGMA_MAX = 0.002, 80.0

Setup = tuple[Callable[[Sequence[int]], Callable], Callable[[Sequence[int]], Tensor], Tensor]


def _toy_setup(config: GenerateConfig) -> Setup:
    from stiffkit.paper.toy import toy_world

    world = toy_world()
    denoiser = world.denoiser(config.guidance, w=config.w)
    return (lambda seeds: denoiser), world.initial_state, world.sigmas(config.steps)


def digits_labels(config: GenerateConfig, seeds: Sequence[int]) -> Tensor:
    """The class of each digits sample: ``--label``, or ``seed mod 10`` when none is given."""
    if config.label is not None:
        return torch.full((len(seeds),), config.label, dtype=torch.long)
    return torch.as_tensor(list(seeds), dtype=torch.long) % 10


def _digits_setup(config: GenerateConfig) -> Setup:
    from stiffkit.diffusion.guidance import Guided
    from stiffkit.diffusion.models import load_pretrained
    from stiffkit.diffusion.noise import randn_per_sample
    from stiffkit.diffusion.schedules import edm_sigmas

    main = load_pretrained("digits")
    guide = load_pretrained("digits_ag_guide") if config.guidance == "ag" else None
    w = DIGITS_GUIDANCE_WEIGHT if config.w is None else config.w

    def make(seeds: Sequence[int]):
        labels = digits_labels(config, seeds)
        cond = main.conditioned(labels)
        if config.guidance == "none":
            return cond
        other = main.unconditional() if config.guidance == "cfg" else guide.conditioned(labels)
        return Guided(cond, other, w)

    def initial_state(seeds: Sequence[int]) -> Tensor:
        return DIGITS_SIGMA_MAX * randn_per_sample(list(seeds), (1, 8, 8))

    return make, initial_state, edm_sigmas(config.steps, DIGITS_SIGMA_MIN, DIGITS_SIGMA_MAX)


def generate_batch(config: GenerateConfig, seeds: Sequence[int], setup: Setup | None = None
                   ) -> Tensor:
    """Return the samples of one batch of seeds, ``[len(seeds), *dims]`` (float32, CPU)."""
    from stiffkit.diffusion.samplers import sample_final

    make, initial_state, sigmas = setup if setup is not None else _setup(config)
    x = initial_state(list(seeds))
    with torch.no_grad() if config.model == "digits" else _nullcontext():
        out, _ = sample_final(make(seeds), x, sigmas, solver=config.solver,
                              w_stiff=config.w_stiff, w_con=config.w_con)
    return out.detach().to("cpu", torch.float32)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def _setup(config: GenerateConfig) -> Setup:
    return (_toy_setup if config.model == "toy" else _digits_setup)(config)


def _parse(argv: Sequence[str] | None) -> tuple[GenerateConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m stiffkit.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="toy")
    p.add_argument("--seeds", required=True, help="e.g. 0-255 or 0-63,128-191 (inclusive)")
    p.add_argument("--batch", type=int, default=64, help="seeds per fixed batch")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--solver", default="heun", help="heun, dpm2, deis, euler")
    p.add_argument("--w-stiff", type=float, default=0.0)
    p.add_argument("--w-con", type=float, default=0.0)
    p.add_argument("--guidance", choices=GUIDANCE, default="none")
    p.add_argument("--w", type=float, default=None, help="guidance weight (model default)")
    p.add_argument("--label", type=int, default=None, help="class label (digits)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (the same in every run keeps files equal)")
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        config = GenerateConfig(args.model, seeds, args.batch, args.steps, args.solver,
                                args.w_stiff, args.w_con, args.guidance, args.w, args.label)
    except ValueError as err:
        p.error(str(err))
    if args.threads < 1:
        p.error(f"`--threads` must be a positive integer, got {args.threads}.")
    if not str(args.out).endswith(".npz"):
        p.error(f"`--out` must name a .npz file, got {args.out!r}.")
    return config, args


def _write(path: str, samples: np.ndarray, config: GenerateConfig) -> None:
    from stiffkit.io import atomic_write

    meta = json.dumps(asdict(config) | {"seeds": [config.seeds[0], config.seeds[-1],
                                                  len(config.seeds)]})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, samples=samples, seeds=np.asarray(config.seeds, dtype=np.int64),
                     config=np.asarray(meta))

    atomic_write(path, write)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command (see the module docstring); return the exit status."""
    config, args = _parse(argv)
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dist = None
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        batches = batches_of(config)
        mine = list(range(rank, len(batches), world))
        setup = _setup(config)
        done: dict[int, np.ndarray] = {}
        for b in progress(mine, enabled=rank == 0 and not args.no_progress,
                          desc="generate", unit="batch"):
            done[b] = generate_batch(config, batches[b], setup).numpy()
        if dist is not None:
            gathered: list | None = [None] * world if rank == 0 else None
            dist.gather_object(done, gathered, dst=0)
            if rank == 0:
                done = {b: s for part in gathered for b, s in part.items()}
        if rank == 0:
            samples = np.concatenate([done[b] for b in range(len(batches))])
            _write(args.out, samples, config)
            print(f"generate: {samples.shape[0]} samples of {config.model} "
                  f"({world} process{'es' if world > 1 else ''}) -> {args.out}")
    finally:
        if dist is not None:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
