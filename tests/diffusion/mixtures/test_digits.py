"""Tests for ``IsotropicMixture`` and ``digits_mixture``: the exact digits distribution.

Truth comes from places the module does not use: autograd of ``log_prob`` and ``jacrev`` of
the drift, explicit per-component Gaussians in numpy/scipy (a small subset of the images),
the general :class:`GaussianMixture` with covariances ``b² I``, scikit-learn's own arrays and
a hand-written bilinear interpolation.
"""

import math

import numpy as np
import pytest
import torch
from _mixture_data import EXACT_RTOL, F64, _gen, _per_sample_sigma, _rel_err
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits
from torch.func import jacrev

from stiffkit.diffusion import Guided, evaluate, mixture_oracle, sample_final
from stiffkit.diffusion.mixtures import (
    GaussianMixture,
    IsotropicMixture,
    digits_images,
    digits_mixture,
)

SIGMAS = [0.002, 0.05, 0.5, 5.0, 80.0]
MAPS = ("log_prob", "responsibilities", "score", "denoise", "drift", "drift_jacobian")


@pytest.fixture(scope="module")
def digits():
    return digits_mixture(8)


@pytest.fixture(scope="module")
def digits16():
    return digits_mixture(16, 0.05)


def _points(mix, n, sigma, seed=0):
    """Exact samples of ``p_σ``, the last two moved off the data."""
    x = mix.sample(n, sigma, _gen(seed))
    x[-2:] = 3.0 * torch.randn(2, *mix.event_shape, dtype=F64, generator=_gen(seed + 1))
    return x


def _flat_jacrev(mix, x, sigma):
    """Per-sample autograd Jacobians of the drift over the flattened dims, ``[b, d, d]``."""
    def f(z):
        return mix.drift(z.view(-1, *mix.event_shape), sigma).reshape(z.shape).sum(0)
    return jacrev(f)(x.reshape(x.shape[0], -1)).movedim(1, 0)


# ---------------------------------------------------------------------- the data
def test_digits_are_sklearns_images_scaled_to_unit_range(digits):
    data = load_digits()
    images = torch.from_numpy(data.images / 8.0 - 1.0)
    assert isinstance(digits, GaussianMixture) and isinstance(digits, IsotropicMixture)
    assert digits.num_components == 1797 and digits.dim == 64
    assert digits.event_shape == (1, 8, 8) and digits.bandwidth == 0.0
    assert torch.equal(digits.means.view(-1, 8, 8), images)
    assert torch.equal(digits.labels, torch.from_numpy(data.target).long())
    assert float(digits.means.min()) == -1.0 and float(digits.means.max()) == 1.0
    torch.testing.assert_close(digits.weights, torch.full((1797,), 1 / 1797, dtype=F64))
    assert digits.classes == list(range(10)) and digits.subspace_rank == 61


