"""The simulated retina: determinism, shapes, rates, causality, and the ground truth it promises.

Generated once per module with the ``small`` preset (90 s natural scenes + 240 s white noise).
"""

import numpy as np
import pytest

from retina_codec.recordings import ArrayFrames
from retina_codec.sim import Circuit, make_layout, resolve_params, simulate_retina
from retina_codec.sim.kernels import biphasic_kernel, to_window_order

HISTORY = 40
TINY = {"natural_duration_s": 8.0, "whitenoise_duration_s": 6.0, "calibration_duration_s": 4.0}


@pytest.fixture(scope="module")
def recs():
    return simulate_retina("small", seed=0, quiet=True)


@pytest.fixture(scope="module")
def nat(recs):
    return recs[0]


@pytest.fixture(scope="module")
def wn(recs):
    return recs[1]


def footprint_luminance(rec, cell):
    """(T,) contrast seen by the centres of the subunits a cell pools, weighted by its pooling weights."""
    gt = rec.ground_truth
    sigma = gt.params["settings"]["bipolar_center_sigma"]
    w = np.abs(gt.pooling_weights[cell])
    pos, w = gt.subunit_positions[w > 0], w[w > 0]
    grid = np.arange(rec.frame_shape[0], dtype=np.float64)
    g = np.exp(-((grid[None, :, None] - pos[:, 0, None, None]) ** 2
                 + (grid[None, None, :] - pos[:, 1, None, None]) ** 2) / (2 * sigma**2))
    fp = (w[:, None, None] * g / g.sum((1, 2), keepdims=True)).sum(0)
    lum = rec.stimulus.data.reshape(rec.n_frames, -1).astype(np.float32) @ (fp / fp.sum()).ravel()
    return lum * rec.stimulus.scale * 2 - 1


def footprint_sta(rec, cell, lags=HISTORY):
    """Spike-triggered average of :func:`footprint_luminance`, by lag 1..lags."""
    lum = footprint_luminance(rec, cell)
    c = rec.responses[lags:, cell].astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(lum[:-1], lags)  # row i: frames i .. i + lags - 1
    return (c @ windows / c.sum())[::-1]  # bin t = i + lags sees frames t - lags .. t - 1


def crop_stas(rec, cells, half=7):
    """Plain STAs over history windows (normalised stimulus), each in a (2 half + 1)^2 crop around its cell.

    Returns a list of ``(sta (HISTORY, h, w) in window order, (row slice, col slice))``, one per cell.
    """
    crops = []
    for cell in cells:
        y, x = np.round(rec.ground_truth.cell_centers[cell]).astype(int)
        crops.append((slice(y - half, y + half + 1), slice(x - half, x + half + 1)))
    sums = [np.zeros(HISTORY * (2 * half + 1) ** 2) for _ in cells]
    n = np.zeros(len(cells))
    for batch in rec.iter_windows(None, history=HISTORY, offset=1, batch_size=2048, normalize=True):
        for i, (cell, (ys, xs)) in enumerate(zip(cells, crops)):
            stim = batch.stimulus[:, :, ys, xs].reshape(len(batch.bins), -1)
            r = batch.responses[:, cell].astype(np.float64)
            sums[i] += r @ stim
            n[i] += r.sum()
    return [(s.reshape(HISTORY, 2 * half + 1, 2 * half + 1) / k, crop) for s, k, crop in zip(sums, n, crops)]


# ---- determinism and structure ------------------------------------------------------------------------
def test_same_seed_gives_identical_recordings_and_other_seed_differs():
    a = simulate_retina("small", seed=5, quiet=True, **TINY)
    b = simulate_retina("small", seed=5, quiet=True, **TINY)
    c = simulate_retina("small", seed=6, quiet=True, **TINY)
    for ra, rb, rc in zip(a, b, c):
        np.testing.assert_array_equal(ra.stimulus.data, rb.stimulus.data)
        np.testing.assert_array_equal(ra.responses, rb.responses)
        np.testing.assert_array_equal(ra.ground_truth.true_rates, rb.ground_truth.true_rates)
        np.testing.assert_array_equal(ra.ground_truth.bipolar_traces, rb.ground_truth.bipolar_traces)
        np.testing.assert_array_equal(ra.ground_truth.cell_centers, rb.ground_truth.cell_centers)
        assert not np.array_equal(ra.stimulus.data, rc.stimulus.data)
        assert not np.array_equal(ra.ground_truth.true_rates, rc.ground_truth.true_rates)
    assert not np.array_equal(a[0].ground_truth.cell_centers, c[0].ground_truth.cell_centers)


