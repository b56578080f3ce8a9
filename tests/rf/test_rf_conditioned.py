"""Mode-conditioned RFs streamed as running sums equal a brute-force computation; dynamic-RF sources."""

import numpy as np
import pytest
import torch
from _rf_helpers import PlainTinyCNN, movie_recording
from torch import nn

from retina_codec.recordings import Recording
from retina_codec.rf.conditioned import ConditionedRFAccumulator, active_combinations, mode_conditioned_rfs
from retina_codec.rf.decompose import space_time_svd
from retina_codec.rf.gaussian_fit import gaussian_2d
from retina_codec.rf.irf import instantaneous_rfs


class TinyCNN(nn.Module):
    def __init__(self, h=4, hw=8, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(h, 4, 3)
        self.lin = nn.Linear(4 * (hw - 2) ** 2, n)
        self.max_batch = 0

    def forward(self, x):
        self.max_batch = max(self.max_batch, x.shape[0])
        return nn.functional.softplus(self.lin(torch.relu(self.conv(x)).flatten(1)))


class SquareCell(nn.Module):
    """rate = ½ (k·x)²: its IRF (k·x)·k flips polarity with the sign of the drive k·x."""

    def __init__(self, k):
        super().__init__()
        self.k = nn.Parameter(k)

    def forward(self, x):
        return 0.5 * (x.flatten(1) @ self.k.flatten()[:, None]) ** 2


def _recording(t, hw=8, seed=0):
    rng = np.random.default_rng(seed)
    return Recording(rng.standard_normal((t, hw, hw)).astype(np.float32), np.arange(t) / 100.0, 100.0,
                     np.zeros((t, 1), np.float32))


def _sparse_loadings(n, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, k)) * (rng.uniform(0, 1, (n, k)) < 0.4)


@pytest.mark.parametrize("keep", ["full", "rank1"])
def test_streamed_conditioned_rfs_equal_brute_force(keep):
    model, rec = TinyCNN(), _recording(90)
    bins = rec.window_bins(None, 4)
    a = _sparse_loadings(len(bins))
    res, _ = mode_conditioned_rfs(model, rec, a, bins, threshold=0.2, keep=keep, batch_size=7, history=4,
                                  sources=False, quiet=True)
    assert model.max_batch <= 7
    irf = instantaneous_rfs(model, rec, bins, [0, 1, 2], history=4).astype(np.float64)  # (T, C, h, H, W)
    if keep == "full":
        per_bin = irf
    else:
        dec = space_time_svd(irf)
        per_bin = np.concatenate([dec.spatial[:, :, 0].reshape(len(bins), 3, -1), dec.temporal[:, :, 0]], -1)
    active = a > 0.2
    for k in range(3):
        w = np.where(active[:, k], a[:, k], 0.0)
        ref = np.tensordot(w, per_bin, 1) / w.sum()
        assert res.mode_count[k] == active[:, k].sum()
        if keep == "full":
            np.testing.assert_allclose(res.mode_rf[k], ref, atol=1e-6)
        else:
            np.testing.assert_allclose(res.mode_spatial[k].reshape(3, -1), ref[..., :64], atol=1e-6)
            np.testing.assert_allclose(res.mode_temporal[k], ref[..., 64:], atol=1e-6)
    keys = [tuple(np.flatnonzero(r)) for r in active]
    assert sum(res.combo_count) == len(bins)  # every set kept (fewer than 32 of them)
    for m, combo in enumerate(res.combos):
        sel = np.array([key == combo for key in keys])
        w = np.where(sel, a[:, list(combo)].mean(1) if combo else 1.0, 0.0)
        ref = np.tensordot(w, per_bin, 1) / w.sum()
        assert res.combo_frequency[m] == pytest.approx(sel.mean())
        if keep == "full":
            np.testing.assert_allclose(res.combo_rf[m], ref, atol=1e-6)
    assert list(res.combo_count) == sorted(res.combo_count, reverse=True)


