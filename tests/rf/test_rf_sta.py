"""STA / STC from recorded spikes: equal to pyret's on the same data, chunking- and method-invariant."""

import numpy as np
import pytest
import torch
from pyret import filtertools

from retina_codec.recordings import Recording
from retina_codec.rf import correlate
from retina_codec.rf.correlate import (
    WindowCorrelator,
    assemble_lag_product,
    lag_product_parts,
    two_level_codes,
)
from retina_codec.rf.sta import spike_triggered_average, spike_triggered_covariance, window_lags


def _spiking_recording(t=700, hw=(6, 7), n=3, rate=0.4, seed=0, max_count=None):
    rng = np.random.default_rng(seed)
    stim = rng.choice(np.array([-1.0, 1.0], np.float32), size=(t,) + hw)
    counts = rng.poisson(rate, (t, n)).astype(np.float32)
    if max_count is not None:
        counts = np.minimum(counts, max_count)
    times = np.arange(t) / 100.0
    return Recording(stim, times, 100.0, counts, intervals={"train": [[0, t / 100.0]]})


def _spike_times(rec, cell, rng):
    """Spike times placed at random inside their frame bins (what binning inverts)."""
    counts = rec.responses[:, cell].astype(int)
    starts = np.repeat(rec.frame_times, counts)
    return np.sort(starts + rng.uniform(0.1, 0.9, starts.size) / rec.frame_rate)


@pytest.mark.parametrize("method", ["fft", "direct", "int8", "auto"])
@pytest.mark.parametrize("nb,na", [(10, 0), (8, 3)])
def test_sta_equals_pyret_with_the_documented_alignment(method, nb, na):
    rec = _spiking_recording()
    # pyret drops bin nb and bins >= T-1-na and divides by *all* spikes: keep spikes out of those bins
    rec.responses[: nb + 1] = 0
    rec.responses[rec.n_frames - 1 - na :] = 0
    res = spike_triggered_average(rec, history=nb + na, offset=1 - na, normalize=False, method=method,
                                  batch_size=97, quiet=True)
    rng = np.random.default_rng(1)
    stim = rec.stimulus[0 : rec.n_frames]
    for i in range(rec.n_cells):
        ref, tax = filtertools.sta(rec.frame_times, stim, _spike_times(rec, i, rng), nb, na)
        np.testing.assert_allclose(res.sta[i], ref, atol=1e-6, rtol=0)
        assert res.n_spikes[i] == rec.responses[:, i].sum()
        # pyret's time axis marks frame ends; ours frame starts, one frame earlier
        np.testing.assert_allclose(res.lags_s, tax - 1.0 / rec.frame_rate, atol=1e-9)


def test_sta_is_the_count_weighted_mean_window_of_the_split():
    rec = _spiking_recording(t=300, n=2, seed=3)
    rec.intervals["test"] = np.array([[0.5, 1.2], [2.0, 2.6]])
    res = spike_triggered_average(rec, "test", history=5, batch_size=16, quiet=True)
    mean, std = rec.normalization()
    bins = rec.window_bins("test", 5)
    stim = (rec.stimulus[0:300] - mean) / std
    wins = np.stack([stim[t - 5 : t] for t in bins])
    n = rec.responses[bins]
    ref = np.einsum("bn,bjyx->njyx", n, wins) / n.sum(0)[:, None, None, None]
    np.testing.assert_allclose(res.sta, ref, atol=1e-5)
    assert res.n_bins == len(bins)
    np.testing.assert_array_equal(res.lags, window_lags(5, 1))
    assert res.lags[-1] == -1


def test_sta_float32_and_chunk_size_agree_with_float64():
    rec = _spiking_recording(t=900, n=4, seed=5)
    a = spike_triggered_average(rec, history=12, batch_size=4096, dtype=torch.float64, quiet=True)
    b = spike_triggered_average(rec, history=12, batch_size=50, dtype=torch.float32, quiet=True)
    np.testing.assert_allclose(a.sta, b.sta, atol=1e-5)


def test_sta_of_a_silent_cell_is_nan_not_an_error():
    rec = _spiking_recording(t=200, n=2)
    rec.responses[:, 1] = 0
    res = spike_triggered_average(rec, history=4, quiet=True)
    assert np.isnan(res.sta[1]).all() and np.isfinite(res.sta[0]).all()


