"""Dynamic-RF sources (rf.sources): R² of the IRFs explained by the mode loadings against direct least squares."""

import numpy as np
import pytest
import torch

from retina_codec.rf.sources import SourcesAccumulator


def _irfs_and_loadings(n=60, k=3, c=2, h=3, hw=(5, 6), seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, k, generator=gen, dtype=torch.float64) * (torch.rand(n, k, generator=gen) < 0.5)
    atoms = torch.randn(k, c, h, *hw, generator=gen, dtype=torch.float64)
    irfs = torch.randn(1, c, h, *hw, generator=gen, dtype=torch.float64) + torch.einsum(
        "nk,kchyx->nchyx", a, atoms) + torch.randn(n, c, h, *hw, generator=gen, dtype=torch.float64)
    return irfs, a


def test_sources_r2_equals_a_direct_least_squares_fit():
    irfs, a = _irfs_and_loadings()
    n, k, c = a.shape[0], a.shape[1], irfs.shape[1]
    acc = SourcesAccumulator(k, c, 3, (5, 6))
    for i in range(0, n, 25):
        acc.update(irfs[i : i + 25], a[i : i + 25])
    res = acc.result()
    x = np.c_[np.ones(n), a.numpy()]

    def r2(design, y):
        beta = np.linalg.lstsq(design, y, rcond=None)[0]
        return 1 - np.square(y - design @ beta).sum() / np.square(y - y.mean(0)).sum()

    for j in range(c):
        y = irfs[:, j].reshape(n, -1).numpy()
        full = r2(x, y)
        assert res.r2_irf[j] == pytest.approx(full, abs=1e-10)
        unique = [full - r2(np.delete(x, m + 1, 1), y) for m in range(k)]
        np.testing.assert_allclose(res.unique_r2[:, j], unique, atol=1e-10)
    assert 0.2 < res.r2_irf.min() < 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sources_r2_of_an_irf_that_never_changes_is_nan_not_a_rounding_ratio(dtype):
    """A linear cell's IRF is the same at every bin: nothing to explain. 1 − rss/tss of rounding noise gave
    numbers like −48 or 2 (and feature R²s like 0.83 or inf for a constant centre or polarity)."""
    irfs, a = _irfs_and_loadings(n=50, c=1)
    const = irfs[:1].expand(50, -1, -1, -1, -1)
    acc = SourcesAccumulator(3, 1, 3, (5, 6))
    acc.update(const[:25].to(dtype), a[:25])
    acc.update(const[25:].to(dtype), a[25:])
    res = acc.result()
    assert np.isnan(res.r2_irf).all() and np.isnan(res.unique_r2).all() and np.isnan(res.feature_r2).all()


def test_sources_r2_never_exceeds_one_with_float32_irfs_and_many_modes():
    # float32 IRFs that the loadings explain almost exactly, 44 modes on 100 bins: Σy² − β·Xᵀy fell below 0
    worst = -1.0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n, k, c, h, hh, ww = 100, 44, 2, 3, 5, 5
        a = (rng.random((n, k)) < 0.1) * rng.random((n, k))
        irf = (a @ rng.normal(size=(k, c * h * hh * ww))).reshape(n, c, h, hh, ww) + 3.0
        irf += 1e-6 * rng.normal(size=irf.shape)
        acc = SourcesAccumulator(k, c, h, (hh, ww))
        acc.update(torch.tensor(irf, dtype=torch.float32), torch.tensor(a))
        r2 = acc.result().r2_irf
        assert np.all(r2 > 0.999)
        worst = max(worst, float(np.max(r2)))
    assert worst <= 1.0
