"""Analytic cases shared by the sampler, ERK-Guid, guidance and noise tests.

Truth: an independent plain EDM Heun loop (bitwise), the exact flow of a single Gaussian
(``x(σ) = μ + (x₀ − μ)·√((s² + σ²)/(s² + σ₀²))`` per eigendirection), and constant linear
drifts ``f = Jx`` from the denoiser ``D(x; σ) = x − σJx``.
"""

import math

import torch

from stiffkit.diffusion.mixtures import GaussianMixture, random_gmm

F64 = torch.float64


class Counting:
    """A denoiser wrapper that counts its calls (the samplers' NFE)."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.denoiser(x, sigma)


def linear_denoiser(J: torch.Tensor):
    """``D(x; σ) = x − σ J x``, so the probability-flow drift is exactly ``f = J x``."""

    def denoiser(x, sigma):
        return x - sigma * (x @ J.T)

    return denoiser


def single_gaussian(mean=(0.3, -0.2), stds=(0.5, 0.05), angle=0.4) -> GaussianMixture:
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                       dtype=F64)
    cov = rot @ torch.diag(torch.tensor(stds, dtype=F64) ** 2) @ rot.T
    return GaussianMixture(torch.ones(1), torch.tensor([mean], dtype=F64), cov[None])


def exact_single_gaussian_flow(gmm: GaussianMixture, x0, sigma0, sigma1):
    """The exact probability-flow map of one Gaussian from σ₀ to σ₁."""
    e, U = torch.linalg.eigh(gmm.covs[0])
    scale = torch.sqrt((e + sigma1**2) / (e + sigma0**2))  # per eigendirection
    mu = gmm.means[0]
    return mu + ((x0 - mu) @ U * scale) @ U.T


def plain_heun(denoiser, x, sigmas):
    """EDM's Heun sampler written out independently (EDM2 `edm_sampler`, no churn)."""
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        d_cur = (x - denoiser(x, t_cur)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if t_next > 0:
            d_prime = (x_next - denoiser(x_next, t_next)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


def small_tree_like(seed: int) -> GaussianMixture:
    """A cheap multimodal, anisotropic 2-D mixture (the 1016-component mix is ~30× slower)."""
    return random_gmm(2, 32, seed=seed, min_std=0.02, condition=25.0, mean_std=0.5)