def test_running_sums_do_not_grow_with_the_number_of_bins():
    sizes = []
    for t in (60, 240):
        model, rec = TinyCNN(), _recording(t)
        bins = rec.window_bins(None, 4)
        combos, code = active_combinations(_sparse_loadings(len(bins)), 0.2, max_combinations=4)
        acc = ConditionedRFAccumulator(3, combos, 3, 4, (8, 8), 0.2)
        sizes.append(acc.state_nbytes())
        res, src = mode_conditioned_rfs(model, rec, _sparse_loadings(len(bins)), bins, threshold=0.2,
                                        max_combinations=4, batch_size=16, history=4, quiet=True)
        assert model.max_batch <= 16 and res.n_bins == len(bins) and src.n_bins == len(bins)
    assert sizes[0] == sizes[1]


def test_combinations_are_ranked_by_frequency_and_rare_ones_dropped():
    a = np.array([[1, 0], [1, 0], [1, 1], [0, 0], [1, 0], [1, 1], [0, 1]], float)
    combos, code = active_combinations(a, 0.5, max_combinations=2)
    assert combos == [(0,), (0, 1)]
    np.testing.assert_array_equal(code, [0, 0, 1, -1, 0, 1, -1])


def test_a_mode_that_flips_polarity_is_found():
    k = torch.as_tensor(np.stack([gaussian_2d((8, 8), 3.0, 4.0, 1.5, 1.5)] * 4) * np.array(
        [0.2, 0.5, 1.0, 0.3])[:, None, None], dtype=torch.float32)
    model, rec = SquareCell(k), _recording(400, seed=1)
    win = rec.windows(None, 4)
    drive = np.ascontiguousarray(win.stimulus).reshape(len(win.bins), -1) @ k.numpy().ravel()
    rng = np.random.default_rng(2)
    loadings = np.stack([np.maximum(drive, 0), np.maximum(-drive, 0), rng.uniform(0, 1, len(drive)) * (rng.uniform(0, 1, len(drive)) < 0.5)], 1)
    res, src = mode_conditioned_rfs(model, rec, loadings, win.bins, threshold=0.0, batch_size=64,
                                    history=4, quiet=True)
    centre = (slice(None), 0, 3, 4)
    assert res.mode_spatial[centre][0] > 0 > res.mode_spatial[centre][1]  # ON- vs OFF-driven: opposite
    np.testing.assert_array_equal(src.flips[:, 0], [True, True, False])
    assert src.r2_irf[0] > 0.99  # IRF = (k·x) k is linear in a_0 - a_1
    assert src.unique_r2[0, 0] > 0.1 and src.unique_r2[1, 0] > 0.1 and abs(src.unique_r2[2, 0]) < 0.01
    assert src.feature_mean_active[0, 0, 3] == 1.0 and src.feature_mean_active[1, 0, 3] == -1.0
    assert np.all(src.centre_shift[:, 0] < 0.5)  # the centre stays put
    rows = src.summary()
    assert rows[0]["flips_polarity"] and not rows[2]["flips_polarity"]


def test_loadings_must_align_with_the_bins():
    rec = _recording(40)
    with pytest.raises(ValueError, match="aligned with the bins"):
        mode_conditioned_rfs(TinyCNN(), rec, np.zeros((5, 2)), history=4, quiet=True)


