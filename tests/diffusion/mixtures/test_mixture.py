"""Tests for ``stiffkit.diffusion.mixtures.mixture``: exact densities, scores and Jacobians.

Truth comes from places the module does not use: autograd of ``log_prob``, ``jacrev`` of the
drift, dense per-component linear algebra in numpy/scipy, grid quadrature of the posterior
and the analytic spectrum of a single Gaussian.
"""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _mixture_data import (
    EXACT_RTOL,
    F64,
    SIGMAS,
    _autograd_jacobian,
    _autograd_score,
    _gen,
    _moments,
    _per_sample_sigma,
    _rel_err,
    _test_points,
)
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from stiffkit.diffusion.mixtures import (
    GaussianMixture,
    random_gmm,
    ring_gmm,
    tree_gmm,
)
from stiffkit.diffusion.mixtures._terms import SMALL_DIM


@pytest.mark.parametrize("sigma", SIGMAS + ["per-sample"])
def test_tree_score_matches_autograd(tree, sigma):
    sigma = _per_sample_sigma(52) if sigma == "per-sample" else sigma
    x = _test_points(tree, sigma)
    assert _rel_err(tree.score(x, sigma), _autograd_score(tree, x, sigma)) < EXACT_RTOL


@pytest.mark.parametrize("sigma", SIGMAS + ["per-sample"])
def test_tree_denoise_is_tweedie(tree, sigma):
    sigma = _per_sample_sigma(52) if sigma == "per-sample" else sigma
    x = _test_points(tree, sigma)
    s = sigma if isinstance(sigma, float) else sigma[:, None]
    assert _rel_err(tree.denoise(x, sigma), x + s**2 * tree.score(x, sigma)) < EXACT_RTOL
    assert torch.equal(tree(x, sigma), tree.denoise(x, sigma))


@pytest.mark.parametrize("sigma", [0.005, 0.05, 1.0, "per-sample"])
def test_tree_drift_and_jacobian_match_autograd(tree, sigma):
    sigma = _per_sample_sigma(52) if sigma == "per-sample" else sigma
    x = _test_points(tree, sigma)
    s = sigma if isinstance(sigma, float) else sigma[:, None]
    assert _rel_err(tree.drift(x, sigma), (x - tree.denoise(x, sigma)) / s) < EXACT_RTOL
    jac = tree.drift_jacobian(x, sigma)
    assert torch.equal(jac, jac.mT)
    assert _rel_err(jac, _autograd_jacobian(tree, x, sigma)) < EXACT_RTOL


def _dense_truth(gmm, x, sigma):
    """log p, responsibilities and posterior mean by per-component numpy/scipy algebra."""
    w, mu, cov = (t.numpy() for t in (gmm.weights, gmm.means, gmm.covs))
    x, d = x.numpy(), gmm.dim
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (x.shape[0],))
    logp, resp, post = [], [], []
    for xi, si in zip(x, sig):
        c = cov + si**2 * np.eye(d)
        logs = np.array(
            [np.log(w[k]) + multivariate_normal(mu[k], c[k]).logpdf(xi) for k in range(len(w))]
        )
        r = np.exp(logs - logsumexp(logs))
        means_k = [mu[k] + cov[k] @ np.linalg.solve(c[k], xi - mu[k]) for k in range(len(w))]
        logp.append(logsumexp(logs))
        resp.append(r)
        post.append(r @ np.array(means_k))
    return (torch.tensor(np.array(a)) for a in (logp, resp, post))


