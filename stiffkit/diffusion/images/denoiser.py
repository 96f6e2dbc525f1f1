"""Learned EDM denoisers of the 8×8 digits: a class-conditional residual conv net.

The denoiser is EDM's preconditioned network (Karras et al., "Elucidating the Design Space of
Diffusion-Based Generative Models", NeurIPS 2022, Table 1 and Appendix B.6):

``D(x; σ, y) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x; c_noise(σ), y)`` with
``c_skip = σ_d² / (σ² + σ_d²)``, ``c_out = σ σ_d / √(σ² + σ_d²)``, ``c_in = 1 / √(σ² + σ_d²)``
and ``c_noise = ¼ ln σ`` (:func:`edm_preconditioning`), where ``σ_d`` is the standard deviation
of the training pixels, measured from the data
(:func:`~stiffkit.diffusion.images.training.measure_sigma_data`: 0.752 for the digits in
``[−1, 1]``) and stored with the weights.

``F_θ`` is a small residual conv net that keeps the 8×8 resolution throughout (a 3×3 conv
to ``channels`` features, ``blocks`` residual blocks of two 3×3 convs each — receptive field
17 pixels, the whole image — and a 3×3 conv back to one channel). The noise level and the
class enter every block by FiLM (a per-channel scale and shift after the block's second
group norm) from one embedding ``e = SiLU(MLP(sinusoids(c_noise)) + E[y])``. The class table
``E`` has a row per digit plus a *null* row used for "no label": training replaces the label
by the null row with probability ``p_uncond`` (label dropout, Ho & Salimans 2022), so the
same network is the conditional ``D(x; σ, y)`` and the unconditional ``D(x; σ)`` — both sides
of classifier-free guidance. The output conv and each block's last conv start at zero, so an
untrained model is ``D = c_skip x``.

Labels: ``labels=None`` means unconditional for the whole batch; an int is one class for
every sample; a ``[batch]`` integer tensor gives one per sample, where ``-1``
(:data:`NULL_LABEL`) marks an unconditional sample. :meth:`DigitsDenoiser.conditioned`
binds labels into a ``D(x, sigma)`` callable for the samplers and
:class:`~stiffkit.diffusion.Guided` (CFG: ``Guided(m.conditioned(y), m.unconditional(), w)``;
autoguidance: ``Guided(m.conditioned(y), guide.conditioned(y), w)``, Karras et al. 2024).

Weight files and the shipped models: :mod:`stiffkit.diffusion.images.pretrained`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from stiffkit._utils import as_per_sample, check_finite, check_int, check_real, check_tensor

__all__ = [
    "NULL_LABEL",
    "ConditionedDenoiser",
    "DigitsDenoiser",
    "class_index",
    "edm_preconditioning",
]

#: A per-sample label meaning "unconditional" (the null class row).
NULL_LABEL = -1
#: Digits 0..9.
NUM_CLASSES = 10
#: Side of the images.
IMAGE_SIZE = 8
#: Groups of every group norm (``channels`` must be a multiple).
NORM_GROUPS = 8
#: Sinusoid frequencies (radians per unit of ``c_noise``) of the noise embedding:
#: ``π 2^k``, ``k = −2 … 5``; ``c_noise`` spans ``[−1.55, 1.10]`` over ``σ ∈ [0.002, 80]``.
NOISE_FREQS = tuple(math.pi * 2.0**k for k in range(-2, 6))

LabelsLike = int | Tensor | None


def edm_preconditioning(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return EDM's ``(c_skip, c_out, c_in, c_noise)`` at `sigma` (Karras et al. 2022, Table 1).

    Parameters
    ----------
    sigma : Tensor, any shape
        Positive noise levels.
    sigma_data : float
        Standard deviation ``σ_d > 0`` of the data.

    Returns
    -------
    c_skip, c_out, c_in, c_noise : Tensor, the shape of `sigma`
        ``σ_d²/(σ² + σ_d²)``, ``σ σ_d/√(σ² + σ_d²)``, ``1/√(σ² + σ_d²)``, ``ln(σ)/4``.
    """
    sigma_data = check_real(sigma_data, "sigma_data", lo=0, lo_open=True)
    var = sigma.square() + sigma_data**2
    return (sigma_data**2 / var, sigma * sigma_data * var.rsqrt(), var.rsqrt(),
            sigma.log() / 4)


