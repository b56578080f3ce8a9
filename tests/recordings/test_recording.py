"""The Recording type: validation, intervals, normalisation and history windows (views, offsets)."""

from __future__ import annotations

import numpy as np
import pytest

from retina_codec.errors import (
    NonFiniteFramesError,
    NonFiniteResponsesError,
    RecordingError,
    ShapeMismatchError,
    TimestampError,
    UnknownIntervalError,
)
from retina_codec.recordings import ArrayFrames, ConcatFrames, Recording, history_windows
from retina_codec.sim import simulate_retina


def make_recording(t=200, h=5, w=7, n=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    stim = rng.random((t, h, w), dtype=np.float32)
    resp = rng.poisson(1.0, (t, n))
    times = np.arange(t) / 100.0
    intervals = kw.pop("intervals", {"train": [[0, 1.6]], "validation": [[1.6, 1.8]], "test": [[1.8, 2.0]]})
    return Recording(stim, times, 100.0, resp, intervals=intervals, **kw)


def test_window_of_bin_t_holds_frames_t_minus_h_to_t_minus_1_oldest_first():
    rec = make_recording()
    batch = rec.windows("test", history=10, normalize=False)
    stim = rec.stimulus[0:200]
    for i, t in enumerate(batch.bins):
        np.testing.assert_array_equal(batch.stimulus[i], stim[t - 10 : t])
        np.testing.assert_array_equal(batch.responses[i], rec.responses[t])


def test_offset_zero_includes_the_current_frame():
    rec = make_recording()
    batch = rec.windows(None, history=4, offset=0, normalize=False)
    assert batch.bins[0] == 3
    np.testing.assert_array_equal(batch.stimulus[0], rec.stimulus[0:4])
    np.testing.assert_array_equal(batch.stimulus[-1], rec.stimulus[196:200])


def test_first_bins_without_full_history_are_dropped():
    rec = make_recording()
    bins = rec.window_bins(None, history=40)
    assert bins[0] == 40 and bins[-1] == 199


def test_windows_are_views_not_copies():
    frames = np.arange(2 * 10 * 3 * 4, dtype=np.float32).reshape(20, 3, 4)
    view = history_windows(frames, 5)
    assert view.shape == (16, 5, 3, 4)
    assert np.shares_memory(view, frames)
    assert not view.flags.writeable
    rec = Recording(frames, np.arange(20) / 100, 100.0, np.zeros((20, 1)))
    batch = rec.windows(None, history=5, normalize=False)
    assert np.shares_memory(batch.stimulus, rec.stimulus.data)


def test_iter_windows_matches_windows_across_batches_and_non_contiguous_splits():
    rec = make_recording(intervals={"train": [[0.0, 0.7], [1.2, 2.0]]})
    full = history_windows(rec.stimulus[0:200], 10)
    got = list(rec.iter_windows("train", history=10, batch_size=16, normalize=False))
    bins = np.concatenate([b.bins for b in got])
    expected = rec.window_bins("train", history=10)
    np.testing.assert_array_equal(bins, expected)
    assert bins.min() == 10 and 70 not in bins and 120 in bins
    for b in got:
        np.testing.assert_array_equal(b.stimulus, full[b.bins - 10])
        assert len(b.bins) <= 16


def test_normalization_uses_train_split_and_z_scores_windows():
    rec = make_recording()
    train = rec.stimulus[0:160]
    mean, std = rec.normalization()
    assert mean == pytest.approx(train.mean(), rel=1e-6)
    assert std == pytest.approx(train.std(), rel=1e-5)
    batch = rec.windows("test", history=10)
    raw = rec.windows("test", history=10, normalize=False)
    np.testing.assert_allclose(batch.stimulus, (raw.stimulus - mean) / std, rtol=1e-5, atol=1e-6)


def test_uint8_frames_are_scaled_to_float32():
    data = np.array([[[0, 255]], [[128, 1]]], dtype=np.uint8)
    src = ArrayFrames(data, scale=1 / 255)
    out = src[0:2]
    assert out.dtype == np.float32 and out.shape == (2, 1, 2)
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0])


def test_concat_frames_reads_across_the_boundary():
    a = np.zeros((5, 2, 2), np.float32)
    b = np.ones((3, 2, 2), np.float32)
    cat = ConcatFrames([ArrayFrames(a), ArrayFrames(b)])
    assert cat.shape == (8, 2, 2)
    np.testing.assert_array_equal(cat[3:7][:, 0, 0], [0, 0, 1, 1])