@given(
    seed=st.integers(0, 2**16),
    sigma=st.floats(0.0, 3.0),
    per_sample=st.booleans(),
    low_rank=st.booleans(),
    large=st.booleans(),
)
def test_random_mixture_matches_dense_algebra(seed, sigma, per_sample, low_rank, large):
    """``large``: above SMALL_DIM the Jacobian takes batched products instead of the
    elementwise passes and the outer-product table."""
    dim = (5 if low_rank else 3) + (SMALL_DIM if large else 0)
    gmm = random_gmm(dim, 4, seed=seed, rank=2 if low_rank else None, min_std=0.1, condition=30)
    x = (gmm.sample(6, sigma, _gen(seed))
         + 0.3 * torch.randn(6, dim, generator=_gen(seed), dtype=F64))
    if per_sample:
        sigma = sigma * torch.rand(6, dtype=F64, generator=_gen(seed + 1))
    logp, resp, post = _dense_truth(gmm, x, sigma)
    torch.testing.assert_close(gmm.log_prob(x, sigma), logp, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gmm.responsibilities(x, sigma), resp, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(gmm.denoise(x, sigma), post, rtol=1e-9, atol=1e-10)
    assert _rel_err(gmm.score(x, sigma), _autograd_score(gmm, x, sigma)) < EXACT_RTOL
    if bool((torch.as_tensor(sigma) > 0.01).all()):
        jac = gmm.drift_jacobian(x, sigma)
        assert torch.equal(jac, jac.mT)
        assert _rel_err(jac, _autograd_jacobian(gmm, x, sigma)) < EXACT_RTOL


def test_denoise_equals_posterior_mean_by_quadrature():
    # E[x0 | x] = ∫ x0 p0(x0) N(x; x0, σ²I) dx0 / ∫ p0 N, on a fine grid (trapezoid on smooth,
    # rapidly decaying integrands is exact to far below the tolerance).
    gmm = GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-1.0, 0.0], [0.5, 0.8], [0.7, -0.6]],
        [[[0.09, 0.03], [0.03, 0.05]], [[0.04, 0.0], [0.0, 0.16]], [[0.06, -0.02], [-0.02, 0.04]]],
    )
    sigma = 0.5
    ticks = torch.linspace(-4.0, 4.0, 801, dtype=F64)
    grid = torch.cartesian_prod(ticks, ticks)  # [M, 2]
    p0 = sum(
        float(w) * torch.tensor(multivariate_normal(m.numpy(), c.numpy()).pdf(grid.numpy()))
        for w, m, c in zip(gmm.weights, gmm.means, gmm.covs)
    )
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5], [0.3, -1.5]], dtype=F64)
    lik = torch.exp(-((x[:, None, :] - grid) ** 2).sum(-1) / (2 * sigma**2))  # [4, M]
    post = (lik * p0) @ grid / (lik * p0).sum(-1, keepdim=True)
    torch.testing.assert_close(gmm.denoise(x, sigma), post, rtol=1e-8, atol=1e-9)


@given(
    widths=st.lists(st.floats(0.01, 3.0), min_size=1, max_size=4),
    sigma=st.floats(1e-3, 10.0),
    seed=st.integers(0, 1000),
)
def test_single_gaussian_jacobian_spectrum(widths, sigma, seed):
    s = torch.tensor(widths, dtype=F64)
    d = len(widths)
    gmm = GaussianMixture([1.0], torch.zeros(1, d), torch.diag(s**2)[None])
    x = gmm.sample(5, sigma, _gen(seed))
    eig = torch.linalg.eigvalsh(gmm.drift_jacobian(x, sigma))  # [5, d]
    expected = torch.sort(sigma / (s**2 + sigma**2)).values
    torch.testing.assert_close(eig, expected.expand(5, d), rtol=1e-10, atol=0.0)


def test_single_gaussian_stiffness_peaks_at_its_width():
    s = 0.02
    gmm = GaussianMixture([1.0], torch.zeros(1, 2), s**2 * torch.eye(2)[None])
    sigmas = torch.logspace(-4, 0, 401, dtype=F64)
    x = torch.zeros(401, 2, dtype=F64)
    top = torch.linalg.eigvalsh(gmm.drift_jacobian(x, sigmas))[:, -1]  # [401]
    assert abs(float(sigmas[top.argmax()]) - s) / s < 0.03
    assert abs(float(top.max()) - 1 / (2 * s)) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_far_from_data_stays_finite_and_right(tree, dtype, sigma):
    angle = torch.linspace(0, 2 * math.pi, 9, dtype=F64)[:-1]
    x64 = 100.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    x = x64.to(dtype)
    logp = tree.log_prob(x, sigma)
    assert logp.dtype == dtype and bool(torch.isfinite(logp).all())
    for name in ("score", "denoise", "responsibilities"):
        assert bool(torch.isfinite(getattr(tree, name)(x, sigma)).all())
    # log-sum-exp lies between the best single term and that plus log K.
    c = tree.covs + sigma**2 * torch.eye(2, dtype=F64)
    best = torch.stack(
        [
            (
                tree.weights.log()
                + torch.distributions.MultivariateNormal(tree.means, c).log_prob(xi)
            ).max()
            for xi in x.to(F64)
        ]
    )
    lp = logp.to(F64)
    assert bool((lp >= best * (1 + 1e-6)).all()) and bool((lp <= best + math.log(2032)).all())


