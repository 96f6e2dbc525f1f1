"""GaussianMixture's opt-in float32 compute mode: float32-accurate, stable far away, and the
float64 default untouched."""

import pytest
import torch

from stiffkit.diffusion.mixtures import GaussianMixture

F64 = torch.float64
MAPS = ("score", "denoise", "drift", "drift_jacobian", "log_prob", "responsibilities")
#: float32 arithmetic (eps 1.2e-7) through log-densities of magnitude ~1e2 and a softmax:
#: relative errors ~1e-6 measured on the tree (max over 3,000 points); 2e-5 leaves 10×.
F32_RTOL = 2e-5


def _low_rank(seed=1, k=5, d=6, r=2):
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(k, d, r, generator=g, dtype=F64))[0]
    return GaussianMixture.from_spectral(
        torch.rand(k, generator=g, dtype=F64) + 0.5, 3 * torch.randn(k, d, generator=g, dtype=F64),
        torch.rand(k, r, generator=g, dtype=F64) + 0.1, u, torch.full((k,), 0.05, dtype=F64))


def _close(got, want, rtol):
    err = (got.to(F64) - want).abs().max() / want.abs().max()
    assert bool(torch.isfinite(got).all()) and float(err) <= rtol, float(err)


@pytest.mark.parametrize("which", ["tree", "low_rank"])
def test_float32_mode_agrees_with_float64_to_float32_roundoff(tree, which):
    gmm = tree if which == "tree" else _low_rank()
    g32 = gmm.with_compute_dtype(torch.float32)
    assert g32.compute_dtype == torch.float32 and gmm.compute_dtype == F64
    sigma = 0.1 if which == "tree" else 0.3
    x = gmm.sample(500, sigma, torch.Generator().manual_seed(2))
    for name in MAPS:
        want = getattr(gmm, name)(x, sigma)
        got = getattr(g32, name)(x.float(), sigma)
        assert got.dtype == torch.float32
        _close(got, want, F32_RTOL)
        # float64 input to the float32 mode: float32 arithmetic, float64 result
        assert getattr(g32, name)(x, sigma).dtype == F64


@pytest.mark.parametrize("which", ["tree", "low_rank"])
def test_far_from_every_component_is_finite_and_correct_in_float32(tree, which):
    """Log-densities of order −|x|²/σ² (−1e12 here) underflow exp in any dtype; the softmax of
    log-densities does not, so the far field is the float64 answer to float32 roundoff."""
    gmm = tree if which == "tree" else _low_rank()
    g32 = gmm.with_compute_dtype(torch.float32)
    d = gmm.dim
    direction = torch.nn.functional.normalize(torch.arange(1.0, d + 1) * (-1) ** torch.arange(d),
                                              dim=0)
    x = torch.stack([r * direction for r in (1e2, 1e3, 1e4, 1e5)])
    for name in ("score", "denoise", "responsibilities"):
        want = getattr(gmm, name)(x.double(), 0.1)
        got = getattr(g32, name)(x, 0.1)
        for i in range(x.shape[0]):  # each point on its own scale
            _close(got[i], want[i], 1e-4)


def test_default_stays_float64_and_bit_identical(tree):
    x = tree.sample(64, 0.2, torch.Generator().manual_seed(3))
    before = {name: getattr(tree, name)(x, 0.2) for name in MAPS}
    g32 = tree.with_compute_dtype(torch.float32)
    g32.denoise(x.float(), 0.2)  # builds its cast cache
    g64 = tree.with_compute_dtype(F64)
    for name in MAPS:
        assert torch.equal(getattr(tree, name)(x, 0.2), before[name])
        assert torch.equal(getattr(g64, name)(x, 0.2), before[name])
    assert g32.means is tree.means  # shared parameters, not copies
    assert "compute_dtype" in repr(g32) and "compute_dtype" not in repr(tree)


def test_cast_parameters_follow_an_in_place_edit():
    gmm = _low_rank()
    g32 = gmm.with_compute_dtype(torch.float32)
    x = torch.zeros(3, gmm.dim)
    first = g32.denoise(x, 0.5)
    with torch.no_grad():
        gmm.means.add_(1.0)  # shared buffer, edited in place
    moved = g32.denoise(x, 0.5)
    _close(moved, gmm.denoise(x.double(), 0.5), F32_RTOL)
    assert not torch.allclose(first, moved)


@pytest.mark.parametrize("dtype", [torch.float16, torch.int64, "float32"])
def test_bad_compute_dtype_is_named(tree, dtype):
    with pytest.raises(ValueError, match="compute_dtype"):
        tree.with_compute_dtype(dtype)
    with pytest.raises(ValueError, match="compute_dtype"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None], compute_dtype=dtype)