def test_split_bins_by_name_and_unknown_name_is_a_clear_error():
    rec = make_recording()
    assert len(rec.split_bins("train")) == 160
    assert rec.split_bins("test")[0] == 180
    with pytest.raises(UnknownIntervalError, match="'tset'.*available: \\['test', 'train', 'validation'\\]"):
        rec.split_bins("tset")


def test_shape_mismatches_are_rejected_with_the_field_named():
    with pytest.raises(ShapeMismatchError, match="responses"):
        Recording(np.zeros((10, 2, 2)), np.arange(10) / 100, 100.0, np.zeros((9, 1)))
    with pytest.raises(ShapeMismatchError, match="frame_times"):
        Recording(np.zeros((10, 2, 2)), np.arange(9) / 100, 100.0, np.zeros((10, 1)))
    with pytest.raises(ShapeMismatchError, match="cell_ids"):
        Recording(np.zeros((10, 2, 2)), np.arange(10) / 100, 100.0, np.zeros((10, 2)), cell_ids=["a"])


def test_non_monotonic_times_and_nan_frames_are_rejected():
    times = np.arange(10) / 100
    times[5] = times[3]
    with pytest.raises(TimestampError, match="frame 5"):
        Recording(np.zeros((10, 2, 2)), times, 100.0, np.zeros((10, 1)))
    stim = np.zeros((10, 2, 2), np.float32)
    stim[7, 1, 0] = np.nan
    with pytest.raises(NonFiniteFramesError, match="frame 7"):
        Recording(stim, np.arange(10) / 100, 100.0, np.zeros((10, 1)))


def test_summary_reports_rates_in_hz_and_splits():
    rec = make_recording()
    s = rec.summary()
    assert s["stimulus_shape"] == (200, 5, 7)
    np.testing.assert_allclose(s["mean_rate_hz"], rec.responses.mean(0) * 100, rtol=1e-6)
    assert s["intervals"]["train"]["n_bins"] == 160
    assert rec.duration == pytest.approx(2.0)


def test_select_cells_by_id_and_index():
    rec = make_recording(cell_ids=["a", "b", "c"])
    sub = rec.select_cells(["c", 0])
    assert sub.cell_ids == ["c", "a"]
    np.testing.assert_array_equal(sub.responses, rec.responses[:, [2, 0]])


def test_head_interval_holds_exactly_the_first_window_bins_of_a_split_with_gaps():
    rec = make_recording(intervals={"test": [[0.10, 0.20], [0.50, 0.60]]})
    name = rec.head_interval("test", 13, history=4, offset=1)
    want = rec.window_bins("test", 4, 1)[:13]
    assert name == "test[:13]" and want[-1] >= 50  # reaches into the second run
    np.testing.assert_array_equal(rec.window_bins(name, 4, 1), want)
    assert rec.head_interval("test", 500, history=4, name="all_of_it") == "all_of_it"
    np.testing.assert_array_equal(rec.window_bins("all_of_it", 4, 1), rec.window_bins("test", 4, 1))
    with pytest.raises(ValueError, match="at least 1"):
        rec.head_interval("test", 0)


TINY = {"natural_duration_s": 2.0, "whitenoise_duration_s": 2.0, "calibration_duration_s": 1.0}


def _rec(t: int = 10, n: int = 1, **kw) -> Recording:
    """A tiny in-memory recording: frame t holds the value t everywhere (non-square 2x3 frames)."""
    stim = np.broadcast_to(np.arange(t, dtype=np.float32)[:, None, None], (t, 2, 3)).copy()
    kw = {"frame_times": np.arange(t) / 100.0, "frame_rate": 100.0,
          "responses": np.arange(t * n, dtype=np.float32).reshape(t, n), **kw}
    return Recording(stimulus=stim, **kw)


# ---- windows: explicit bins must keep stimulus, bins and responses aligned ---------------------------
@pytest.mark.parametrize("bins, offset", [([8, 12], 1), ([8, 9], -1)])
def test_explicit_bins_whose_window_leaves_the_movie_are_rejected(bins, offset):
    rec = _rec()
    with pytest.raises(ValueError, match="bins: bin"):
        for batch in rec.iter_windows(bins=np.array(bins), history=3, offset=offset, normalize=False):
            assert len(batch.stimulus) == len(batch.bins) == len(batch.responses)