def _check_moments(samples, mean, cov, n_se=5.0):
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    se_mean = (cov.diagonal() / n).sqrt()
    assert bool(((samples.mean(0) - mean).abs() <= n_se * se_mean).all())
    prods = centred[:, :, None] * centred[:, None, :]  # [n, d, d]
    se_cov = prods.std(0) / math.sqrt(n)
    assert bool(((prods.mean(0) - cov).abs() <= n_se * se_cov).all())


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_tree_samples_have_mixture_moments(tree, sigma):
    mean, cov = _moments(tree, sigma)
    _check_moments(tree.sample(100_000, sigma, _gen(3)), mean, cov)


def test_low_rank_samples_have_mixture_moments():
    gmm = random_gmm(6, 3, seed=4, rank=2, min_std=0.2, condition=25)
    mean, cov = _moments(gmm, 0.3)
    _check_moments(gmm.sample(100_000, 0.3, _gen(5)), mean, cov)


def test_sample_is_reproducible_and_accepts_per_sample_sigma(tree):
    a = tree.sample(1000, 0.2, _gen(7))
    assert torch.equal(a, tree.sample(1000, 0.2, _gen(7)))
    assert torch.equal(a, tree.sample(1000, torch.full((1000,), 0.2, dtype=F64), _gen(7)))
    assert tree.sample(10, dtype=torch.float32, generator=_gen(0)).dtype == torch.float32


def test_chunking_does_not_change_results(tree):
    small = tree_gmm("AB", chunk_size=7)
    x = tree.sample(100, 0.05, _gen(8))
    for sigma in (0.05, _per_sample_sigma(100)):
        for name in ("log_prob", "responsibilities", "score", "denoise", "drift", "drift_jacobian"):
            a, b = getattr(tree, name)(x, sigma), getattr(small, name)(x, sigma)
            # Only BLAS's blocking (summation order) may differ between chunk sizes.
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * float(a.abs().max()))


def test_large_batch_runs_in_bounded_memory():
    # 1e5 points × 2032 components: one unchunked [batch, 2, K] float64 tensor is 3.3 GB.
    script = textwrap.dedent(
        """
        import torch
        from stiffkit.diffusion.mixtures import tree_gmm
        def peak():
            return next(int(l.split()[1]) for l in open("/proc/self/status")
                        if l.startswith("VmHWM"))
        gmm = tree_gmm("AB")
        x = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(0))
        before = peak()
        score = gmm.score(x, 0.05)
        assert bool(torch.isfinite(score).all())
        print(peak() - before)
        """
    )
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/status")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) < 1024 * 1024  # KiB: well under 1 GiB of growth


def test_low_rank_agrees_with_its_dense_twin():
    low = random_gmm(10, 4, seed=2, rank=3)
    dense = GaussianMixture(low.weights, low.means, low.covs)
    x = low.sample(20, 0.1, _gen(9))
    for name in ("log_prob", "responsibilities", "score", "denoise", "drift", "drift_jacobian"):
        a, b = getattr(low, name)(x, 0.1), getattr(dense, name)(x, 0.1)
        assert _rel_err(a, b) < 1e-11, name


def _spd(k=2, d=2):
    return torch.eye(d, dtype=F64).expand(k, d, d).clone()