def test_recordings_are_naturalscene_then_whitenoise_on_one_clock(recs):
    nat, wn = recs
    assert [r.stimulus_name for r in recs] == ["naturalscene", "whitenoise"]
    assert nat.cell_ids == wn.cell_ids and len(nat.cell_ids) >= 16
    assert nat.frame_times[0] == 0.0
    assert wn.frame_times[0] == pytest.approx(nat.frame_times[-1] + 0.01)
    for r in recs:
        assert r.frame_rate == 100.0 and r.response_unit == "count"
        assert isinstance(r.stimulus, ArrayFrames) and r.stimulus.data.dtype == np.uint8
        assert r.stimulus.shape[1:] == (50, 50) and r.stimulus.scale == pytest.approx(1 / 255)
        frames = r.stimulus[0:100]
        assert frames.dtype == np.float32 and frames.min() >= 0 and frames.max() <= 1
        assert r.responses.dtype == np.float32 and np.all(r.responses == np.round(r.responses))
        np.testing.assert_allclose(np.diff(r.frame_times), 0.01, atol=1e-9)
        assert r.provenance["simulator"] == "retina_codec.sim" and r.provenance["preset"] == "small"
        assert r.provenance["seed"] == 0 and "version" in r.provenance
        # contiguous 80/10/10 splits of the recording's own span
        t0, dur = r.frame_times[0], r.duration
        for name, (lo, hi) in {"train": (0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}.items():
            np.testing.assert_allclose(r.intervals[name], [[t0 + lo * dur, t0 + hi * dur]], atol=1e-6)
        assert sum(len(r.split_bins(s)) for s in ("train", "validation", "test")) == r.n_frames


def test_ground_truth_fields_have_documented_shapes(recs):
    for r in recs:
        gt = r.ground_truth
        t, n = r.n_frames, r.n_cells
        s, a = len(gt.subunit_positions), len(gt.amacrine_positions)
        assert gt.true_rates.shape == (t, n) and gt.true_rates.dtype == np.float32
        assert gt.bipolar_traces.shape == (t, s) and gt.amacrine_traces.shape == (t, a)
        assert gt.pooling_weights.shape == (n, s) and gt.amacrine_weights.shape == (s, a)
        assert gt.amacrine_pooling.shape == (a, s)
        assert set(gt.subunit_polarity.tolist()) == {-1, 1}
        assert {"ON", "OFF", "ON-OFF", "LN"} <= set(gt.cell_types.tolist())
        assert gt.ln_filters.shape == (len(gt.ln_cells), HISTORY, 50, 50)
        assert np.all(gt.pooling_weights[gt.ln_cells] == 0)
        assert np.all(gt.bipolar_traces >= 0)  # rectified
        # RF centres inside the frame with room for the receptive field
        assert np.all((gt.cell_centers > 8) & (gt.cell_centers < 42))
    np.testing.assert_array_equal(recs[0].ground_truth.pooling_weights, recs[1].ground_truth.pooling_weights)


def test_mean_rates_lie_between_2_and_40_hz_for_every_cell_on_both_stimuli(recs):
    for r in recs:
        observed = r.responses.mean(0) * r.frame_rate
        true = r.ground_truth.true_rates.mean(0)
        assert np.all((observed > 2) & (observed < 40)), (r.stimulus_name, observed)
        assert np.all((true > 2) & (true < 40)), (r.stimulus_name, true)


def test_unknown_setting_is_rejected():
    with pytest.raises(ValueError, match="amacrine_strenght"):
        simulate_retina("small", amacrine_strenght=0.0)
    with pytest.raises(ValueError, match="preset"):
        simulate_retina("huge")


# ---- causality ----------------------------------------------------------------------------------------
def test_rate_in_bin_t_depends_only_on_frames_before_t():
    p = resolve_params("small")
    layout = make_layout(p, np.random.default_rng(0))
    circuit = Circuit(layout, p, chunk=64)  # several chunks: the filter state must carry over
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (300, 50, 50), dtype=np.uint8)
    b = a.copy()
    k = 150
    b[k:] = 255 - b[k:]  # change frame k and everything after it
    out_a, out_b = circuit.run(a, np.ones(2), quiet=True), circuit.run(b, np.ones(2), quiet=True)
    for name in ("generator", "bipolar", "amacrine"):
        xa, xb = getattr(out_a, name), getattr(out_b, name)
        np.testing.assert_array_equal(xa[: k + 1], xb[: k + 1])  # bin k sees frames <= k - 1 only
        assert not np.allclose(xa[k + 1 :], xb[k + 1 :])