def _bilinear(img, r):
    """Bilinear upsampling with half-pixel centres and clamped borders, by the formula."""
    n = img.shape[0]
    src = np.clip((np.arange(r) + 0.5) * n / r - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1, t = np.minimum(i0 + 1, n - 1), src - i0
    rows = img[i0] * (1 - t)[:, None] + img[i1] * t[:, None]
    return rows[:, i0] * (1 - t) + rows[:, i1] * t


@pytest.mark.parametrize("resolution", [16, 32])
def test_upsampling_is_a_fixed_bilinear_interpolation(resolution):
    images, labels = digits_images(resolution)
    base, _ = digits_images(8)
    assert images.shape == (1797, 1, resolution, resolution) and labels.shape == (1797,)
    for k in (0, 500, 1796):
        want = _bilinear(base[k, 0].numpy(), resolution)
        np.testing.assert_allclose(images[k, 0].numpy(), want, rtol=0, atol=1e-14)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    images[0] = 7.0  # a fresh copy: the cached data are untouched
    assert float(digits_images(resolution)[0].max()) <= 1.0


def test_upsampled_mixture_shapes_and_rank(digits16):
    assert digits16.dim == 256 and digits16.event_shape == (1, 16, 16)
    assert digits16.subspace_rank == 61  # linear upsampling keeps the span of the images


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize("sigma", SIGMAS + ["per-sample"])
def test_score_matches_autograd_and_denoise_is_tweedie(digits, sigma):
    sigma = _per_sample_sigma(20) if sigma == "per-sample" else sigma
    x = _points(digits, 20, sigma).requires_grad_(True)
    (grad,) = torch.autograd.grad(digits.log_prob(x, sigma).sum(), x)
    x = x.detach()
    score = digits.score(x, sigma)
    assert score.shape == x.shape
    assert _rel_err(score, grad) < 1e-9
    s2 = (torch.as_tensor(sigma, dtype=F64) ** 2).reshape(-1, 1, 1, 1)
    assert _rel_err(digits.denoise(x, sigma), x + s2 * score) < 1e-9
    assert torch.equal(digits(x, sigma), digits.denoise(x, sigma))


@pytest.mark.parametrize("sigma", [0.002, 0.05, 0.5, 80.0, "per-sample"])
def test_drift_jacobian_matches_autograd(digits, sigma):
    sigma = _per_sample_sigma(12) if sigma == "per-sample" else sigma
    x = _points(digits, 12, sigma)
    s = torch.as_tensor(sigma, dtype=F64).reshape(-1, 1, 1, 1)
    assert _rel_err(digits.drift(x, sigma), (x - digits.denoise(x, sigma)) / s) < 1e-12
    jac = digits.drift_jacobian(x, sigma)
    assert jac.shape == (12, 64, 64) and torch.equal(jac, jac.mT)
    assert _rel_err(jac, _flat_jacrev(digits, x, sigma)) < 1e-9


def test_gram_path_jacobian_matches_autograd():
    # d = 144 > SYMMETRIZE_MAX_DIM takes the Gram-matrix branch (few components: cheap jacrev).
    mix = IsotropicMixture(0.5 * torch.randn(30, 1, 12, 12, dtype=F64, generator=_gen(2)), 0.1)
    sigma = torch.tensor([0.03, 0.3, 3.0], dtype=F64)
    x = _points(mix, 3, sigma)
    jac = mix.drift_jacobian(x, sigma)
    assert jac.shape == (3, 144, 144) and torch.equal(jac, jac.mT)
    assert _rel_err(jac, _flat_jacrev(mix, x, sigma)) < 1e-9


def test_upsampled_jacobian_spectrum_and_both_paths_agree(digits16, monkeypatch):
    import stiffkit.diffusion.mixtures._iso_terms as terms

    sigma = torch.tensor([0.03, 0.3, 3.0], dtype=F64)
    x = _points(digits16, 3, sigma)
    jac = digits16.drift_jacobian(x, sigma)  # the Gram branch (d = 256)
    assert torch.equal(jac, jac.mT)
    v = 0.05**2 + sigma**2
    eig = torch.linalg.eigvalsh(jac)  # [3, 256], ascending
    top = (sigma / v)[:, None]
    assert bool((eig <= top * (1 + 1e-12)).all())  # off the images' span J = (σ/v) I
    torch.testing.assert_close(eig[:, -(256 - 61):], top.expand(3, 256 - 61), rtol=1e-10, atol=0)
    monkeypatch.setattr(terms, "SYMMETRIZE_MAX_DIM", 256)
    assert _rel_err(digits16.drift_jacobian(x, sigma), jac) < 1e-12


def _brute_force(means, bandwidth, x, sigma):
    """log p, r, D and J_f by explicit per-component Gaussians (numpy/scipy)."""
    k, d = means.shape
    v = bandwidth**2 + sigma**2
    cinv = np.eye(d) / v
    out = []
    for xi in x:
        logs = np.array([multivariate_normal(m, v * np.eye(d)).logpdf(xi) for m in means])
        logs -= math.log(k)
        r = np.exp(logs - logsumexp(logs))
        post = sum(r[j] * (means[j] + bandwidth**2 * cinv @ (xi - means[j])) for j in range(k))
        y = (xi - means) @ cinv  # C_k⁻¹(x − μ_k): [K, d]
        dev = y - r @ y
        jac = sigma * (cinv - np.einsum("k,ki,kj->ij", r, dev, dev))
        out.append((logsumexp(logs), r, post, jac))
    return [np.stack(a) for a in zip(*out)]


@pytest.mark.parametrize(("bandwidth", "sigma"), [(0.0, 0.3), (0.0, 2.0), (0.2, 0.05), (0.5, 1.0)])
def test_small_subset_matches_brute_force(bandwidth, sigma):
    images, labels = digits_images(8)
    sub = images[::150]  # 12 images
    mix = IsotropicMixture(sub, bandwidth, labels=labels[::150])
    x = mix.sample(6, sigma, _gen(3))
    logp, r, post, jac = _brute_force(sub.reshape(12, -1).numpy(), bandwidth,
                                      x.reshape(6, -1).numpy(), sigma)
    assert _rel_err(mix.log_prob(x, sigma), torch.from_numpy(logp)) < 1e-12
    assert _rel_err(mix.responsibilities(x, sigma), torch.from_numpy(r)) < 1e-9
    assert _rel_err(mix.denoise(x, sigma).reshape(6, -1), torch.from_numpy(post)) < 1e-12
    assert _rel_err(mix.drift_jacobian(x, sigma), torch.from_numpy(jac)) < 1e-10
    if bandwidth > 0:  # the general mixture with covariances b² I agrees
        gmm = GaussianMixture(mix.weights, mix.means, mix.covs)
        xf = x.reshape(6, -1)
        for name in MAPS:
            a, b = getattr(mix, name)(xf, sigma), getattr(gmm, name)(xf, sigma)
            assert _rel_err(a, b) < EXACT_RTOL, name


def test_single_component_is_a_gaussian():
    mu = torch.randn(1, 3, 4, dtype=F64, generator=_gen(4))
    mix = IsotropicMixture(mu, 0.3)
    assert mix.subspace_rank == 0
    x = torch.randn(5, 3, 4, dtype=F64, generator=_gen(5))
    v = 0.09 + 0.25
    torch.testing.assert_close(mix.denoise(x, 0.5), mu + (0.09 / v) * (x - mu))
    torch.testing.assert_close(mix.drift_jacobian(x, 0.5),
                               (0.5 / v) * torch.eye(12, dtype=F64).expand(5, 12, 12))


# ---------------------------------------------------------------------- σ extremes, σ = 0
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("sigma", [0.002, 80.0])
def test_extreme_sigma_stays_finite_and_right(digits, dtype, sigma):
    near = digits.sample(6, sigma, _gen(6))
    far = 100.0 * torch.randn(4, 1, 8, 8, dtype=F64, generator=_gen(7))
    x = torch.cat([near, far]).to(dtype)
    for name in MAPS:
        out = getattr(digits, name)(x, sigma)
        assert out.dtype == dtype and bool(torch.isfinite(out).all()), name
    den = digits.denoise(x.double(), sigma).reshape(10, -1)
    # b = 0: D = Σ r_k μ_k is a convex combination of the images, even far away.
    assert float(den.abs().max()) <= 1.0 + 1e-12
    if sigma == 0.002:  # each near point denoises to its own image
        nearest = torch.cdist(near.reshape(6, -1), digits.means).argmin(1)
        torch.testing.assert_close(den[:6], digits.means[nearest], rtol=0, atol=1e-10)


def test_sigma_zero_limits():
    images, _ = digits_images(8)
    dirac = IsotropicMixture(images[:20])
    smooth = IsotropicMixture(images[:20], 0.1)
    x = images[:20] + 0.01 * torch.randn(20, 1, 8, 8, dtype=F64, generator=_gen(8))
    torch.testing.assert_close(dirac.denoise(x, 0.0), images[:20])  # the nearest image
    assert torch.equal(dirac.responsibilities(x, 0.0), torch.eye(20, dtype=F64))
    torch.testing.assert_close(smooth.denoise(x, 0.0), x, rtol=0, atol=1e-14)
    assert bool(torch.isfinite(smooth.score(x, 0.0)).all())
    # Mixed per-sample levels: the σ = 0 rows take the limit, the others the formula.
    s = torch.tensor([0.0, 0.3] * 10, dtype=F64)
    mixed = dirac.denoise(x, s)
    torch.testing.assert_close(mixed[1::2], dirac.denoise(x[1::2], 0.3))
    torch.testing.assert_close(mixed[::2], images[:20:2])
    # Tied nearest means share the weight in proportion to the weights.
    twin = IsotropicMixture(torch.stack([images[0], images[0], images[1]]), weights=[1, 3, 1])
    torch.testing.assert_close(twin.responsibilities(images[:1], 0.0),
                               torch.tensor([[0.25, 0.75, 0.0]], dtype=F64))


# ---------------------------------------------------------------------- sampling
def test_samples_have_the_mixture_moments(digits):
    sigma, n = 0.5, 40_000
    x = digits.sample(n, sigma, _gen(9)).reshape(n, -1)
    mean = digits.means.mean(0)
    cov = torch.cov(digits.means.T, correction=0) + sigma**2 * torch.eye(64, dtype=F64)
    se_mean = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() <= 5 * se_mean).all())
    # Variances along the principal axes and random directions, within 5 standard errors.
    dirs = torch.cat([torch.linalg.eigh(cov)[1][:, -8:],
                      torch.randn(64, 8, dtype=F64, generator=_gen(20))], dim=1)
    dirs = dirs / dirs.norm(dim=0)
    sq = ((x - mean) @ dirs) ** 2  # [n, 16]
    want = torch.einsum("di,de,ei->i", dirs, cov, dirs)
    assert bool(((sq.mean(0) - want).abs() <= 5 * sq.std(0) / math.sqrt(n)).all())


