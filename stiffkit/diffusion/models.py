"""Learned toy denoisers: the energy MLP of the autoguidance 2-D toy (docs/theory/toy_world.md).

The network outputs one scalar per point, an unnormalised log-density ``E_θ(x; σ)`` of the
noisy marginal ``p_σ``; the score is its gradient, so the drift Jacobian ``J_f = −σ ∇²E_θ``
is symmetric like the exact one. The architecture follows the toy model of Karras et al.,
"Guiding a Diffusion Model with a Bad Version of Itself" (NeurIPS 2024; public code
NVlabs/edm2 ``toy_example.py``), written afresh here:

* features ``[x̃, log σ / 4, 1]`` with ``x̃ = x / √(σ_data² + σ²)`` (``dim + 2`` of them);
* one linear layer to ``width``, then ``depth`` blocks of (SiLU, linear ``width → width``);
  every linear layer uses a *weight-normalised* matrix (each row divided by its norm) and
  the SiLU is scaled by ``1/SILU_GAIN`` so unit-variance inputs keep unit variance — EDM2's
  magnitude-preserving layers, which is what makes Adam at ``lr = 1e−2`` stable;
* the scalar head is ``E = gain · mean(y²) / σ − ‖x̃‖² / 2`` over the last features
  ``y: [batch, width]``, with a learned scalar ``gain`` initialised to zero. The quadratic
  term is the exact log-density (up to a constant) of ``N(0, (σ_data² + σ²) I)``, so an
  untrained model is the exact denoiser of Gaussian data of std ``σ_data``, and the network
  learns only the correction. The ``1/σ`` keeps ``σ · score`` — the quantity the
  ``σ²``-weighted loss sees — of order one at every noise level.

Splitting the head this way also gives the denoiser without cancellation: with
``g = ∇_x[gain · mean(y²)/σ]`` (autograd), ``score = g − x / (σ_data² + σ²)`` and
``D = c_skip x + σ² g`` with ``c_skip = σ_data² / (σ_data² + σ²)`` — EDM's skip scaling —
instead of ``x + σ² score``, which cancels two large terms when ``σ ≫ σ_data``.

The gradient is taken with :func:`torch.func.grad`, which (unlike ``torch.autograd.grad``)
composes with ``torch.func.jvp``: ``stiffkit.jvp_operator(lambda s, y: model.drift(y, s),
sigma, x, method="forward")`` is forward-over-reverse and exact. ``func.grad`` also ignores
an outer ``torch.no_grad()``, so the denoiser works there; the output carries an autograd
graph only where the caller's ``x`` or the parameters require grad (pretrained models are
loaded frozen).

Pretrained weights (:func:`load_pretrained`) are regenerated, all of them, by
``python -m stiffkit.diffusion.training``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stiffkit._utils import as_per_sample, check_finite, check_int, check_real, check_tensor
from stiffkit.diffusion._weights import check_dtype, read_weights
from stiffkit.io import atomic_write

__all__ = [
    "EnergyDenoiser",
    "PRETRAINED_NAMES",
    "REGENERATE_COMMAND",
    "load_model",
    "load_pretrained",
    "pretrained_path",
    "save_model",
]

#: Standard deviation of the data assumed by the input scaling and the Gaussian prior term.
SIGMA_DATA = 0.5
#: ``E[silu(z)²]^{1/2}`` for ``z ~ N(0, 1)``: dividing by it keeps activations at unit scale.
SILU_GAIN = 0.596
#: Guards the row norm of a weight matrix that training drove to zero.
NORM_EPS = 1e-4
#: Folder of the shipped ``*.pt`` files.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The one command that retrains and rewrites every shipped weight file.
REGENERATE_COMMAND = "python -m stiffkit.diffusion.training"
#: Shipped models: ``name -> file name`` in :data:`WEIGHTS_DIR` (training configs live in
#: :data:`stiffkit.diffusion.training.PRETRAINED_RUNS`).
PRETRAINED_NAMES = {
    "main": "main.pt",  # class A, width 64, 4096 iterations
    "ag_guide": "ag_guide.pt",  # class A, width 32, 512 iterations: the autoguidance guide
    "cfg_guide": "cfg_guide.pt",  # classes A∪B, width 32, 512 iterations: the CFG guide
}
#: Version of the ``.pt`` layout written by :func:`save_model`.
FORMAT_VERSION = 1

SigmaLike = float | Tensor


class EnergyDenoiser(torch.nn.Module):
    """Energy MLP denoiser ``D(x; σ) = x + σ² ∇_x E_θ(x; σ)`` for ``x: [batch, dim]``.

    Calling the model, ``model(x, sigma)``, returns the denoiser, so it plugs into any
    sampler that takes ``denoiser(x, sigma)``; :meth:`score`, :meth:`log_prob` and
    :meth:`drift` give the other views. Every method accepts ``x`` in any floating dtype,
    computes in the parameters' dtype, and returns ``x``'s dtype.

    Parameters
    ----------
    dim : int
        Dimension of the data (2 for the tree toy).
    width : int
        Hidden features (64 for the main model, 32 for the guides).
    depth : int
        Hidden blocks (SiLU + linear) after the input layer.
    sigma_data : float
        Data standard deviation used by the input scaling and the prior term.
    generator : torch.Generator, optional
        Draws the initial weights (standard normal rows, projected to norm ``√fan_in``);
        default: a generator seeded with 0 — the global RNG is never used.
    dtype : torch.dtype
        Parameter dtype.

    Notes
    -----
    ``sigma`` is a python float, a 0-d tensor or a ``[batch]`` tensor, finite and ``> 0``.
    The drift is an autograd gradient, so its cheapest exact Jacobian–vector product is
    double backward (``jvp_hint = "vjp"``, :data:`stiffkit.estimators.jvp.JVP_HINT`).
    """

    #: Double backward is several times cheaper than forward-over-reverse on this model.
    jvp_hint = "vjp"

    def __init__(
        self,
        dim: int = 2,
        width: int = 64,
        depth: int = 4,
        sigma_data: float = SIGMA_DATA,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth)):
            check_int(value, name)
        check_real(sigma_data, "sigma_data", lo=0, lo_open=True)
        self.dim, self.width, self.depth, self.sigma_data = dim, width, depth, float(sigma_data)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        shapes = [(width, dim + 2)] + [(width, width)] * depth
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(shape, generator=generator).to(dtype))
            for shape in shapes
        )
        self.gain = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.project_weights()
        self.metadata: dict[str, Any] = {}

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, width={self.width}, depth={self.depth}, "
                f"sigma_data={self.sigma_data}")

    def project_weights(self) -> None:
        """Rescale every weight row to norm ``√fan_in`` in place (forced weight normalisation).

        The forward pass normalises rows anyway, so this changes no output; training calls
        it after each optimiser step so that Adam's step is a fixed fraction of the weight
        scale (EDM2's forced weight normalisation) instead of shrinking as weights grow.
        """
        for w in self.weights:
            w = w.detach()  # shares storage: an in-place update outside autograd
            w.mul_(math.sqrt(w.shape[1]) / (w.norm(dim=1, keepdim=True) + NORM_EPS))

    # ------------------------------------------------------------------ the network
    def _features(self, x: Tensor, s: Tensor) -> Tensor:
        """Return the last hidden features ``y: [batch, width]`` (``s: [batch|1, 1]``)."""
        x_in = x * torch.rsqrt(self.sigma_data**2 + s**2)
        h = torch.cat([x_in, (torch.log(s) / 4).expand(x.shape[0], 1),
                       torch.ones_like(x[:, :1])], dim=1)  # [batch, dim + 2]
        for i, w in enumerate(self.weights):
            if i > 0:
                h = torch.nn.functional.silu(h) / SILU_GAIN
            h = h @ (w / (w.norm(dim=1, keepdim=True) + NORM_EPS)).T  # unit-norm rows
        return h

    def _net_energy(self, x: Tensor, s: Tensor) -> Tensor:
        """Return the learned part ``gain · mean(y²) / σ`` of the energy, ``[batch]``."""
        return self.gain * self._features(x, s).square().mean(dim=1) / s[:, 0]

    def _net_grad(self, x: Tensor, s: Tensor) -> Tensor:
        """Return ``∇_x`` of the learned energy, ``[batch, dim]`` (points are independent,
        so the gradient of the batch sum is the per-point gradient)."""
        return torch.func.grad(lambda y: self._net_energy(y, s).sum())(x)

    # ------------------------------------------------------------------ public maps
    def log_prob(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the *unnormalised* log-density ``E_θ(x; σ)``, ``[batch, dim] -> [batch]``.

        The normalising constant (a function of σ) is unknown, so only differences in ``x``
        at one σ are meaningful.
        """
        xc, s = self._prepare(x, sigma)
        prior = 0.5 * xc.square().sum(dim=1) / (self.sigma_data**2 + s[:, 0] ** 2)
        return (self._net_energy(xc, s) - prior).to(x.dtype)

    def score(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return ``∇_x E_θ(x; σ)``, the learned score of ``p_σ``, ``[batch, dim]``."""
        xc, s = self._prepare(x, sigma)
        return (self._net_grad(xc, s) - xc / (self.sigma_data**2 + s**2)).to(x.dtype)

    def forward(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the denoiser ``D(x; σ) = x + σ² score``, ``[batch, dim]``.

        Computed as ``c_skip x + σ² g`` (module docstring), which equals ``x + σ² score``
        without cancelling ``x`` against ``σ² score`` at large σ.
        """
        xc, s = self._prepare(x, sigma)
        var = self.sigma_data**2 + s**2
        return (self.sigma_data**2 / var * xc + s**2 * self._net_grad(xc, s)).to(x.dtype)

    def drift(self, x: Tensor, sigma: SigmaLike) -> Tensor:
        """Return the probability-flow drift ``f = (x − D)/σ = −σ score``, ``[batch, dim]``."""
        xc, s = self._prepare(x, sigma)
        var = self.sigma_data**2 + s**2
        return (s / var * xc - s * self._net_grad(xc, s)).to(x.dtype)

    def _prepare(self, x: Tensor, sigma: SigmaLike) -> tuple[Tensor, Tensor]:
        """Validate; return ``x`` in the parameter dtype and σ as ``[batch|1, 1]``."""
        check_tensor(x, "x", min_ndim=2)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"`x` must have shape [batch, {self.dim}], got {tuple(x.shape)}.")
        check_finite(x, "x")
        dtype = self.gain.dtype
        s = as_per_sample(sigma, "sigma", batch=x.shape[0], dtype=dtype, device=x.device,
                          bound="positive")
        return x.to(dtype), s.reshape(-1, 1)


# ---------------------------------------------------------------------- weight files
def save_model(
    model: EnergyDenoiser, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `model`'s weights and architecture, plus `metadata`, atomically to `path`.

    The file is a plain dict of tensors and python scalars/strings/lists/dicts, so
    :func:`load_model` can read it with ``torch.load(weights_only=True)``. The torch
    version and the layout version are always recorded.
    """
    if not isinstance(model, EnergyDenoiser):
        raise TypeError(f"`model` must be an EnergyDenoiser, got {type(model).__name__}.")
    payload = {
        "format_version": FORMAT_VERSION,
        "architecture": {"dim": model.dim, "width": model.width, "depth": model.depth,
                         "sigma_data": model.sigma_data},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
        "metadata": {**(metadata or {}), "torch_version": str(torch.__version__)},
    }

    def write(tmp: str) -> None:
        torch.save(payload, tmp)

    return atomic_write(path, write)


def load_model(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> EnergyDenoiser:
    """Load a model written by :func:`save_model`: eval mode, frozen, parameters in `dtype`.

    The file's metadata is attached as ``model.metadata``.

    Raises
    ------
    FileNotFoundError
        If there is no file at `path`.
    ValueError
        If the file is truncated or not a weight file of this format, lacks an entry, has
        weights that do not fit the architecture, or holds NaN / Inf weights; the message
        names the path (and, for the shipped weights, the command that regenerates them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no weight file at {path}.")
    check_dtype(dtype)
    hint = (f" Regenerate the shipped weights with `{REGENERATE_COMMAND}`."
            if path.resolve().parent == WEIGHTS_DIR.resolve() else "")
    payload = read_weights(path, what="EnergyDenoiser", format_version=FORMAT_VERSION,
                           required=("architecture", "state_dict", "metadata"), hint=hint)
    state = payload["state_dict"]
    try:
        model = EnergyDenoiser(**payload["architecture"], dtype=dtype)
        model.load_state_dict(state)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"`path`: {path} does not hold weights of an EnergyDenoiser "
                         f"({type(err).__name__}: {err}).{hint}") from None
    model.metadata = dict(payload["metadata"])
    return model.eval().requires_grad_(False)


def pretrained_path(name: str) -> Path:
    """Return the path of the shipped weight file `name` (see :data:`PRETRAINED_NAMES`; the
    digits models' names, :data:`stiffkit.diffusion.images.DIGITS_PRETRAINED`, too)."""
    from stiffkit.diffusion.images.pretrained import DIGITS_PRETRAINED  # lazy: no cycle

    if name in DIGITS_PRETRAINED:
        return WEIGHTS_DIR / DIGITS_PRETRAINED[name]
    if name not in PRETRAINED_NAMES:
        raise ValueError(f"`name` must be one of {tuple(PRETRAINED_NAMES)} or "
                         f"{tuple(DIGITS_PRETRAINED)}, got {name!r}.")
    return WEIGHTS_DIR / PRETRAINED_NAMES[name]


def load_pretrained(name: str = "main", *, dtype: torch.dtype = torch.float32) -> EnergyDenoiser:
    """Return a shipped toy denoiser, eval mode and frozen (``requires_grad=False``).

    Parameters
    ----------
    name : {"main", "ag_guide", "cfg_guide", "digits", "digits_ag_guide"}
        "main": class A of the tree, width 64, EMA weights after 4096 iterations.
        "ag_guide": class A, width 32, EMA at iteration 512 — the autoguidance guide.
        "cfg_guide": the unconditional A∪B model, width 32, iteration 512 — the CFG guide.
        "digits", "digits_ag_guide": the 8×8 digits' class-conditional EDM denoiser and its
        autoguidance guide, :class:`~stiffkit.diffusion.images.DigitsDenoiser`s
        (:func:`stiffkit.diffusion.images.load_digits_pretrained`).
    dtype : torch.dtype
        float32 (as trained) or float64 (same weights, for tight derivative checks).

    Returns
    -------
    EnergyDenoiser
        With the training configuration, seed, iteration and torch version in ``.metadata``
        (a ``DigitsDenoiser`` for the digits names).
    """
    from stiffkit.diffusion.images.pretrained import DIGITS_PRETRAINED, load_digits_pretrained

    if name in DIGITS_PRETRAINED:
        return load_digits_pretrained(name, dtype=dtype)
    path = pretrained_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"Pretrained weights {name!r} not found at {path}; "
                                f"regenerate them with `{REGENERATE_COMMAND}`.")
    return load_model(path, dtype=dtype)