def test_all_pathways_fit_a_40_frame_history_window():
    p = resolve_params("small")
    k = biphasic_kernel(p.bipolar_lags, p.bipolar_order, p.bipolar_tau_fast, p.bipolar_tau_slow,
                        p.bipolar_biphasic)
    assert k[0] == 0 and k[-1] == pytest.approx(0, abs=1e-12)
    # longest path: bipolar kernel then amacrine kernel (both start at lag >= 1)
    assert (p.bipolar_lags - 1) + (p.amacrine_lags - 1) <= 36
    w = to_window_order(k, HISTORY)
    assert w[-1] == k[1] and w[HISTORY - 5] == k[5]


# ---- receptive fields ---------------------------------------------------------------------------------
def test_ln_cells_white_noise_sta_recovers_their_filter(wn):
    gt = wn.ground_truth
    for j, (cell, (sta, (ys, xs))) in enumerate(zip(gt.ln_cells, crop_stas(wn, gt.ln_cells))):
        true = gt.ln_filters[j][:, ys, xs]
        assert np.abs(true).max() > 0.99 * np.abs(gt.ln_filters[j]).max()  # the crop holds the peak
        support = np.abs(true) >= 0.1 * np.abs(true).max()
        corr = np.corrcoef(sta[support], true[support])[0, 1]
        assert corr >= 0.95, (cell, corr)
        # the window convention matters: the filter moved by one frame fits worse
        for shift in (-1, 1):
            shifted = np.roll(true, shift, axis=0)
            assert np.corrcoef(sta[support], shifted[support])[0, 1] < corr - 0.03


def test_ln_rates_are_the_stored_filter_applied_to_the_history_window(wn):
    """true_rate[t] = gain * softplus(beta (z - theta)) / beta, z = (ln_filter . c(window t) - mean) / std."""
    gt = wn.ground_truth
    cal = gt.params["calibration"]
    bins = np.arange(HISTORY, HISTORY + 300)
    batch = next(wn.iter_windows(bins=bins, history=HISTORY, offset=1, batch_size=300, normalize=False))
    contrast = batch.stimulus.reshape(len(bins), -1) * 2 - 1
    for j, cell in enumerate(gt.ln_cells):
        g = contrast @ gt.ln_filters[j].ravel().astype(np.float64)
        z = (g - cal["gen_mean"][cell]) / cal["gen_std"][cell]
        beta = cal["beta"]
        rate = cal["gain"][cell] * np.logaddexp(0, beta * (z - cal["threshold"][cell])) / beta
        np.testing.assert_allclose(gt.true_rates[bins, cell], rate, rtol=1e-3, atol=1e-3)


def test_on_cells_sta_centre_is_bright_and_off_cells_dark_at_the_peak(wn):
    gt = wn.ground_truth
    for kind, sign in (("ON", 1), ("OFF", -1)):
        for cell in gt.cells_of_type(kind):
            sta = footprint_sta(wn, cell)
            peak = sta[np.argmax(np.abs(sta[:15]))]
            assert np.sign(peak) == sign, (kind, cell, sta[:15])


def test_on_off_cell_rf_flips_polarity_with_the_pathway_that_drives_it(wn):
    """Spikes fired while the ON pathway dominates follow brightening, those while OFF dominates darkening.

    The STA of each set of bins is taken relative to the average stimulus of those bins (selecting bins
    by pathway selects stimuli too), at the bipolar kernel's peak lag.
    """
    gt = wn.ground_truth
    pol = gt.subunit_polarity
    lag = int(np.argmax(gt.params["kernels_by_lag"]["bipolar_on"]))
    cells = gt.cells_of_type("ON-OFF")
    assert len(cells)
    for cell in cells:
        w = gt.pooling_weights[cell]
        on_in = gt.bipolar_traces[:, pol > 0] @ w[pol > 0]
        off_in = gt.bipolar_traces[:, pol < 0] @ w[pol < 0]
        lum = footprint_luminance(wn, cell)
        seen = lum[HISTORY - lag : wn.n_frames - lag]  # contrast `lag` frames before each bin
        counts = wn.responses[HISTORY:, cell].astype(np.float64)
        signed = {}
        for name, mask in (("on", on_in[HISTORY:] > off_in[HISTORY:]), ("off", on_in[HISTORY:] <= off_in[HISTORY:])):
            c = counts * mask
            sta = c @ seen / c.sum() - seen[mask].mean()
            signed[name] = sta / (seen.std() / np.sqrt(c.sum()))  # in standard errors
        assert signed["on"] > 3 and signed["off"] < -3, (cell, signed)
    # unconditioned, the two pathways largely cancel: the ON-OFF centre is weaker than ON and OFF centres
    def peak(cell):
        return abs(footprint_sta(wn, cell)[lag - 1])
    onoff = np.mean([peak(c) for c in cells])
    single = np.mean([peak(c) for t in ("ON", "OFF") for c in gt.cells_of_type(t)])
    assert onoff < 0.6 * single