def test_sampling_shapes_reproducibility_and_noise_layouts(digits):
    a = digits.sample(50, 0.2, _gen(10))
    assert a.shape == (50, 1, 8, 8) and a.dtype == F64
    assert torch.equal(a, digits.sample(50, torch.full((50,), 0.2, dtype=F64), _gen(10)))
    assert digits.sample(3, dtype=torch.float32, generator=_gen(0)).dtype == torch.float32
    u = torch.rand(7, dtype=F64, generator=_gen(11))
    eps = torch.randn(7, 64, dtype=F64, generator=_gen(12))
    assert torch.equal(digits.sample_from_noise(u, eps, 0.1),
                       digits.sample_from_noise(u, eps.view(7, 1, 8, 8), 0.1))
    clean = digits.sample(200, 0.0, _gen(13)).reshape(200, -1)  # b = σ = 0: the images
    assert float(torch.cdist(clean, digits.means).min(1).values.max()) == 0.0


# ---------------------------------------------------------------------- layout, chunks
def test_flat_states_keep_their_shape_and_agree(digits):
    x = digits.sample(9, 0.3, _gen(14))
    flat = x.reshape(9, 64)
    for name in ("score", "denoise", "drift"):
        out = getattr(digits, name)(flat, 0.3)
        assert out.shape == (9, 64)
        assert torch.equal(out, getattr(digits, name)(x, 0.3).reshape(9, 64))
    assert torch.equal(digits.drift_jacobian(flat, 0.3), digits.drift_jacobian(x, 0.3))
    assert digits.denoise(x.float(), 0.3).dtype == torch.float32
    assert digits.score(x[:0], 0.3).shape == (0, 1, 8, 8)  # empty batch, as GaussianMixture


