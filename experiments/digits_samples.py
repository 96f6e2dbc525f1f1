"""Sample grids on the 8 × 8 digits: the same noise and labels by Heun and by ERK-Guid.

The learned class-conditional model (``load_pretrained("digits")``) on EDM's grid (σ_max 80,
σ_min 0.002, ρ = 7) from the same noise ``80 · N(0, I)`` and the same labels (sample ``i``:
its per-sample seed ``seed · SEED_STRIDE + i``, label ``i mod 10``), at 8 and 16 steps,
without guidance and with classifier-free guidance (the null label is the unconditional
side; weight :data:`CFG_WEIGHT`), each by plain Heun and by ERK-Guid with the paper's
``(w_stiff, w_con)`` (:func:`stiffkit.paper.quality.paper_setting`; the paper has no guided
8-step setting, so CFG at 8 steps uses its unguided 8-step one).

The figure shows the first :data:`GRID_ROWS` × 10 images of every panel and their per-pixel
``|Δ|`` between the two samplers; the CSV has, per panel, class consistency (the shipped
digits classifier; 95 % bootstrap interval), FD-digits against the 1797 real digits, the
fraction of pixels that changed by more than half a grey level (``|Δ| > 1/16``; pixels are
``value / 8 − 1``) and the mean and max ``|Δ|`` between Heun's and ERK-Guid's images.
Run: ``python experiments/digits_samples.py`` (``--quick``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from _lib import run_experiment

from stiffkit.diffusion.noise import randn_per_sample, run_seeds
from stiffkit.diffusion.schedules import SIGMA_MAX, SIGMA_MIN, edm_sigmas
from stiffkit.generate import DIGITS_GUIDANCE_WEIGHT

#: CFG weight (EDM2 convention, w = 1 is no guidance): the digits models' default of
#: ``stiffkit.generate`` (2.0), where the class-consistency sweep of
#: ``python -m stiffkit.diffusion.images.report`` saturates.
CFG_WEIGHT = DIGITS_GUIDANCE_WEIGHT
#: A pixel "changed" when |Δ| exceeds half a grey level (one level is 1/8 in [−1, 1]).
CHANGED_ABOVE = 1 / 16
#: Rows of 10 images (one per digit) drawn per panel.
GRID_ROWS = 4
#: Images per network call (8 × 8 convolutions are fastest per image in blocks this size).
CHUNK = 256
GUIDANCE = ("none", "cfg")

FULL = dict(num_samples=1000, num_steps=[8, 16], guidance=["none", "cfg"], num_bootstrap=1000)
QUICK = dict(num_samples=60, num_steps=[8, 16], guidance=["none", "cfg"], num_bootstrap=100)


def erk_setting(num_steps: int, guided: bool) -> tuple[float, float]:
    """The paper's ``(w_stiff, w_con)``; guided at a step count it lacks: the unguided one."""
    from stiffkit.paper.quality import PAPER_SETTINGS, paper_setting

    guided = guided and (True, num_steps) in PAPER_SETTINGS
    return paper_setting(num_steps, guided)


def _sample(model, x: torch.Tensor, labels: torch.Tensor, num_steps: int, guidance: str,
            w_stiff: float, w_con: float) -> tuple[torch.Tensor, int]:
    """Sample ``x`` ``[n, 1, 8, 8]`` in chunks; return the images and the NFE per sample."""
    from stiffkit.diffusion.guidance import Guided
    from stiffkit.diffusion.samplers import sample_final

    sigmas = edm_sigmas(num_steps, SIGMA_MIN, SIGMA_MAX)
    out, nfe = [], 0
    for lo in range(0, x.shape[0], CHUNK):
        cond = model.conditioned(labels[lo:lo + CHUNK])
        den = cond if guidance == "none" else Guided(cond, model.unconditional(), CFG_WEIGHT)
        with torch.no_grad():
            xs, nfe = sample_final(den, x[lo:lo + CHUNK], sigmas, solver="heun", w_stiff=w_stiff,
                                   w_con=w_con)
        out.append(xs)
    return torch.cat(out), nfe


def compute(config: dict) -> pd.DataFrame:
    """Return one row per (steps, guidance, sampler): the metrics and the images themselves.

    The images travel in ``df.attrs["images"]`` (``{(steps, guidance, method): [n, 8, 8]}``
    float32 arrays) for the figure; the CSV holds the numbers.
    """
    from stiffkit.diffusion.metrics import class_consistency, fd_digits
    from stiffkit.diffusion.mixtures.digits import digits_images
    from stiffkit.diffusion.models import load_pretrained

    bad = [g for g in config["guidance"] if g not in GUIDANCE]
    if bad or not config["guidance"]:
        raise ValueError(f"`guidance` must be drawn from {GUIDANCE}, got {config['guidance']!r}.")
    n = config["num_samples"]
    if n < 10:
        raise ValueError(f"`num_samples` must be at least 10 (one image per digit), got {n}.")
    model = load_pretrained("digits")
    seeds = run_seeds(config["seed"], n)
    x_init = SIGMA_MAX * randn_per_sample(seeds, (1, 8, 8))
    labels = torch.arange(n) % 10
    real = digits_images(8)[0]
    rows, images = [], {}
    for steps in config["num_steps"]:
        for guidance in config["guidance"]:
            w_stiff, w_con = erk_setting(steps, guidance != "none")
            runs = {}
            for method, ws, wc in (("Heun", 0.0, 0.0), ("ERK-Guid", w_stiff, w_con)):
                x, nfe = _sample(model, x_init, labels, steps, guidance, ws, wc)
                runs[method] = x
                cc = class_consistency(x, labels, num_bootstrap=config["num_bootstrap"],
                                       seed=config["seed"])
                fd = fd_digits(x, real, num_bootstrap=config["num_bootstrap"],
                               seed=config["seed"])
                rows.append(dict(num_steps=steps, guidance=guidance, method=method,
                                 w_stiff=ws, w_con=wc, w_cfg=CFG_WEIGHT if guidance == "cfg"
                                 else 1.0, nfe=nfe, num_samples=n,
                                 class_consistency=cc.value, cc_lo=cc.lo, cc_hi=cc.hi,
                                 fd_digits=fd.value, fd_lo=fd.lo, fd_hi=fd.hi))
                images[(steps, guidance, method)] = x[:, 0].numpy()
            diff = (runs["ERK-Guid"] - runs["Heun"]).abs()
            for row in rows[-2:]:
                row.update(frac_changed=float((diff > CHANGED_ABOVE).double().mean()),
                           mean_abs_diff=float(diff.double().mean()),
                           max_abs_diff=float(diff.max()),
                           label_flips=float((_predict(runs["ERK-Guid"])
                                              != _predict(runs["Heun"])).mean()))
    df = pd.DataFrame(rows)
    df.attrs["images"] = images
    return df