# ---- amacrine inhibition ------------------------------------------------------------------------------
def test_turning_amacrine_inhibition_off_changes_the_rates_but_not_the_stimulus():
    with_am = simulate_retina("small", seed=2, quiet=True, **TINY)
    without = simulate_retina("small", seed=2, quiet=True, amacrine_strength=0.0, **TINY)
    for a, b in zip(with_am, without):
        np.testing.assert_array_equal(a.stimulus.data, b.stimulus.data)
        gt_a, gt_b = a.ground_truth, b.ground_truth
        circuit = gt_a.cell_types != "LN"
        ra, rb = gt_a.true_rates[:, circuit], gt_b.true_rates[:, circuit]
        assert np.mean(np.abs(ra - rb)) > 0.2 * np.mean(ra), a.stimulus_name
        # LN cells bypass the circuit: unchanged
        np.testing.assert_allclose(gt_a.true_rates[:, ~circuit], gt_b.true_rates[:, ~circuit], rtol=1e-5)
        assert gt_b.bipolar_traces.mean() > gt_a.bipolar_traces.mean()  # inhibition lowers terminal output
        assert np.all(gt_b.amacrine_weights == 0)


def test_amacrine_activity_follows_the_stimulus_history(nat):
    am = nat.ground_truth.amacrine_traces
    assert am.std(0).min() > 0.05  # not a constant offset
    saccades = np.asarray(nat.ground_truth.params["stimulus"]["saccade_frames"])
    saccades = saccades[(saccades > 50) & (saccades < nat.n_frames - 20)]
    # pooled amacrine activity rises a few frames after each saccade's contrast step
    mean_am = am.mean(1)
    before = mean_am[saccades - 1]
    after = np.max(np.stack([mean_am[saccades + d] for d in range(3, 12)]), axis=0)
    assert np.mean(after > before) > 0.8


# ---- natural movie ------------------------------------------------------------------------------------
def test_natural_movie_saccades_about_once_a_second_with_jitter_between(nat):
    frames = nat.stimulus.data.astype(np.int16)
    diff = np.abs(np.diff(frames, axis=0)).mean((1, 2))  # diff[i]: frame i -> i + 1
    saccades = np.asarray(nat.ground_truth.params["stimulus"]["saccade_frames"])
    assert 0.7 < len(saccades) / nat.duration < 1.3
    jumps = diff[saccades - 1]
    others = np.delete(diff, saccades - 1)
    assert np.median(jumps) > 2 * np.percentile(others, 99)
    # the largest frame-to-frame changes, found in the frames alone, are (nearly all) the saccades
    largest = np.argsort(diff)[::-1][: len(saccades)] + 1
    assert np.isin(largest, saccades).mean() > 0.85
    # fixational jitter: between saccades the image moves in many frames, by small amounts
    moving = others > 0
    assert 0.3 < moving.mean() < 0.9
    assert nat.ground_truth.params["stimulus"]["photos"] == ["china.jpg", "flower.jpg"]


def test_white_noise_is_binary_and_balanced(wn):
    data = wn.stimulus.data[:2000]
    assert set(np.unique(data).tolist()) == {0, 255}
    assert abs((data == 255).mean() - 0.5) < 0.01
    # independent pixels: neighbouring pixels uncorrelated
    x = data.astype(np.float32)
    assert abs(np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1]) < 0.02


# ---- command line -------------------------------------------------------------------------------------
def test_simulate_command_writes_both_recordings_to_one_nwb(tmp_path, monkeypatch):
    from retina_codec.cli.main import main
    from retina_codec.recordings.nwb import read_nwb
    from retina_codec.sim import presets

    monkeypatch.setitem(presets.PRESETS, "small", {**presets.PRESETS["small"], **TINY})
    out = tmp_path / "rec.nwb"
    assert main(["-q", "simulate", "--out", str(out), "--preset", "small", "--seed", "4"]) == 0
    expected = simulate_retina("small", seed=4, quiet=True)
    for rec in expected:
        back = read_nwb(out, stimulus=rec.stimulus_name)
        try:
            np.testing.assert_array_equal(back.responses, rec.responses)
            np.testing.assert_allclose(back.frame_times, rec.frame_times)
            np.testing.assert_allclose(back.stimulus[0:50], rec.stimulus[0:50], atol=1e-6)
            np.testing.assert_allclose(back.ground_truth.true_rates, rec.ground_truth.true_rates, rtol=1e-6)
            assert back.cell_ids == rec.cell_ids
        finally:
            close = getattr(back, "close", None)
            if close:
                close()
    assert main(["-q", "simulate", "--out", str(out), "--preset", "small"]) == 2  # exists, no --overwrite