class _Block(torch.nn.Module):
    """Residual block ``h + conv(SiLU(FiLM(GN(conv(SiLU(GN(h)))), e)))`` at 8×8."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(NORM_GROUPS, channels)
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = torch.nn.GroupNorm(NORM_GROUPS, channels)
        self.film = torch.nn.Linear(emb_dim, 2 * channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        y = self.conv1(torch.nn.functional.silu(self.norm1(h)))
        y = torch.nn.functional.silu(torch.addcmul(shift, self.norm2(y), scale + 1))
        return h + self.conv2(y)


class DigitsDenoiser(torch.nn.Module):
    """EDM-preconditioned class-conditional denoiser ``D(x, sigma, labels=None)`` of 8×8 digits.

    Parameters
    ----------
    channels : int
        Features of the conv trunk, a multiple of 8 (32 for ``"digits"``, 16 for the guide).
    blocks : int
        Residual blocks.
    emb_dim : int
        Width of the noise/class embedding.
    sigma_data : float
        Data standard deviation ``σ_d`` of the preconditioning (measured from the data).
    generator : torch.Generator, optional
        Draws the initial weights (default: seeded with 0); the global RNG is left as it was.
    dtype : torch.dtype
        Parameter dtype.

    Notes
    -----
    ``x`` is ``[batch, 1, 8, 8]`` in any floating dtype (computed in the parameters' dtype,
    returned in ``x``'s); ``sigma`` a python float, a 0-d or a ``[batch]`` tensor, finite and
    ``> 0``; ``labels`` as in the module docstring.
    """

    def __init__(
        self,
        channels: int = 32,
        blocks: int = 4,
        emb_dim: int = 64,
        sigma_data: float = 0.5,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("blocks", blocks), ("emb_dim", emb_dim)):
            check_int(value, name)
        if channels % NORM_GROUPS:
            raise ValueError(f"`channels` must be a multiple of {NORM_GROUPS}, got {channels}.")
        self.sigma_data = check_real(sigma_data, "sigma_data", lo=0, lo_open=True)
        self.channels, self.blocks, self.emb_dim = channels, blocks, emb_dim
        with torch.random.fork_rng(devices=[]):  # the layers' default init must not leak
            self.noise_mlp = torch.nn.Sequential(
                torch.nn.Linear(2 * len(NOISE_FREQS), emb_dim), torch.nn.SiLU(),
                torch.nn.Linear(emb_dim, emb_dim))
            self.class_emb = torch.nn.Embedding(NUM_CLASSES + 1, emb_dim)  # row 10: null
            self.conv_in = torch.nn.Conv2d(1, channels, 3, padding=1)
            self.trunk = torch.nn.ModuleList(_Block(channels, emb_dim) for _ in range(blocks))
            self.norm_out = torch.nn.GroupNorm(NORM_GROUPS, channels)
            self.conv_out = torch.nn.Conv2d(channels, 1, 3, padding=1)
        self._init_weights(torch.Generator().manual_seed(0) if generator is None else generator)
        self.register_buffer("freqs", torch.tensor(NOISE_FREQS), persistent=False)
        self.to(dtype)
        self.metadata: dict[str, Any] = {}

    @torch.no_grad()
    def _init_weights(self, gen: torch.Generator) -> None:
        """LeCun-normal weights, zero biases; the residual branches and the output start at 0."""
        zero = {id(self.conv_out.weight)} | {id(b.conv2.weight) for b in self.trunk}
        for module in self.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                w = module.weight
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(w[0].numel()))
                if id(w) in zero:
                    w.zero_()
                module.bias.zero_()
            elif isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, blocks={self.blocks}, emb_dim={self.emb_dim}, "
                f"sigma_data={self.sigma_data:.6g}")

    @property
    def architecture(self) -> dict[str, Any]:
        """The constructor arguments that fix the parameter shapes (stored in weight files)."""
        return {"channels": self.channels, "blocks": self.blocks, "emb_dim": self.emb_dim,
                "sigma_data": self.sigma_data}

    # ------------------------------------------------------------------ the network
    def raw(self, x_in: Tensor, c_noise: Tensor, class_index: Tensor) -> Tensor:
        """Return the raw network ``F_θ``, ``[batch, 1, 8, 8]``.

        Parameters
        ----------
        x_in : Tensor, shape [batch, 1, 8, 8]
            The scaled input ``c_in x``, in the parameters' dtype.
        c_noise : Tensor, shape [batch]
        class_index : Tensor, shape [batch], int64
            Rows of the class table: a digit 0..9, or 10 for the null label.
        """
        phase = c_noise[:, None] * self.freqs  # [batch, F]
        emb = self.noise_mlp(torch.cat([phase.cos(), phase.sin()], dim=1))
        emb = torch.nn.functional.silu(emb + self.class_emb(class_index))  # [batch, E]
        h = self.conv_in(x_in)
        for block in self.trunk:
            h = block(h, emb)
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))

    def forward(self, x: Tensor, sigma: float | Tensor, labels: LabelsLike = None) -> Tensor:
        """Return ``D(x; σ, y)``, ``[batch, 1, 8, 8]`` in ``x``'s dtype.

        Parameters
        ----------
        x : Tensor, shape [batch, 1, 8, 8]
        sigma : float or Tensor, shape [] or [batch]
        labels : None, int or Tensor of shape [batch]
            None: unconditional; a digit, or one per sample (``-1``: unconditional).
        """
        check_tensor(x, "x", min_ndim=4)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"`x` must have shape [batch, 1, {IMAGE_SIZE}, {IMAGE_SIZE}], "
                             f"got {tuple(x.shape)}.")
        check_finite(x, "x")
        batch, dtype = x.shape[0], self.conv_in.weight.dtype
        s = as_per_sample(sigma, "sigma", batch=batch, dtype=dtype, device=x.device,
                          bound="positive").expand(batch)
        index = class_index(labels, batch, device=x.device)
        c_skip, c_out, c_in, c_noise = edm_preconditioning(s, self.sigma_data)
        xc = x.to(dtype)
        f = self.raw(c_in.view(-1, 1, 1, 1) * xc, c_noise, index)
        out = c_skip.view(-1, 1, 1, 1) * xc + c_out.view(-1, 1, 1, 1) * f
        return out.to(x.dtype)

    def conditioned(self, labels: LabelsLike) -> ConditionedDenoiser:
        """Return ``D(x, sigma)`` with `labels` bound (None: unconditional), for the samplers."""
        class_index(labels, None)  # validate now, not at the first call
        return ConditionedDenoiser(self, labels)

    def unconditional(self) -> ConditionedDenoiser:
        """Return the unconditional denoiser ``D(x, sigma)`` (the null label)."""
        return ConditionedDenoiser(self, None)


def class_index(labels: LabelsLike, batch: int | None, *, device=None) -> Tensor:
    """Return the class-table rows ``[batch]`` (0..9, 10 = null) of `labels`.

    `batch` None only validates (a tensor's batch is then not checked).

    Raises
    ------
    ValueError
        If `labels` is not None, an int or an integer tensor ``[batch]`` of values in
        ``{-1, 0, …, 9}`` (``-1``: unconditional).
    """
    if labels is None or (isinstance(labels, int) and not isinstance(labels, bool)):
        if labels is not None and not NULL_LABEL <= labels < NUM_CLASSES:
            raise ValueError(f"`labels` must be a digit 0..9 or {NULL_LABEL} (unconditional), "
                             f"got {labels}.")
        value = NUM_CLASSES if labels in (None, NULL_LABEL) else int(labels)
        return torch.full((batch or 1,), value, dtype=torch.int64, device=device)
    if (not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype == torch.bool
            or labels.is_floating_point() or labels.is_complex()):
        raise ValueError("`labels` must be None, an int or a 1-D integer tensor [batch], got "
                         f"{labels!r}.")
    if batch is not None and labels.shape[0] != batch:
        raise ValueError(f"`labels` must have shape [batch] = [{batch}], "
                         f"got {tuple(labels.shape)}.")
    if not bool(((labels >= NULL_LABEL) & (labels < NUM_CLASSES)).all()):
        raise ValueError(f"`labels` must hold digits 0..9 or {NULL_LABEL} (unconditional).")
    labels = labels.to(device=device, dtype=torch.int64)
    return torch.where(labels == NULL_LABEL, NUM_CLASSES, labels)


class ConditionedDenoiser(torch.nn.Module):
    """``D(x, sigma) = model(x, sigma, labels)`` with the labels bound (see
    :meth:`DigitsDenoiser.conditioned`); a ``[batch]`` tensor must match ``x``'s batch."""

    def __init__(self, model: DigitsDenoiser, labels: LabelsLike) -> None:
        super().__init__()
        self.model = model
        self.labels = labels

    def extra_repr(self) -> str:
        what = self.labels if not isinstance(self.labels, Tensor) else "per-sample"
        return f"labels={what}"

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Return ``D(x; σ, labels)``, ``[batch, 1, 8, 8]``."""
        return self.model(x, sigma, self.labels)