@pytest.mark.parametrize(
    "build",
    [
        lambda: GaussianMixture([1.0, -0.5], torch.zeros(2, 2), _spd()),
        lambda: GaussianMixture([1.0, 0.0], torch.zeros(2, 2), _spd()),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 2),
                                torch.tensor([[[1.0, 1.0], [1.0, 1.0]]] * 2)),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 2),
                                torch.tensor([[[1.0, 0.0], [0.0, -1.0]]] * 2)),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 2),
                                torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2)),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 3), _spd()),
        lambda: GaussianMixture([1.0, 1.0], torch.full((2, 2), math.nan), _spd()),
        lambda: tree_gmm("C"),
        lambda: random_gmm(4, 2, rank=5),
    ],
)
def test_bad_construction_raises(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    ("method", "x", "sigma"),
    [
        ("score", torch.zeros(3, 2), -0.1),
        ("score", torch.zeros(3, 2), math.nan),
        ("log_prob", torch.zeros(3, 2), math.inf),
        ("denoise", torch.zeros(3, 2), torch.tensor([0.1, -0.1, 0.1])),
        ("denoise", torch.zeros(3, 2), torch.tensor([0.1, 0.1])),
        ("score", torch.zeros(3, 3), 0.1),
        ("score", torch.zeros(2), 0.1),
        ("log_prob", torch.tensor([[0.0, math.nan]]), 0.1),
        ("drift", torch.zeros(3, 2), 0.0),
        ("drift_jacobian", torch.zeros(3, 2), 0.0),
    ],
)
def test_bad_call_raises(method, x, sigma):
    gmm = ring_gmm()
    with pytest.raises(ValueError, match="`(x|sigma)`"):
        getattr(gmm, method)(x, sigma)


def test_sigma_zero_is_allowed_where_defined():
    gmm = ring_gmm()
    x = gmm.sample(5, 0.0, _gen(11))
    torch.testing.assert_close(gmm.denoise(x, 0.0), x)
    assert bool(torch.isfinite(gmm.score(x, 0.0)).all())


def test_dtype_and_empty_batch():
    gmm = ring_gmm()
    x = torch.zeros(0, 2, dtype=torch.float32)
    assert gmm.score(x, 0.1).shape == (0, 2) and gmm.score(x, 0.1).dtype == torch.float32
    assert gmm.drift_jacobian(torch.ones(3, 2, dtype=torch.float32), 0.1).dtype == torch.float32


def test_counts_are_checked_integers():
    gmm = ring_gmm()
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="`chunk_size`"):
            GaussianMixture(gmm.weights, gmm.means, gmm.covs, chunk_size=bad)
    for bad in (-1, 3.0):
        with pytest.raises(ValueError, match="`n`"):
            gmm.sample(bad)
    assert gmm.sample(np.int64(3), generator=_gen(12)).shape == (3, 2)
    assert GaussianMixture(gmm.weights, gmm.means, gmm.covs, chunk_size=np.int64(2)).chunk_size == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (([1.0], [[0.0, 0.0]], "ab"), "`covs` must be an array of real numbers"),
        (([1.0], [[0.0, 0.0]], None), "`covs` must be an array of real numbers"),
        (([1.0], "ab", [np.eye(2)]), "`means` must be an array of real numbers"),
        (([1.0], [[0.0, 0.0]], [np.eye(2) * (1 + 1j)]), "`covs` must be real"),
        (([1.0], [[0.0, 1j]], [np.eye(2)]), "`means` must be real"),
        (([], np.zeros((0, 2)), np.zeros((0, 2, 2))), "at least one component"),
    ],
)
def test_construction_names_non_real_and_empty_inputs(args, message):
    """Issue 12: complex covariances were cast to real with a warning, no component gave an
    empty mixture, strings and None were torch errors."""
    with pytest.raises(ValueError, match=message):
        GaussianMixture(*args)


def test_sample_checks_generator_and_dtype():
    mix = ring_gmm(4)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        mix.sample(3, generator=3)
    with pytest.raises(TypeError, match="`dtype` must be a floating torch.dtype"):
        mix.sample(3, dtype=torch.int64)
