"""Movie segments: separately presented movies joined in one Recording never share a history window."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest
from _nwbio_helpers import write_lab_h5
from pynwb import NWBHDF5IO, TimeSeries

from retina_codec.errors import RecordingError
from retina_codec.recordings import Recording, read_lab_h5, read_nwb, write_nwb
from retina_codec.recordings.inspect import describe, format_description
from retina_codec.rf.sta import spike_triggered_average

H = 10  # history (frames) used with the lab file


def _rec(t: int = 10, n: int = 2, **kw) -> Recording:
    """In-memory recording whose frame t holds the value t everywhere (2x3 frames)."""
    stim = np.broadcast_to(np.arange(t, dtype=np.float32)[:, None, None], (t, 2, 3)).copy()
    kw = {"frame_times": np.arange(t) / 100.0, "frame_rate": 100.0,
          "responses": np.arange(t * n, dtype=np.float32).reshape(t, n), **kw}
    return Recording(stimulus=stim, **kw)


def _reference_window_bins(t: int, starts: list[int], history: int, offset: int) -> list[int]:
    """Brute force: bin b is valid when every frame of its window lies in the segment holding b."""
    seg = np.searchsorted(starts, np.arange(t), side="right") - 1  # segment of each frame
    out = []
    for b in range(t):
        frames = np.arange(b - history - offset + 1, b - offset + 1)
        if frames.min() >= 0 and frames.max() < t and np.all(seg[frames] == seg[b]):
            out.append(b)
    return out


@pytest.fixture
def lab_file(tmp_path):
    path = tmp_path / "naturalscene.h5"
    return path, write_lab_h5(path, n_train=200, n_test=60)


def test_lab_test_movie_first_history_bins_have_no_window_and_windows_hold_test_frames_only(lab_file):
    path, data = lab_file
    with read_lab_h5(path) as rec:
        np.testing.assert_array_equal(rec.window_bins("test", H), np.arange(200 + H, 260))
        np.testing.assert_array_equal(rec.segment_starts, [0, 200])
        np.testing.assert_array_equal(rec.window_bins("train", H), np.arange(H, 180))  # train unchanged
        test_stim = data["test"]["stimulus"].astype(np.float32)
        batches = list(rec.iter_windows("test", history=H, batch_size=16, normalize=False))
        bins = np.concatenate([b.bins for b in batches])
        np.testing.assert_array_equal(bins, np.arange(210, 260))
        windows = np.concatenate([b.stimulus for b in batches])
        expected = np.stack([test_stim[b - 200 - H : b - 200] for b in bins])  # frames t-h … t-1 of test
        np.testing.assert_array_equal(windows, expected)
        np.testing.assert_array_equal(rec.windows("test", H, normalize=False).stimulus, expected)
        # head_interval and the whole-recording windows follow window_bins
        np.testing.assert_array_equal(rec.split_bins(rec.head_interval("test", 5, history=H)), np.arange(210, 215))
        assert 200 not in rec.window_bins(None, H) and 209 not in rec.window_bins(None, H)
        with pytest.raises(ValueError, match="2 movie segments"):
            rec.windows(None, H)
        # callers that go through window_bins (here the STA) skip the first test bins too
        assert spike_triggered_average(rec, split="test", history=H, quiet=True).n_bins == 50


def test_explicit_bins_whose_window_crosses_into_the_previous_movie_are_rejected(lab_file):
    path, _ = lab_file
    with read_lab_h5(path) as rec:
        with pytest.raises(ValueError, match=r"window of bin 204 .*segment \(frames 200\.\.259\)"):
            list(rec.iter_windows(bins=np.array([204, 205]), history=H, normalize=False))


def test_inspect_reports_the_lab_movie_segments(lab_file):
    path, _ = lab_file
    desc = describe(path)
    assert desc["recordings"][0]["segment_starts"] == [0, 200]
    assert "movie segments: 2, starting at frames 0, 200" in format_description(desc)


def test_nwb_round_trip_keeps_segments(lab_file, tmp_path):
    path, _ = lab_file
    out = tmp_path / "lab.nwb"
    with read_lab_h5(path) as lab:
        write_nwb(lab, out)
        with read_nwb(out) as rec:
            np.testing.assert_array_equal(rec.segment_starts, [0, 200])
            np.testing.assert_array_equal(rec.window_bins("test", H), lab.window_bins("test", H))


def test_nwb_several_recordings_keep_their_own_segments(tmp_path):
    a = _rec(20, stimulus_name="a", segment_starts=[0, 8, 15])
    b = _rec(6, stimulus_name="b", frame_times=1.0 + np.arange(6) / 100.0)
    write_nwb([a, b], tmp_path / "ab.nwb")
    with read_nwb(tmp_path / "ab.nwb", stimulus="a") as ra, read_nwb(tmp_path / "ab.nwb", stimulus="b") as rb:
        np.testing.assert_array_equal(ra.segment_starts, [0, 8, 15])
        np.testing.assert_array_equal(rb.segment_starts, [0])


def test_nwb_file_without_the_segment_column_reads_as_one_movie(tmp_path):
    out = tmp_path / "old.nwb"
    write_nwb(_rec(20, segment_starts=[0, 8]), out)
    with h5py.File(out, "r+") as f:  # what files written before segments looked like
        table = f["processing/retina_codec/recordings"]
        del table["segment_starts"], table["segment_starts_index"]
        table.attrs["colnames"] = [c for c in table.attrs["colnames"] if c != "segment_starts"]
    with read_nwb(out) as rec:
        np.testing.assert_array_equal(rec.segment_starts, [0])
        np.testing.assert_array_equal(rec.window_bins(None, 3), np.arange(3, 20))


def test_nwb_rates_covering_part_of_the_movie_shift_the_segments(tmp_path):
    out = tmp_path / "rates.nwb"
    write_nwb(_rec(20, response_unit="Hz", segment_starts=[0, 8, 15]), out)
    with NWBHDF5IO(str(out), mode="a") as io:  # a second rate series covering frames 10..19 only
        nwbfile = io.read()
        nwbfile.processing["responses"].add(TimeSeries(name="late", data=np.ones((10, 2)), unit="Hz",
                                                       starting_time=0.10, rate=100.0))
        io.write(nwbfile)
    with pytest.warns(RuntimeWarning, match="covers frames 10..19"), read_nwb(out, responses="late") as rec:
        np.testing.assert_array_equal(rec.segment_starts, [0, 5])
        np.testing.assert_array_equal(rec.window_bins(None, 2), [2, 3, 4, 7, 8, 9])


@pytest.mark.parametrize("history, offset", [(3, 1), (3, 0), (3, -1), (2, -3), (1, 2), (4, 3)])
def test_window_bins_match_a_brute_force_reference_also_for_negative_offsets(history, offset):
    rec = _rec(20, segment_starts=[0, 6, 13])
    got = rec.window_bins(None, history, offset)
    np.testing.assert_array_equal(got, _reference_window_bins(20, [0, 6, 13], history, offset))
    frames = np.concatenate([b.stimulus[:, :, 0, 0] for b in rec.iter_windows(history=history, offset=offset,
                                                                               normalize=False)])
    np.testing.assert_array_equal(frames, [np.arange(b - history - offset + 1, b - offset + 1) for b in got])


def test_negative_offset_drops_the_last_bins_of_each_segment():
    rec = _rec(10, segment_starts=[0, 5])
    # history 3, offset -1: bin t sees frames t-1, t, t+1, all in t's segment
    np.testing.assert_array_equal(rec.window_bins(None, 3, -1), [1, 2, 3, 6, 7, 8])
    with pytest.raises(ValueError, match="window of bin 4"):
        list(rec.iter_windows(bins=np.array([3, 4]), history=3, offset=-1, normalize=False))


@pytest.mark.parametrize("starts, match", [
    ([], "non-empty"), ([[0, 5]], "non-empty"), ([1, 5], "start at frame 0"), ([0, 5, 5], "strictly increasing"),
    ([0, 7, 3], "strictly increasing"), ([0, 10], "past the movie's last frame 9"), ([0, 2.5], "integer"),
    (["0"], "integer"),
])
def test_invalid_segment_starts_are_clear_errors(starts, match):
    with pytest.raises(RecordingError, match=f"segment_starts: .*{match}"):
        _rec(10, segment_starts=starts)


def test_default_is_one_segment_with_unchanged_windows():
    rec = _rec(12)
    np.testing.assert_array_equal(rec.segment_starts, [0])
    np.testing.assert_array_equal(rec.segments, [[0, 12]])
    for history, offset in itertools.product((1, 3, 5), (-2, 0, 1, 3)):
        bins = np.arange(12)
        old = bins[(bins >= history + offset - 1) & (bins - offset < 12)]
        np.testing.assert_array_equal(rec.window_bins(None, history, offset), old)
    assert _rec(8, segment_starts=np.array([0.0, 4.0])).segment_starts.dtype == np.int64  # integral floats ok


def test_select_cells_keeps_segments():
    rec = _rec(10, n=3, segment_starts=[0, 4])
    sub = rec.select_cells([2, 0])
    np.testing.assert_array_equal(sub.segment_starts, [0, 4])
    np.testing.assert_array_equal(sub.window_bins(None, 2), rec.window_bins(None, 2))