@pytest.mark.parametrize("which", ["digits", "digits16"])
def test_chunking_does_not_change_results(which, request, monkeypatch):
    mix = request.getfixturevalue(which)
    x = mix.sample(10, 0.1, _gen(15))
    for sigma in (0.1, _per_sample_sigma(10)):
        whole = {name: getattr(mix, name)(x, sigma) for name in MAPS}
        with monkeypatch.context() as m:
            m.setattr(mix, "chunk_size", 3)
            for name in MAPS:
                a, b = whole[name], getattr(mix, name)(x, sigma)
                torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13 * float(a.abs().max()))
    assert digits_mixture(8, chunk_size=3).chunk_size == 3


def test_uncached_table_blocks_agree(digits, monkeypatch):
    import stiffkit.diffusion.mixtures._iso_terms as terms

    x = digits.sample(5, 0.2, _gen(16))
    want = digits.drift_jacobian(x, 0.2)
    monkeypatch.setattr(terms, "TABLE_BYTES", 8 * 1797 * 100)  # 19 column blocks
    # A fresh mixture without its cached table (monkeypatching the shared fixture's buffer
    # would not be undone cleanly on an nn.Module by every pytest version).
    uncached = digits_mixture(8)
    uncached._table = None
    torch.testing.assert_close(uncached.drift_jacobian(x, 0.2), want, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------- classes, CFG
def test_class_conditionals_and_the_unconditional_denoiser(digits):
    three = digits.conditional(3)
    assert three.num_components == 183 and three.classes == [3]
    assert torch.equal(three.means, digits_mixture(8, classes=3).means)
    assert digits.conditional([1, 7]).num_components == 182 + 179
    # D(x) = Σ_y P(y | x) D_y(x): the unconditional denoiser mixes the class ones.
    x, sigma = digits.sample(8, 1.0, _gen(17)), 1.0
    p_y = torch.zeros(8, 10, dtype=F64).index_add_(
        1, digits.labels, digits.responsibilities(x, sigma))
    mixed = sum(p_y[:, y, None, None, None] * digits.conditional(y).denoise(x, sigma)
                for y in range(10))
    assert _rel_err(mixed, digits.denoise(x, sigma)) < 1e-12


def test_samplers_oracle_and_metrics_accept_the_digits(digits):
    x0 = digits.sample(6, 80.0, _gen(18)).float()
    sigmas = torch.tensor([80.0, 5.0, 0.5, 0.05, 0.0])
    xn, nfe = sample_final(Guided(digits.conditional(5), digits, 2.0), x0, sigmas)
    assert xn.shape == (6, 1, 8, 8) and nfe == 7 and bool(torch.isfinite(xn).all())
    value, vector = mixture_oracle(digits)(torch.tensor(0.3), x0 / 100)
    assert value.shape == (6,) and vector.shape == (6, 1, 8, 8)
    smooth = digits_mixture(8, 0.1)
    row = evaluate(smooth.sample(150, 0.0, _gen(19)), smooth, seed=0, num_bootstrap=0,
                   noise_floor=False)
    assert math.isfinite(float(row["sw"].iloc[0])) and math.isfinite(float(row["nll_mean"].iloc[0]))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("method", "x", "sigma", "name"),
    [
        ("denoise", torch.zeros(3, 1, 8, 9), 0.1, "x"),
        ("denoise", torch.zeros(3, 65), 0.1, "x"),
        ("denoise", torch.zeros(64), 0.1, "x"),
        ("score", torch.full((2, 1, 8, 8), math.nan), 0.1, "x"),
        ("denoise", torch.zeros(3, 64), -0.1, "sigma"),
        ("denoise", torch.zeros(3, 64), math.inf, "sigma"),
        ("denoise", torch.zeros(3, 64), torch.tensor([0.1, 0.2]), "sigma"),
        ("drift", torch.zeros(3, 64), 0.0, "sigma"),
        ("drift_jacobian", torch.zeros(3, 64), torch.tensor([0.1, 0.0, 0.1]), "sigma"),
        ("score", torch.zeros(3, 64), 0.0, "sigma"),  # Dirac components: no score at σ = 0
        ("log_prob", torch.zeros(3, 64), torch.tensor([0.1, 0.0, 0.1]), "sigma"),
    ],
)
def test_bad_call_raises_naming_the_argument(digits, method, x, sigma, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        getattr(digits, method)(x, sigma)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: digits_mixture(12), "resolution"),
        (lambda: digits_mixture(0), "resolution"),
        (lambda: digits_mixture(8.0), "resolution"),
        (lambda: digits_mixture(True), "resolution"),
        (lambda: digits_mixture(8, -0.1), "bandwidth"),
        (lambda: digits_mixture(8, math.nan), "bandwidth"),
        (lambda: digits_mixture(8, math.inf), "bandwidth"),
        (lambda: digits_mixture(8, classes=10), "classes"),
        (lambda: digits_mixture(8, classes=[-1]), "classes"),
        (lambda: digits_mixture(8, classes=[]), "classes"),
        (lambda: digits_mixture(8, chunk_size=0), "chunk_size"),
        (lambda: IsotropicMixture(torch.zeros(0, 4)), "means"),
        (lambda: IsotropicMixture(torch.zeros(4)), "means"),
        (lambda: IsotropicMixture(torch.full((2, 3), math.nan)), "means"),
        (lambda: IsotropicMixture(torch.zeros(2, 3), weights=[1.0, 0.0]), "weights"),
        (lambda: IsotropicMixture(torch.zeros(2, 3), weights=[1.0]), "weights"),
        (lambda: IsotropicMixture(torch.zeros(2, 3), labels=[0.5, 1.0]), "labels"),
        (lambda: IsotropicMixture(torch.zeros(2, 3), labels=[0, -1]), "labels"),
        (lambda: IsotropicMixture(torch.zeros(2, 3), labels=[True, False]), "labels"),
        (lambda: IsotropicMixture(torch.zeros(2, 3), -1.0), "bandwidth"),
        (lambda: digits_images(20), "resolution"),
    ],
)
def test_bad_construction_raises_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        build()


