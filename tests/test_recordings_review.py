"""Review findings in recordings/ and sim/: each test protects a fix for a defect shown by running code."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest
from _nwbio_helpers import new_nwbfile, optical_series, write_nwbfile
from pynwb.base import Images
from pynwb.image import GrayscaleImage, IndexSeries

from retina_codec.errors import NonFiniteResponsesError, RecordingError, ShapeMismatchError, TimestampError
from retina_codec.recordings import Recording, read_nwb, write_nwb
from retina_codec.sim import resolve_params, simulate_retina

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


# ---- NWB reading -------------------------------------------------------------------------------------------
def test_rate_series_with_nan_samples_is_refused_with_file_and_field(tmp_path):
    from pynwb import TimeSeries

    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((20, 3, 2), np.uint8)))
    data = np.ones((20, 2))
    data[5, 0] = np.nan
    f.create_processing_module("ophys", "rates").add(
        TimeSeries(name="dff", data=data, unit="Hz", starting_time=0.0, rate=100.0))
    path = write_nwbfile(f, tmp_path / "nan_rates.nwb")
    with pytest.raises(NonFiniteResponsesError, match=r"nan_rates.nwb: .*bin 5, cell 0"):
        read_nwb(path)


@pytest.mark.parametrize("index", [[3, 4], [3, 2], [3, 7]], ids=["short", "decreasing", "past_the_end"])
def test_malformed_spike_times_index_is_a_shape_error_naming_the_field(tmp_path, index):
    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((20, 3, 2), np.uint8)))
    f.add_unit(spike_times=[0.01, 0.02, 0.03])
    f.add_unit(spike_times=[0.05, 0.06])
    path = write_nwbfile(f, tmp_path / "units.nwb")
    with h5py.File(path, "a") as h:
        h["units/spike_times_index"][...] = index
    with pytest.raises(ShapeMismatchError, match="units.nwb: units/spike_times_index"):
        read_nwb(path)


def _index_series_file(path, with_order: bool):
    """IndexSeries into Images whose names do not sort in insertion order (img10 < img2 < img9 by name)."""
    f = new_nwbfile()
    names = ["img9", "img10", "img2"]  # image k is filled with the value k
    imgs = [GrayscaleImage(name=nm, data=np.full((3, 2), k, np.uint8), description="x by y")
            for k, nm in enumerate(names)]
    kw = {}
    if with_order:
        from pynwb.base import ImageReferences

        kw["order_of_images"] = ImageReferences(name="order_of_images", data=imgs)
    images = Images(name="images", images=imgs, description="flashes", **kw)
    f.add_stimulus_template(images)
    f.add_stimulus(IndexSeries(name="flashes", data=np.array([0, 1, 2, 0], np.uint32), indexed_images=images,
                               unit="N/A", starting_time=0.0, rate=10.0))
    f.add_unit(spike_times=[0.05])
    return write_nwbfile(f, path)


def test_index_series_follows_order_of_images(tmp_path):
    path = _index_series_file(tmp_path / "ordered.nwb", with_order=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with read_nwb(path) as rec:
            np.testing.assert_array_equal(rec.stimulus[:][:, 0, 0], [0, 1, 2, 0])
            assert rec.frame_shape == (2, 3)


def test_index_series_into_images_without_order_warns_that_the_order_is_undefined(tmp_path):
    path = _index_series_file(tmp_path / "unordered.nwb", with_order=False)
    with pytest.warns(RuntimeWarning, match="order_of_images"):
        rec = read_nwb(path)
    rec.close()


# ---- NWB round trips -----------------------------------------------------------------------------------------
def test_irregular_frame_times_round_trip_keeps_frame_rate_and_last_bin_spikes(tmp_path):
    rng = np.random.default_rng(0)
    t = 30
    times = np.cumsum(rng.uniform(0.0095, 0.0105, t))
    resp = np.zeros((t, 1), np.float32)
    resp[5], resp[-1] = 1, 3
    rec = Recording(stimulus=rng.random((t, 2, 3)).astype(np.float32), frame_times=times, frame_rate=50.0,
                    responses=resp)
    write_nwb(rec, tmp_path / "irregular.nwb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with read_nwb(tmp_path / "irregular.nwb") as back:
            assert back.frame_rate == 50.0
            np.testing.assert_array_equal(back.frame_times, times)
            np.testing.assert_array_equal(back.responses, resp)


def test_recording_without_spikes_round_trips_as_zero_counts(tmp_path):
    rec = _rec(n=2, responses=np.zeros((10, 2), np.float32))
    write_nwb(rec, tmp_path / "silent.nwb")
    with read_nwb(tmp_path / "silent.nwb") as back:
        assert back.response_unit == "count"
        np.testing.assert_array_equal(back.responses, np.zeros((10, 2)))


def test_foreign_file_whose_units_have_no_spikes_is_still_an_error(tmp_path):
    from retina_codec.errors import EmptyUnitsError

    rec = _rec(n=1, responses=np.zeros((10, 1), np.float32))
    write_nwb(rec, tmp_path / "silent.nwb")
    shutil.copy(tmp_path / "silent.nwb", tmp_path / "foreign.nwb")
    with h5py.File(tmp_path / "foreign.nwb", "a") as h:  # without retina-codec's bookkeeping
        del h["processing/retina_codec"]
    with pytest.raises(EmptyUnitsError, match="foreign.nwb: units/spike_times"):
        read_nwb(tmp_path / "foreign.nwb")


# ---- simulator settings ----------------------------------------------------------------------------------------
def test_simulator_without_ln_cells_runs_and_has_empty_ln_ground_truth():
    nat, wn = simulate_retina("small", seed=3, quiet=True, n_ln=0, **TINY)
    for rec in (nat, wn):
        gt = rec.ground_truth
        assert "LN" not in set(gt.cell_types) and gt.ln_cells.shape == (0,)
        assert gt.ln_filters.shape[0] == 0 and np.isfinite(rec.responses).all()


def test_ln_history_too_short_for_the_kernels_is_refused_before_simulating():
    with pytest.raises(ValueError, match="ln_history"):
        resolve_params("small", ln_history=20)


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
