"""Tests for ``stiffkit.diffusion.mixtures``: exact mixture densities, scores and Jacobians.

Truth comes from places the module does not use: autograd of ``log_prob``, ``jacrev`` of the
drift, dense per-component linear algebra in numpy/scipy, grid quadrature of the posterior,
the analytic spectrum of a single Gaussian, and the tree recipe of DESIGN.md §5.
"""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch.func import jacrev

from stiffkit.diffusion.mixtures import (
    GaussianMixture,
    grid_gmm,
    random_gmm,
    ring_gmm,
    tree_gmm,
)

F64 = torch.float64
#: float64 agreement between two exact formulas of the same quantity (relative, in norm).
EXACT_RTOL = 1e-10
SIGMAS = [0.0, 0.005, 0.1, 1.0]


@pytest.fixture(scope="module")
def tree() -> GaussianMixture:
    return tree_gmm("AB")


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


# --------------------------------------------------------------------------- the tree


@pytest.mark.parametrize(("classes", "count"), [("A", 1016), ("B", 1016), ("AB", 2032)])
def test_tree_component_counts(classes, count):
    gmm = tree_gmm(classes)
    assert gmm.num_components == count and gmm.dim == 2
    assert gmm.means.shape == (count, 2) and gmm.covs.shape == (count, 2, 2)
    torch.testing.assert_close(gmm.weights.sum(), torch.tensor(1.0, dtype=F64))


def test_tree_moments_match_design():
    mean_a, _ = _moments(tree_gmm("A"))
    assert torch.allclose(mean_a, torch.tensor([0.37, 0.37], dtype=F64), atol=0.01)
    _, cov_ab = _moments(tree_gmm("AB"))
    assert torch.allclose(cov_ab.diagonal().sqrt(), torch.full((2,), 0.50, dtype=F64), atol=0.02)


def test_tree_trunk_follows_recipe():
    # The first draw of RandomState(2) sets class A's trunk length; its first component
    # sits at t = 0.07 along the π/4 direction, scaled per axis.
    dist = 0.292 * (1 + 0.2 * np.random.RandomState(2).randn())
    u = np.array([1.0, 1.0]) / math.sqrt(2.0)
    scale = np.array([1.3136, 1.3844])
    first = (np.array([0.0030, 0.0325]) + u * dist * 0.07) * scale
    np.testing.assert_allclose(tree_gmm("A").means[0].numpy(), first, rtol=1e-12)
    size = scale * dist * 0.06
    cov = (np.outer(u, u) + (np.eye(2) - np.outer(u, u)) * (0.2 / dist) ** 2) * np.outer(size, size)
    np.testing.assert_allclose(tree_gmm("A").covs[0].numpy(), cov, rtol=1e-12)


def test_tree_classes_share_one_stream_and_renormalise():
    a, b, ab = tree_gmm("A"), tree_gmm("B"), tree_gmm("AB")
    assert torch.equal(ab.means, torch.cat([a.means, b.means]))
    assert torch.equal(ab.covs, torch.cat([a.covs, b.covs]))
    torch.testing.assert_close(ab.weights[:1016] / ab.weights[:1016].sum(), a.weights)
    torch.testing.assert_close(ab.weights[1016:] / ab.weights[1016:].sum(), b.weights)
    # B grows after A on the same stream, so it is not A's mirror image.
    assert not torch.allclose(b.means, -a.means, atol=1e-3)


# --------------------------------------------------------------------------- exactness


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
)
def test_random_mixture_matches_dense_algebra(seed, sigma, per_sample, low_rank):
    dim = 5 if low_rank else 3
    gmm = random_gmm(dim, 4, seed=seed, rank=2 if low_rank else None, min_std=0.1, condition=30)
    x = gmm.sample(6, sigma, _gen(seed)) + 0.3 * torch.randn(6, dim, generator=_gen(seed), dtype=F64)
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
            (tree.weights.log() + torch.distributions.MultivariateNormal(tree.means, c).log_prob(xi)).max()
            for xi in x.to(F64)
        ]
    )
    lp = logp.to(F64)
    assert bool((lp >= best * (1 + 1e-6)).all()) and bool((lp <= best + math.log(2032)).all())


# --------------------------------------------------------------------------- sampling


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


# --------------------------------------------------------------------------- chunking & memory


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
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
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


# --------------------------------------------------------------------------- constructors


def test_ring_and_grid():
    ring = ring_gmm(8, radius=2.0, std=0.1)
    assert ring.num_components == 8
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((8,), 2.0, dtype=F64))
    torch.testing.assert_close(ring.covs, 0.01 * torch.eye(2, dtype=F64).expand(8, 2, 2))
    grid = grid_gmm(5, spacing=0.5)
    assert grid.num_components == 25
    torch.testing.assert_close(grid.weights @ grid.means, torch.zeros(2, dtype=F64))
    assert set(np.round(grid.means[:, 0].numpy(), 12)) == {-1.0, -0.5, 0.0, 0.5, 1.0}


@pytest.mark.parametrize(("dim", "rank"), [(8, None), (40, 3)])
def test_random_gmm_condition_number(dim, rank):
    gmm = random_gmm(dim, 3, seed=1, rank=rank, min_std=0.1, condition=50.0)
    eig = torch.linalg.eigvalsh(gmm.covs)  # [K, d]
    torch.testing.assert_close(eig[:, 0], torch.full((3,), 0.01, dtype=F64))
    torch.testing.assert_close(eig[:, -1], torch.full((3,), 0.5, dtype=F64))


def test_low_rank_agrees_with_its_dense_twin():
    low = random_gmm(10, 4, seed=2, rank=3)
    dense = GaussianMixture(low.weights, low.means, low.covs)
    x = low.sample(20, 0.1, _gen(9))
    for name in ("log_prob", "responsibilities", "score", "denoise", "drift", "drift_jacobian"):
        a, b = getattr(low, name)(x, 0.1), getattr(dense, name)(x, 0.1)
        assert _rel_err(a, b) < 1e-11, name


def test_random_gmm_in_4096_dimensions():
    gmm = random_gmm(4096, 3, seed=0)
    assert gmm.rank < gmm.dim
    x = gmm.sample(4, 0.3, _gen(10))
    assert _rel_err(gmm.score(x, 0.3), _autograd_score(gmm, x, 0.3)) < EXACT_RTOL
    assert _rel_err(gmm.drift(x, 0.3), (x - gmm.denoise(x, 0.3)) / 0.3) < 1e-9
    assert gmm.drift(x.float(), 0.3).dtype == torch.float32


# --------------------------------------------------------------------------- validation


def _spd(k=2, d=2):
    return torch.eye(d, dtype=F64).expand(k, d, d).clone()


@pytest.mark.parametrize(
    "build",
    [
        lambda: GaussianMixture([1.0, -0.5], torch.zeros(2, 2), _spd()),
        lambda: GaussianMixture([1.0, 0.0], torch.zeros(2, 2), _spd()),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 2), torch.tensor([[[1.0, 1.0], [1.0, 1.0]]] * 2)),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 2), torch.tensor([[[1.0, 0.0], [0.0, -1.0]]] * 2)),
        lambda: GaussianMixture([1.0, 1.0], torch.zeros(2, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2)),
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
