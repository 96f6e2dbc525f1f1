"""Shared constants and helpers of the mixture tests (imported, never collected)."""

import torch
from torch.func import jacrev

from stiffkit.diffusion.mixtures import GaussianMixture

__all__ = [
    "EXACT_RTOL",
    "F64",
    "SIGMAS",
    "_autograd_jacobian",
    "_autograd_score",
    "_gen",
    "_moments",
    "_per_sample_sigma",
    "_rel_err",
    "_test_points",
]

F64 = torch.float64
#: float64 agreement between two exact formulas of the same quantity (relative, in norm).
EXACT_RTOL = 1e-10
SIGMAS = [0.0, 0.005, 0.1, 1.0]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _moments(gmm: GaussianMixture, sigma: float = 0.0):
    """Exact mean ``[d]`` and covariance ``[d, d]`` of ``p_σ``."""
    w, mu, cov = gmm.weights, gmm.means, gmm.covs
    mean = w @ mu
    second = torch.einsum("k,kij->ij", w, cov + mu[:, :, None] * mu[:, None, :])
    return mean, second - torch.outer(mean, mean) + sigma**2 * torch.eye(gmm.dim, dtype=F64)


def _autograd_score(gmm, x, sigma):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x, sigma).sum(), x)
    return grad


def _autograd_jacobian(gmm, x, sigma):
    # Samples are independent, so d(Σ_b f_b)/dx gives every per-sample Jacobian at once.
    jac = jacrev(lambda z: gmm.drift(z, sigma).sum(0))(x)  # [d_out, b, d_in]
    return jac.movedim(1, 0)


def _test_points(gmm, sigma, seed=0):
    """52 samples of ``p_σ``, the last four moved well off the data."""
    x = gmm.sample(52, sigma, _gen(seed))
    x[-4:] = 3.0 * torch.randn(4, gmm.dim, dtype=F64, generator=_gen(seed + 1))
    return x


def _per_sample_sigma(n, seed=0):
    return 10 ** (-2.5 + 2.5 * torch.rand(n, dtype=F64, generator=_gen(seed)))