def _predict(x: torch.Tensor) -> np.ndarray:
    from stiffkit.diffusion.metrics.images import predict_digits

    return predict_digits(x)


def _tile(images: np.ndarray) -> np.ndarray:
    """``[n, 8, 8]`` -> one ``[rows·9 − 1, 10·9 − 1]`` mosaic (label i mod 10 per column)."""
    rows = min(GRID_ROWS, images.shape[0] // 10)
    canvas = np.full((rows * 9 - 1, 10 * 9 - 1), np.nan)
    for k in range(rows * 10):
        r, c = divmod(k, 10)
        canvas[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = images[k]
    return canvas


def plot(df: pd.DataFrame, config: dict):
    """Draw a row per guidance: Heun, ERK-Guid and |Δ| at each step count."""
    import matplotlib.pyplot as plt

    images = df.attrs.get("images")
    if not images:
        raise ValueError("`df` carries no images (df.attrs['images']): run compute().")
    steps, guidance = list(config["num_steps"]), list(config["guidance"])
    fig, axes = plt.subplots(len(guidance), 3 * len(steps),
                             figsize=(2.7 * len(steps) * 3, 1.9 * len(guidance) + 0.5),
                             squeeze=False, constrained_layout=True)
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("white")
    hot = plt.get_cmap("magma").copy()
    hot.set_bad("white")
    for gi, g in enumerate(guidance):
        for si, n in enumerate(steps):
            panel = df[(df["num_steps"] == n) & (df["guidance"] == g)].set_index("method")
            heun, erk = images[(n, g, "Heun")], images[(n, g, "ERK-Guid")]
            what = "no guidance" if g == "none" else f"CFG w = {CFG_WEIGHT:g}"
            for k, (method, img) in enumerate((("Heun", heun), ("ERK-Guid", erk))):
                ax = axes[gi, 3 * si + k]
                ax.imshow(_tile(img), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
                r = panel.loc[method]
                setting = "" if method == "Heun" else (
                    f" ({r['w_stiff']:g}, {r['w_con']:g})")
                ax.set_title(f"{method}{setting}, N = {n}, {what}\nclass cons. "
                             f"{r['class_consistency']:.3f}, FD {r['fd_digits']:.2f}",
                             fontsize=7.5)
            ax = axes[gi, 3 * si + 2]
            im = ax.imshow(_tile(np.abs(erk - heun)), cmap=hot, vmin=0, vmax=0.5,
                           interpolation="nearest")
            r = panel.iloc[0]
            ax.set_title(f"|ERK-Guid − Heun|, N = {n}\n{100 * r['frac_changed']:.1f} % px "
                         f"> 1/16, mean {r['mean_abs_diff']:.3f}", fontsize=7.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, -1], shrink=0.7, label="|Δ| (pixels in [−1, 1]; clipped at 0.5)")
    fig.suptitle(f"Learned digits model, same noise and labels (column = digit), EDM grid "
                 f"σ_max 80; ERK-Guid (w_stiff, w_con) from the paper; seed {config['seed']}, "
                 f"metrics over {config['num_samples']} samples", fontsize=9)
    return fig


def summarize(df: pd.DataFrame, config: dict) -> str:
    """One line per panel."""
    lines = ["digits_samples: Heun vs ERK-Guid on the same noise"]
    for _, r in df.iterrows():
        lines.append(f"  N={r['num_steps']:2d} {r['guidance']:4s} {r['method']:8s} "
                     f"(w_stiff {r['w_stiff']:g}, w_con {r['w_con']:g}): class consistency "
                     f"{r['class_consistency']:.3f} [{r['cc_lo']:.3f}, {r['cc_hi']:.3f}], "
                     f"FD-digits {r['fd_digits']:.2f} [{r['fd_lo']:.2f}, {r['fd_hi']:.2f}]; "
                     f"vs other sampler: {100 * r['frac_changed']:.1f} % px changed, mean |Δ| "
                     f"{r['mean_abs_diff']:.4f}, classifier label flips "
                     f"{100 * r['label_flips']:.1f} %")
    return "\n".join(lines)


def main(argv=None):
    """Run the figure from the command line (see ``--help``)."""
    return run_experiment("digits_samples", compute=compute, plot=plot, full=FULL, quick=QUICK,
                          summarize=summarize, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