def test_bad_conditional_and_noise_raise(digits):
    for bad in (10, [3, 11], [], 2.0):
        with pytest.raises(ValueError, match="`label`"):
            digits.conditional(bad)
    with pytest.raises(ValueError, match="`label`"):
        IsotropicMixture(torch.zeros(2, 3)).conditional(0)
    u, eps = torch.rand(4, dtype=F64), torch.randn(4, 64, dtype=F64)
    with pytest.raises(ValueError, match="`eps`"):
        digits.sample_from_noise(u, eps[:3])
    with pytest.raises(ValueError, match="`u`"):
        digits.sample_from_noise(u + 1.5, eps)
    with pytest.raises(TypeError):
        IsotropicMixture.from_spectral(None, None, None, None)


@pytest.mark.parametrize("d", [5, 128, 300])
def test_blocked_gram_is_exactly_symmetric_and_equals_the_product(d):
    """The Gram branch must not depend on the GEMM rounding (i, j) and (j, i) alike (one CPU
    of the development machines does not: the full product came out asymmetric there)."""
    from stiffkit.diffusion.mixtures._iso_terms import _neg_gram

    fac = torch.randn(3, d, 61, dtype=F64, generator=_gen(5))
    got = _neg_gram(fac)
    assert torch.equal(got, got.mT)
    want = -(fac @ fac.mT)
    assert _rel_err(got, want) < 1e-14