def test_correlator_rejects_frames_that_do_not_match_the_bins():
    corr = WindowCorrelator(2, 5, (3, 3))
    with pytest.raises(ValueError, match="frames: expected shape"):
        corr.update(np.zeros((10, 3, 3)), np.zeros((10, 2)))


def test_stc_equals_pyret_on_single_spike_bins():
    rec = _spiking_recording(t=500, hw=(3, 4), n=2, rate=0.5, seed=2, max_count=1)
    nb = 3
    rec.responses[: nb + 1] = 0
    rec.responses[-1:] = 0
    res = spike_triggered_covariance(rec, history=nb, normalize=False, batch_size=64, quiet=True)
    rng = np.random.default_rng(0)
    stim = rec.stimulus[0 : rec.n_frames].astype(np.float64)
    for i in range(rec.n_cells):
        ref = filtertools.stc(rec.frame_times, stim, _spike_times(rec, i, rng), nb)
        np.testing.assert_allclose(res.stc[i], ref, atol=1e-9)
    vals, vecs = res.eig()
    assert vals.shape == (2, 36) and np.all(np.diff(vals, axis=1) <= 1e-12)


def test_stc_crop_lags_and_basis_select_the_same_coordinates():
    rec = _spiking_recording(t=400, hw=(6, 6), n=1, seed=4)
    full = spike_triggered_covariance(rec, history=4, quiet=True)
    crop = spike_triggered_covariance(rec, history=4, crop=(1, 4, 2, 5), lags=[1, 3], quiet=True)
    sel = np.zeros((4, 6, 6), bool)
    sel[[1, 3], 1:4, 2:5] = True
    flat = np.flatnonzero(sel.ravel())
    np.testing.assert_allclose(crop.stc[0], full.stc[0][np.ix_(flat, flat)], atol=1e-10)
    basis = np.random.default_rng(0).standard_normal((144, 5))
    proj = spike_triggered_covariance(rec, history=4, basis=basis, quiet=True)
    np.testing.assert_allclose(proj.stc[0], basis.T @ full.stc[0] @ basis, atol=1e-8)
    with pytest.raises(ValueError, match="max_dim"):
        spike_triggered_covariance(rec, history=4, max_dim=100, quiet=True)


def _reference_sums(frames, weights, h):
    """Σ_b w(b) frames[b : b + h] in float64, the definition."""
    f = frames.astype(np.float64).reshape(len(frames), -1)
    wins = np.stack([f[b : b + h] for b in range(len(weights))])
    return np.einsum("bn,bjp->njp", weights.astype(np.float64), wins).reshape((weights.shape[1], h) + frames.shape[1:])