def test_sources_of_float32_irfs_with_a_large_mean_match_float64():
    """r² = 1 − rss/tss with tss = Σy² − (Σy)²/n cancels when the IRFs share a large mean: the float32 path
    must still give the float64 answer (its Σy² accumulates in float64)."""
    from retina_codec.rf.sources import SourcesAccumulator

    gen = torch.Generator().manual_seed(0)
    n, k, c, h, hw = 96, 3, 2, 6, (12, 12)
    base = torch.randn(1, c, h, *hw, generator=gen, dtype=torch.float64) * 10  # shared, large
    atoms = torch.randn(k, c, h, *hw, generator=gen, dtype=torch.float64) * 0.1
    a = torch.rand(n, k, generator=gen, dtype=torch.float64) * (torch.rand(n, k, generator=gen) < 0.5)
    irfs = base + torch.einsum("nk,kchyx->nchyx", a, atoms) + 0.05 * torch.randn(n, c, h, *hw, generator=gen,
                                                                                 dtype=torch.float64)
    res = {}
    for dtype in (torch.float32, torch.float64):
        acc = SourcesAccumulator(k, c, h, hw)
        for i in range(0, n, 32):
            acc.update(irfs[i:i + 32].to(dtype), a[i:i + 32])
        res[dtype] = acc.result()
    np.testing.assert_allclose(res[torch.float32].r2_irf, res[torch.float64].r2_irf, atol=1e-5)
    np.testing.assert_allclose(res[torch.float32].unique_r2, res[torch.float64].unique_r2, atol=1e-5)
    assert 0.3 < res[torch.float64].r2_irf.min() < 1


def test_sources_compute_the_same_features_themselves_as_when_given_them():
    from retina_codec.rf.decompose import batched_rank1
    from retina_codec.rf.sources import SourcesAccumulator, spatial_features

    gen = torch.Generator().manual_seed(1)
    n, k, c, h, hw = 40, 2, 2, 5, (10, 10)
    irfs = torch.randn(1, c, h, *hw, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(
        n, c, h, *hw, generator=gen, dtype=torch.float64)
    a = torch.rand(n, k, generator=gen, dtype=torch.float64)
    given, computed = SourcesAccumulator(k, c, h, hw), SourcesAccumulator(k, c, h, hw)
    for i in range(0, n, 16):
        y = irfs[i:i + 16]
        s, _, _ = batched_rank1(y.reshape(len(y) * c, h, -1))
        given.update(y, a[i:i + 16], spatial_features(s, hw).reshape(len(y), c, -1))
        computed.update(y, a[i:i + 16])
    g, m = given.result(), computed.result()
    np.testing.assert_allclose(m.feature_coef, g.feature_coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.feature_r2, g.feature_r2, rtol=1e-10, atol=1e-12)


def test_conditioned_rfs_of_unsorted_bins_equal_direct_weighted_means():
    model, rec = PlainTinyCNN(), movie_recording()
    bins = rec.window_bins(None, 4)
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (len(bins), 3)) * (rng.uniform(0, 1, (len(bins), 3)) < 0.4)
    a[:, 2] = 0  # a mode that is never active
    perm = rng.permutation(len(bins))
    res, _ = mode_conditioned_rfs(model, rec, a[perm], bins[perm], threshold=0.1, max_combinations=2,
                                  batch_size=9, history=4, sources=False, quiet=True)
    irf = instantaneous_rfs(model, rec, bins, [0, 1, 2], history=4, quiet=True).astype(np.float64)
    active = a > 0.1
    for k in range(2):
        w = np.where(active[:, k], a[:, k], 0.0)
        np.testing.assert_allclose(res.mode_rf[k], np.tensordot(w, irf, 1) / w.sum(), atol=1e-7)
    assert np.isnan(res.mode_rf[2]).all() and res.mode_count[2] == 0
    keys = [tuple(np.flatnonzero(r)) for r in active]
    kept = 0.0
    for m, combo in enumerate(res.combos):
        sel = np.array([key == combo for key in keys])
        w = np.where(sel, a[:, list(combo)].mean(1) if combo else 1.0, 0.0)
        np.testing.assert_allclose(res.combo_rf[m], np.tensordot(w, irf, 1) / w.sum(), atol=1e-7)
        assert res.combo_frequency[m] == pytest.approx(sel.mean())
        kept += sel.mean()
    assert res.combo_frequency.sum() == pytest.approx(kept) and kept < 1  # two most frequent sets only
    np.testing.assert_allclose(res.mean_rf, irf.mean(0), atol=1e-7)