def test_explicit_bins_inside_the_movie_give_windows_of_frames_t_minus_h_to_t_minus_1():
    rec = _rec()
    batches = list(rec.iter_windows(bins=np.array([3, 4, 9]), history=3, normalize=False))
    np.testing.assert_array_equal(np.concatenate([b.bins for b in batches]), [3, 4, 9])
    np.testing.assert_array_equal(np.concatenate([b.stimulus[:, :, 0, 0] for b in batches]),
                                  [[0, 1, 2], [1, 2, 3], [6, 7, 8]])
    np.testing.assert_array_equal(np.concatenate([b.responses for b in batches])[:, 0], [3, 4, 9])


@pytest.mark.parametrize("history", [0, -2])
def test_history_below_one_frame_is_a_clear_error(history):
    rec = _rec()
    with pytest.raises(ValueError, match="history: expected at least 1 frame"):
        rec.windows(history=history)
    with pytest.raises(ValueError, match="history: expected at least 1 frame"):
        next(rec.iter_windows(history=history))


# ---- Recording validation -------------------------------------------------------------------------------
def test_nan_or_infinite_responses_are_rejected_naming_bin_and_cell():
    resp = np.ones((10, 2), np.float32)
    resp[6, 1] = np.nan
    with pytest.raises(NonFiniteResponsesError, match=r"responses: bin 6, cell 1"):
        _rec(n=2, responses=resp)
    resp[6, 1] = np.inf
    with pytest.raises(NonFiniteResponsesError):
        _rec(n=2, responses=resp)


def test_non_finite_frame_times_are_a_timestamp_error_not_an_index_error():
    times = np.arange(10) / 100.0
    times[4] = np.nan
    with pytest.raises(TimestampError, match="frame_times: .*NaN"):
        _rec(frame_times=times)


def test_non_finite_intervals_are_rejected():
    with pytest.raises(TimestampError, match=r"intervals\['train'\]"):
        _rec(intervals={"train": [[np.nan, 0.05]]})


def test_unknown_response_unit_is_rejected_so_counts_are_never_taken_for_hz():
    with pytest.raises(RecordingError, match="response_unit: expected 'count' or 'Hz', found 'counts'"):
        _rec(response_unit="counts")


def test_select_cells_selects_the_ground_truth_of_the_same_cells():
    nat, _ = simulate_retina("small", seed=1, quiet=True, **TINY)
    gt = nat.ground_truth
    ln1, on0 = nat.cell_ids.index("ln01"), nat.cell_ids.index("on00")
    sub = nat.select_cells(["ln01", "on00"])
    sgt = sub.ground_truth
    assert sgt.true_rates.shape == sub.responses.shape
    np.testing.assert_array_equal(sgt.true_rates, gt.true_rates[:, [ln1, on0]])
    assert list(sgt.cell_types) == ["LN", "ON"]
    np.testing.assert_array_equal(sgt.pooling_weights, gt.pooling_weights[[ln1, on0]])
    np.testing.assert_array_equal(sgt.cell_centers, gt.cell_centers[[ln1, on0]])
    np.testing.assert_array_equal(sgt.ln_cells, [0])
    np.testing.assert_array_equal(sgt.ln_filters[0], gt.ln_filters[list(gt.ln_cells).index(ln1)])
    np.testing.assert_array_equal(sgt.subunit_positions, gt.subunit_positions)


def test_repeated_cell_ids_are_rejected_naming_them():
    from retina_codec.errors import RecordingError

    t = 10
    with pytest.raises(RecordingError, match="cell_ids.*'a'"):
        Recording(stimulus=np.zeros((t, 4, 4), np.float32), frame_times=np.arange(t) / 100.0, frame_rate=100.0,
                  responses=np.zeros((t, 3), np.float32), cell_ids=["a", "b", "a"])


def test_normalization_of_an_empty_train_split_warns_and_uses_every_frame():
    t = 20
    stim = np.arange(t * 4, dtype=np.float32).reshape(t, 2, 2)
    rec = Recording(stimulus=stim, frame_times=np.arange(t) / 100.0, frame_rate=100.0,
                    responses=np.zeros((t, 1), np.float32), intervals={"train": np.array([[5.0, 6.0]])})
    with pytest.warns(RuntimeWarning, match="no frames"):
        mean, std = rec.normalization("train")
    assert mean == pytest.approx(float(stim.mean())) and std == pytest.approx(float(stim.std()), rel=1e-6)
