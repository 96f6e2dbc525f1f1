"""Properties of exact Gaussian mixtures that hold for every mixture, σ and point.

Truth comes from identities the module does not use: noising adds ``σ²I`` to every
covariance (and composes), the law of total covariance for ``∂D/∂x = Cov[x₀ | x]/σ²``
(per-component algebra in numpy), the linear flow of a single Gaussian, and sample moments
against the exact ones.
"""

import math

import numpy as np
import torch
from _mixture_data import F64, _gen, _moments
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from stiffkit.diffusion.mixtures import GaussianMixture, random_gmm

mixtures = st.builds(
    lambda dim, k, seed, low_rank: random_gmm(
        dim + 2 if low_rank else dim, k, seed=seed, rank=1 if low_rank else None, min_std=0.1,
        condition=30.0),
    dim=st.integers(1, 3), k=st.integers(1, 4), seed=st.integers(0, 2**16),
    low_rank=st.booleans(),
)


def _points(gmm, sigma, seed, n=4):
    """Samples of p_σ, the last one moved off the data."""
    x = gmm.sample(n, sigma, _gen(seed))
    x[-1] += 2.0 * torch.randn(gmm.dim, dtype=F64, generator=_gen(seed + 1))
    return x


def _noised(gmm, sigma):
    """The same mixture with σ²I added to every covariance, as a full-rank mixture."""
    eye = torch.eye(gmm.dim, dtype=F64)
    return GaussianMixture(gmm.weights, gmm.means, gmm.covs + sigma**2 * eye)


@given(mixtures, st.floats(0.0, 3.0), st.floats(0.0, 3.0), st.integers(0, 2**16))
def test_noising_adds_sigma_squared_to_the_covariances_and_composes(gmm, s1, s2, seed):
    """p_σ = p_0 ∗ N(0, σ²I), and N(0, s₁²) ∗ N(0, s₂²) = N(0, s₁² + s₂²)."""
    total = math.hypot(s1, s2)
    x = _points(gmm, total, seed)
    direct, composed = gmm, _noised(gmm, s1)
    torch.testing.assert_close(composed.log_prob(x, s2), direct.log_prob(x, total),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(_noised(gmm, total).log_prob(x, 0.0), direct.log_prob(x, total),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(composed.score(x, s2), direct.score(x, total), rtol=1e-8,
                               atol=1e-10)


def _posterior_moments(gmm, x, sigma):
    """E[x₀ | x] and Cov[x₀ | x] per point, by per-component Gaussian conditioning."""
    w, mu, cov = (t.numpy() for t in (gmm.weights, gmm.means, gmm.covs))
    eye = np.eye(gmm.dim)
    means, covs = [], []
    for xi in x.numpy():
        c = cov + sigma**2 * eye
        logs = np.array([np.log(w[k]) + multivariate_normal(mu[k], c[k]).logpdf(xi)
                         for k in range(len(w))])
        r = np.exp(logs - logsumexp(logs))
        # Component k: x₀ | x ~ N(μ_k + Σ_k C_k⁻¹(x − μ_k), Σ_k − Σ_k C_k⁻¹Σ_k); the covariance
        # is written σ² Σ_k C_k⁻¹ (= Σ_k C_k⁻¹(C_k − Σ_k)) to avoid its cancellation at small σ.
        gain = np.array([np.linalg.solve(c[k], cov[k]).T for k in range(len(w))])  # Σ_k C_k⁻¹
        m_k = mu + np.einsum("kij,kj->ki", gain, xi - mu)
        m = r @ m_k
        spread = m_k - m  # law of total covariance, in its centred form
        outer = spread[:, :, None] * spread[:, None, :]
        covs.append(np.einsum("k,kij->ij", r, sigma**2 * gain + outer))
        means.append(m)
    return np.array(means), np.array(covs)


@given(mixtures, st.floats(0.02, 3.0), st.integers(0, 2**16))
def test_drift_jacobian_is_the_posterior_covariance_form(gmm, sigma, seed):
    """J_f = (I − Cov[x₀ | x]/σ²)/σ (Tweedie's second moment), hence λ(J_f) ≤ 1/σ."""
    x = _points(gmm, sigma, seed)
    mean, cov = _posterior_moments(gmm, x, sigma)
    np.testing.assert_allclose(gmm.denoise(x, sigma).numpy(), mean, rtol=1e-9, atol=1e-10)
    want = (np.eye(gmm.dim) - cov / sigma**2) / sigma
    jac = gmm.drift_jacobian(x, sigma).numpy()
    np.testing.assert_allclose(jac, want, rtol=0, atol=1e-10 * np.abs(want).max())
    assert np.all(np.linalg.eigvalsh(jac) <= (1 + 1e-9) / sigma)


@given(
    stds=st.lists(st.floats(0.01, 3.0), min_size=1, max_size=4),
    angle_seed=st.integers(0, 2**16),
    sigma=st.floats(1e-3, 10.0),
    per_sample=st.booleans(),
)
def test_single_gaussian_drift_is_linear_with_the_closed_form_jacobian(
        stds, angle_seed, sigma, per_sample):
    """One Gaussian N(μ, S): D = μ + S(S + σ²I)⁻¹(x − μ), f = σ(S + σ²I)⁻¹(x − μ) and
    J_f = σ(S + σ²I)⁻¹ at every x."""
    d = len(stds)
    rng = np.random.default_rng(angle_seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    S = (q * np.square(stds)) @ q.T
    mu = rng.standard_normal(d)
    gmm = GaussianMixture(torch.ones(1), torch.tensor(mu)[None], torch.tensor(S)[None])
    x = rng.standard_normal((5, d)) * 3
    sig = sigma * rng.uniform(0.1, 1.0, 5) if per_sample else np.full(5, sigma)
    inv = np.linalg.inv(S[None] + sig[:, None, None] ** 2 * np.eye(d))  # [5, d, d]
    s_arg = torch.tensor(sig) if per_sample else sigma
    f = np.einsum("bij,bj->bi", inv, x - mu) * sig[:, None]
    xt = torch.tensor(x)
    np.testing.assert_allclose(gmm.drift(xt, s_arg).numpy(), f, rtol=1e-9, atol=1e-12)
    den = mu + np.einsum("ij,bjk,bk->bi", S, inv, x - mu)
    np.testing.assert_allclose(gmm.denoise(xt, s_arg).numpy(), den, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gmm.drift_jacobian(xt, s_arg).numpy(),
                               sig[:, None, None] * inv, rtol=1e-9, atol=1e-12)


@given(mixtures, st.floats(0.0, 2.0), st.integers(0, 2**16))
def test_exact_samples_have_the_mixtures_moments(gmm, sigma, seed):
    """Mean Σ w_k μ_k and covariance Σ w_k (S_k + μ_k μ_kᵀ) − m mᵀ + σ²I, within six
    standard errors (estimated from the samples: the mixture is not Gaussian)."""
    n = 5000
    samples = gmm.sample(n, sigma, _gen(seed))
    mean, cov = _moments(gmm, sigma)
    centred = samples - mean
    se_mean = centred.std(0) / math.sqrt(n)
    assert bool(((samples.mean(0) - mean).abs() <= 6 * se_mean).all())
    prods = centred[:, :, None] * centred[:, None, :]  # [n, d, d], about the exact mean
    se_cov = prods.std(0) / math.sqrt(n)
    assert bool(((prods.mean(0) - cov).abs() <= 6 * se_cov + 1e-12).all())