@pytest.mark.parametrize("levels", [(-1.0, 1.0), (-0.9013, 1.1092), (0.0, 255.0)])
def test_int8_sums_of_binary_frames_are_exact(levels):
    rng = np.random.default_rng(7)
    h, b = 6, 300
    frames = np.where(rng.random((b + h - 1, 4, 5)) < 0.3, levels[1], levels[0]).astype(np.float32)
    weights = rng.poisson(0.7, (b, 3)).astype(np.float32)
    weights[5, 0], weights[9, 2] = 127, -128  # int8 extremes
    corr = WindowCorrelator(3, h, (4, 5), method="int8", device="cpu")
    for a in range(0, b, 70):  # chunks with a shared tail, as a stream
        e = min(b, a + 70)
        corr.update(frames[a : e + h - 1], weights[a:e])
    np.testing.assert_allclose(corr.sums(), _reference_sums(frames, weights, h), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(corr.weight_sum, weights.sum(0))


def test_auto_falls_back_to_fft_for_graded_frames_rates_and_changing_levels():
    rng = np.random.default_rng(8)
    h, b = 5, 200
    binary = rng.choice(np.array([-1.0, 1.0], np.float32), (b + h - 1, 3, 3))
    graded = rng.standard_normal((b + h - 1, 3, 3)).astype(np.float32)
    counts = rng.poisson(1.0, (b, 2)).astype(np.float32)
    rates = rng.random((b, 2)).astype(np.float32)
    for frames, weights in ((binary, counts), (graded, counts), (binary, rates), (2 * binary + 3, counts)):
        corr = WindowCorrelator(2, h, (3, 3), method="auto", device="cpu")
        first, second = frames[: 100 + h - 1], 2 * frames[100:] + 1  # other levels in the second call
        corr.update(first, weights[:100])
        corr.update(second, weights[100:])
        ref = _reference_sums(first, weights[:100], h) + _reference_sums(second, weights[100:], h)
        np.testing.assert_allclose(corr.sums(), ref, atol=1e-4)


def test_int8_method_refuses_frames_it_cannot_represent_exactly():
    corr = WindowCorrelator(1, 3, (2, 2), method="int8", device="cpu")
    frames = np.tile(np.array([0.0, 0.5, 1.0], np.float32)[:, None, None], (4, 2, 2))
    with pytest.raises(ValueError, match="two values"):
        corr.update(frames[:5], np.ones((3, 1), np.float32))
    with pytest.raises(ValueError, match="integer weights"):
        corr.update(np.ones((5, 2, 2), np.float32), np.full((3, 1), 0.5, np.float32))


def test_two_level_codes_reconstruct_the_array_and_reject_a_third_value():
    rng = np.random.default_rng(9)
    x = np.where(rng.random((50, 7)) < 0.5, -0.25, 3.5).astype(np.float32)
    k, lo, hi = two_level_codes(x, levels=(0.0, 1.0))  # a wrong guess is corrected
    assert (lo, hi) == (-0.25, 3.5) and k.dtype == np.int8
    np.testing.assert_array_equal(lo + (hi - lo) * k, x)
    x[20, 3] = 1.0
    assert two_level_codes(x) is None
    x[:] = 2.0  # one level only
    k, lo, hi = two_level_codes(x)
    np.testing.assert_array_equal(lo + (hi - lo) * k, x)


def test_int8_sums_fold_before_int32_could_overflow(monkeypatch):
    monkeypatch.setattr(correlate, "_INT32_SUM_LIMIT", 150)  # fold after every couple of chunks
    rng = np.random.default_rng(10)
    h, b = 4, 240
    frames = rng.choice(np.array([-0.5, 2.0], np.float32), (b + h - 1, 3, 2))
    weights = rng.poisson(1.5, (b, 2)).astype(np.float32)
    corr = WindowCorrelator(2, h, (3, 2), method="int8", device="cpu")
    for a in range(0, b, 40):
        corr.update(frames[a : a + 40 + h - 1], weights[a : a + 40])
    np.testing.assert_allclose(corr.sums(), _reference_sums(frames, weights, h), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("karatsuba", [False, True])
@pytest.mark.parametrize("b,h", [(37, 6), (38, 7), (8, 2), (2, 5), (3, 40)])
def test_int8_lag_products_equal_the_integer_lagged_sum(b, h, karatsuba):
    rng = np.random.default_rng(11)
    lim = 64 if karatsuba else 128  # Karatsuba adds pairs of frames and pairs of weights: they must fit int8
    k = rng.integers(-lim, lim, (b + h - 1, 7)).astype(np.int8)
    w = rng.integers(-lim, lim, (b, 3)).astype(np.int8)
    wins = np.stack([k[t : t + h].astype(np.int64) for t in range(b)])  # (B, h, P)
    ref = np.einsum("bn,bjp->pnj", w.astype(np.int64), wins)
    parts = lag_product_parts(k, w, h, karatsuba)
    assert len(parts) == (3 if karatsuba else 1)
    np.testing.assert_array_equal(assemble_lag_product(parts, 3, h), ref)
    # linear: parts of two chunks summed, then assembled
    parts2 = lag_product_parts(k[::-1].copy(), w[::-1].copy(), h, karatsuba)
    summed = [p + q for p, q in zip(parts, parts2)]
    ref2 = np.einsum("bn,bjp->pnj", w[::-1].astype(np.int64), np.stack([k[::-1][t : t + h] for t in range(b)]))
    np.testing.assert_array_equal(assemble_lag_product(summed, 3, h), ref + ref2)


def _coded_recordings(t=900, hw=(6, 7), n=3, seed=4, levels=(0, 1), scale=2.0, offset=-1.0):
    """The same binary movie twice: stored as uint8 codes (ArrayFrames with scale/offset, as NWB keeps
    white noise) and as the float32 frames those codes stand for."""
    from retina_codec.recordings.frames import ArrayFrames

    rng = np.random.default_rng(seed)
    codes = np.asarray(levels, np.uint8)[rng.integers(0, len(levels), (t, *hw))]
    counts = rng.poisson(0.3, (t, n)).astype(np.float32)
    times = np.arange(t) / 100.0
    coded = Recording(ArrayFrames(codes, scale=scale, offset=offset), times, 100.0, counts,
                      intervals={"test": np.array([[1.0, 4.0], [5.0, 8.5]])})
    floats = Recording((codes * np.float32(scale) + np.float32(offset)).astype(np.float32), times, 100.0, counts,
                       intervals={"test": np.array([[1.0, 4.0], [5.0, 8.5]])})
    return coded, floats


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("split", [None, "test"])
def test_stored_uint8_codes_give_the_same_sta_without_float_frames(monkeypatch, normalize, split):
    coded, floats = _coded_recordings()
    kw = {"history": 5, "normalize": normalize, "batch_size": 128, "device": "cpu", "quiet": True, "split": split}
    ref = spike_triggered_average(floats, method="fft", dtype=torch.float64, **kw)
    calls = []
    real = correlate.WindowCorrelator.update_windows
    monkeypatch.setattr(correlate.WindowCorrelator, "update_windows",
                        lambda self, *a: calls.append(1) or real(self, *a))
    got = spike_triggered_average(coded, method="auto", **kw)
    assert not calls  # every chunk went through the stored codes
    # the float path z-scores frames in float32; the codes path maps the two levels in float64
    np.testing.assert_allclose(got.sta, ref.sta, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got.n_spikes, ref.n_spikes)


def test_stored_codes_that_are_not_binary_fall_back_to_float_frames():
    coded, floats = _coded_recordings(levels=(0, 128, 255), scale=1 / 255, offset=0.0)
    kw = {"history": 4, "normalize": True, "batch_size": 100, "device": "cpu", "quiet": True}
    ref = spike_triggered_average(floats, method="fft", dtype=torch.float64, **kw)
    got = spike_triggered_average(coded, method="auto", **kw)
    np.testing.assert_allclose(got.sta, ref.sta, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="int8"):
        spike_triggered_average(coded, method="int8", **kw)


def test_nwb_style_uint8_white_noise_matches_pyret():
    coded, floats = _coded_recordings(levels=(0, 255), scale=1 / 255, offset=0.0, t=600, hw=(5, 5), n=2)
    for rec in (coded, floats):  # pyret drops bins 0…nb and the last bin (see the alignment test above)
        rec.responses[:7] = 0
        rec.responses[-1:] = 0
    got = spike_triggered_average(coded, history=6, normalize=False, device="cpu", quiet=True)
    stim = floats.stimulus[0:len(floats.stimulus)]
    rng = np.random.default_rng(0)
    for c in range(2):
        spikes = _spike_times(floats, c, rng)
        ref, _ = filtertools.sta(floats.frame_times, stim, spikes, 6)
        np.testing.assert_allclose(got.sta[c], ref, rtol=1e-6, atol=1e-7)


def test_sta_of_a_lazy_nwb_white_noise_uses_its_uint8_codes(tmp_path, monkeypatch):
    from retina_codec.recordings.nwb import read_nwb, write_nwb

    coded, _ = _coded_recordings(t=400, hw=(5, 6), n=2)
    write_nwb(coded, tmp_path / "noise.nwb")
    back = read_nwb(tmp_path / "noise.nwb")
    back = back[0] if isinstance(back, list) else back
    assert type(back.stimulus).__name__ == "H5Frames" and back.stimulus.dtype == np.uint8
    calls = []
    real = correlate.WindowCorrelator.update_windows
    monkeypatch.setattr(correlate.WindowCorrelator, "update_windows",
                        lambda self, *a: calls.append(1) or real(self, *a))
    got = spike_triggered_average(back, history=5, batch_size=64, device="cpu", quiet=True)
    assert not calls  # read as uint8 codes from the file, never as float frames
    monkeypatch.undo()
    # the same lazy recording through its float frames (z-scored in float32) gives the same STA
    ref = spike_triggered_average(back, history=5, batch_size=64, method="fft", dtype=torch.float64,
                                  device="cpu", quiet=True)
    np.testing.assert_allclose(got.sta, ref.sta, rtol=1e-6, atol=1e-7)


def _recording(t=300, hw=(4, 5), n=3, kind="binary", seed=0):
    rng = np.random.default_rng(seed)
    if kind == "binary":
        stim = rng.choice(np.array([-1.0, 1.0], np.float32), size=(t,) + hw)
    else:
        stim = rng.standard_normal((t,) + hw).astype(np.float32)
    counts = rng.poisson(0.7, (t, n)).astype(np.float32)
    gaps = [[0.3, 1.1], [1.5, 1.9], [2.0, 0.95 * t / 100.0]]
    return Recording(stim, np.arange(t) / 100.0, 100.0, counts, intervals={"train": [[0, t / 100.0]], "test": gaps})


def _windows(rec, split, h, offset, normalize):
    """Bins of the split and their windows (oldest frame first), float64, by direct slicing."""
    bins = rec.window_bins(split, h, offset)
    mean, std = rec.normalization() if normalize else (0.0, 1.0)
    stim = (np.asarray(rec.stimulus[0 : rec.n_frames], np.float64) - mean) / std
    return bins, np.stack([stim[t - h - offset + 1 : t - offset + 1] for t in bins])


def _direct_sta(rec, split, h, offset, normalize):
    bins, wins = _windows(rec, split, h, offset, normalize)
    n = rec.responses[bins].astype(np.float64)
    return np.einsum("bn,bjyx->njyx", n, wins) / n.sum(0)[:, None, None, None]


@pytest.mark.parametrize("method", ["auto", "int8"])
def test_full_field_binary_flicker_sta_is_the_count_weighted_mean_window(method):
    """1×1 frames (full-field flicker) went through torch._int_mm with a size-1 dimension: garbage (~1e5)."""
    rec = _recording(t=400, hw=(1, 1), n=2)
    res = spike_triggered_average(rec, history=5, method=method, normalize=False, quiet=True)
    np.testing.assert_allclose(res.sta, _direct_sta(rec, None, 5, 1, False), atol=1e-9)


def test_int8_sums_of_one_frame_chunks_are_exact():
    """history 1 and one-bin chunks: a (1, P) frame matrix, the other size-1 case of the int8 GEMM."""
    rec = _recording()
    res = spike_triggered_average(rec, "test", history=1, batch_size=1, method="int8", quiet=True)
    np.testing.assert_allclose(res.sta, _direct_sta(rec, "test", 1, 1, True), atol=1e-6)
    corr = WindowCorrelator(2, 1, (3, 4), method="int8")
    frames = np.random.default_rng(1).choice(np.array([0.0, 1.0], np.float32), (1, 3, 4))
    corr.update(frames, np.array([[2.0, 1.0]], np.float32))
    np.testing.assert_array_equal(corr.sums()[:, 0], np.array([2.0, 1.0])[:, None, None] * frames[0])


@pytest.mark.parametrize("kind", ["binary", "gauss"])
@pytest.mark.parametrize("offset", [1, 0, 3])
def test_sta_is_independent_of_chunk_size_and_method_across_split_gaps(kind, offset):
    rec = _recording(kind=kind)
    ref = _direct_sta(rec, "test", 7, offset, True)
    for method, batch in (("auto", 5), ("fft", 64), ("direct", 4096)):
        res = spike_triggered_average(rec, "test", history=7, offset=offset, batch_size=batch, method=method,
                                      quiet=True)
        np.testing.assert_allclose(res.sta, ref, atol=1e-5)
        assert res.n_bins == len(rec.window_bins("test", 7, offset))


def test_stc_is_the_spike_weighted_covariance_about_the_sta_with_multi_spike_bins():
    """The docstring's ``Σ n x xᵀ / Σ n − sta staᵀ``, counts of several spikes per bin included."""
    rec = _recording(t=250, hw=(3, 2), n=2, kind="gauss")
    assert rec.responses.max() > 1
    res = spike_triggered_covariance(rec, "test", history=3, offset=2, batch_size=7, normalize=False, quiet=True)
    bins, wins = _windows(rec, "test", 3, 2, False)
    x = wins.reshape(len(bins), -1)
    for c in range(2):
        w = rec.responses[bins, c].astype(np.float64)
        mu = w @ x / w.sum()
        np.testing.assert_allclose(res.sta[c], mu, atol=1e-12)
        np.testing.assert_allclose(res.stc[c], ((x - mu).T * w) @ (x - mu) / w.sum(), atol=1e-12)
