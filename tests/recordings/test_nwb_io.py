"""NWB reading and writing: round trips, the (frame, x, y) convention, pynwb mocks, splits, laziness."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from _nwbio_helpers import (
    huge_stimulus_nwb,
    natural_recording,
    new_nwbfile,
    optical_series,
    whitenoise_recording,
    write_nwbfile,
)
from hdmf.common import DynamicTableRegion
from nwbinspector import Importance, inspect_nwbfile
from pynwb import NWBHDF5IO, TimeSeries
from pynwb.base import Images
from pynwb.epoch import TimeIntervals
from pynwb.image import GrayscaleImage, IndexSeries
from pynwb.misc import Units
from pynwb.testing.mock.base import mock_TimeSeries
from pynwb.testing.mock.ecephys import mock_Units
from pynwb.testing.mock.file import mock_NWBFile
from pynwb.testing.mock.ophys import mock_PlaneSegmentation, mock_RoiResponseSeries

from retina_codec.errors import (
    AmbiguousSeriesError,
    MissingStimulusError,
    NonFiniteResponsesError,
    OutputExistsError,
    RecordingError,
    ShapeMismatchError,
    TimestampError,
    UnknownIntervalError,
)
from retina_codec.recordings import H5Frames, Recording, read_nwb, write_nwb
from retina_codec.recordings.binning import frame_edges


@pytest.fixture(scope="module")
def nwbio_two_stimuli(tmp_path_factory) -> tuple[Path, Recording, Recording]:
    """A file with a uint8 natural movie (with ground truth) and a float32 white noise, one Units table."""
    nat, wn = natural_recording(), whitenoise_recording()
    path = write_nwb([wn, nat], tmp_path_factory.mktemp("nwbio") / "two.nwb")
    return path, nat, wn


def _assert_same_ground_truth(a, b) -> None:
    for f in a.__dataclass_fields__:
        va, vb = getattr(a, f), getattr(b, f)
        if f == "params":
            assert va == vb
        else:
            np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=f)
            if np.asarray(vb).dtype.kind not in "UOS":
                assert np.asarray(va).dtype == np.asarray(vb).dtype, f


# ---- round trip --------------------------------------------------------------------------------------
def test_round_trip_restores_stimulus_times_responses_ids_intervals_and_ground_truth(nwbio_two_stimuli):
    path, nat, _ = nwbio_two_stimuli
    with read_nwb(path, stimulus="natural") as rec:
        assert isinstance(rec.stimulus, H5Frames)  # lazy: frames stay in the file
        np.testing.assert_allclose(rec.stimulus[:], nat.stimulus[:], rtol=1e-6)
        np.testing.assert_allclose(rec.frame_times, nat.frame_times, atol=1e-9)
        assert rec.frame_rate == pytest.approx(100.0)
        np.testing.assert_array_equal(rec.responses, nat.responses)
        assert rec.cell_ids == nat.cell_ids and rec.response_unit == "count"
        assert sorted(rec.intervals) == sorted(nat.intervals)
        for k in nat.intervals:
            np.testing.assert_allclose(rec.intervals[k], nat.intervals[k], atol=1e-9)
            np.testing.assert_array_equal(rec.split_bins(k), nat.split_bins(k))
        assert (rec.norm_mean, rec.norm_std) == (nat.norm_mean, nat.norm_std)
        assert {k: rec.provenance[k] for k in nat.provenance} == nat.provenance
        _assert_same_ground_truth(rec.ground_truth, nat.ground_truth)


def test_round_trip_of_float_stimulus_without_intervals_splits_by_fraction(nwbio_two_stimuli):
    path, _, wn = nwbio_two_stimuli
    with read_nwb(path, stimulus="whitenoise") as rec:
        np.testing.assert_array_equal(rec.stimulus[:], wn.stimulus[:])
        np.testing.assert_array_equal(rec.responses, wn.responses)
        assert rec.ground_truth is None
        n = rec.n_frames
        assert [len(rec.split_bins(s)) for s in ("train", "validation", "test")] == [
            round(0.8 * n), round(0.9 * n) - round(0.8 * n), n - round(0.9 * n)]


def test_pynwb_reads_back_compact_uint8_stimulus_with_conversion_units_and_epochs(nwbio_two_stimuli):
    path, nat, wn = nwbio_two_stimuli
    with NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        s = f.stimulus["natural"]
        assert type(s).__name__ == "OpticalSeries"
        assert s.data.dtype == np.uint8 and s.data.shape == (240, 7, 5)  # (frame, x, y)
        assert s.conversion == pytest.approx(1 / 255) and s.rate == 100.0
        assert s.data.chunks == (240, 7, 5) and s.data.compression == "gzip"  # whole frames, along time
        np.testing.assert_array_equal(s.data[:], nat.stimulus.data.transpose(0, 2, 1))
        assert f.stimulus["whitenoise"].data.dtype == np.float32
        assert list(f.units["cell_id"][:]) == nat.cell_ids
        per_unit = [len(f.units["spike_times"][i]) for i in range(len(f.units))]
        np.testing.assert_array_equal(per_unit, nat.responses.sum(0) + wn.responses.sum(0))
        tags = [tuple(t) for t in f.epochs["tags"][:]]
        assert ("train", "natural") in tags and ("test", "natural") in tags


def test_written_file_has_no_critical_or_best_practice_violation_messages(nwbio_two_stimuli):
    path, _, _ = nwbio_two_stimuli
    bad = [m for m in inspect_nwbfile(nwbfile_path=path)
           if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    assert bad == [], [f"{m.check_function_name}: {m.message}" for m in bad]


def test_rate_responses_round_trip_as_hz(tmp_path):
    rec = natural_recording(ground_truth=False)
    rates = Recording(rec.stimulus, rec.frame_times, rec.frame_rate, rec.responses * 37.5 + 0.25,
                      cell_ids=rec.cell_ids, intervals=rec.intervals, response_unit="Hz", stimulus_name="natural")
    write_nwb(rates, tmp_path / "rates.nwb")
    with read_nwb(tmp_path / "rates.nwb") as back:
        assert back.response_unit == "Hz" and back.cell_ids == rec.cell_ids
        np.testing.assert_array_equal(back.responses, rates.responses)


def test_irregular_frame_times_are_stored_as_timestamps_and_come_back(tmp_path):
    rec = natural_recording(ground_truth=False)
    times = rec.frame_times + np.random.default_rng(3).uniform(0, 0.004, rec.n_frames)
    irregular = Recording(rec.stimulus, times, 100.0, rec.responses, stimulus_name="jittered")
    write_nwb(irregular, tmp_path / "irr.nwb")
    with NWBHDF5IO(str(tmp_path / "irr.nwb"), "r") as io:
        assert io.read().stimulus["jittered"].timestamps is not None
    with read_nwb(tmp_path / "irr.nwb") as back:
        np.testing.assert_array_equal(back.frame_times, times)
        np.testing.assert_array_equal(back.responses, rec.responses)


def test_write_refuses_to_overwrite_and_leaves_no_partial_file_on_failure(tmp_path, nwbio_two_stimuli):
    path, nat, _ = nwbio_two_stimuli
    with pytest.raises(OutputExistsError, match="exists"):
        write_nwb(nat, path)
    bad = Recording(nat.stimulus, nat.frame_times, 100.0, nat.responses + 0.5, stimulus_name="natural")
    with pytest.raises(RecordingError, match="non-negative integers"):
        write_nwb(bad, tmp_path / "bad.nwb")
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_overlapping_or_inconsistent_recordings(tmp_path):
    a = natural_recording(ground_truth=False)
    with pytest.raises(TimestampError, match="overlap"):
        write_nwb([a, natural_recording(name="other", start=1.0, ground_truth=False)], tmp_path / "x.nwb")
    with pytest.raises(RecordingError, match="distinct"):
        write_nwb([a, natural_recording(start=50.0, ground_truth=False)], tmp_path / "x.nwb")
    with pytest.raises(RecordingError, match="cell ids"):
        write_nwb([a, natural_recording(name="b", n=3, start=50.0, ground_truth=False)], tmp_path / "x.nwb")
    assert not (tmp_path / "x.nwb").exists()


# ---- the (frame, x, y) convention ----------------------------------------------------------------------
def test_non_square_frames_written_by_hand_as_t_w_h_read_back_as_t_h_w(tmp_path):
    t, h, w = 6, 5, 7
    data = np.zeros((t, w, h), np.uint8)  # NWB order (frame, x, y)
    data[2, 6, 1] = 200  # frame 2, x = 6 (column), y = 1 (row)
    data[4, 0, 4] = 100  # frame 4, x = 0, y = 4 (bottom row)
    f = new_nwbfile()
    f.add_stimulus(optical_series("bars", data))
    f.add_unit(spike_times=[0.005, 0.025])
    write_nwbfile(f, tmp_path / "hand.nwb")
    with read_nwb(tmp_path / "hand.nwb") as rec:
        frames = rec.stimulus[:]
        assert frames.shape == (t, h, w) and rec.frame_shape == (5, 7)
        assert frames[2, 1, 6] == 200 and frames[4, 4, 0] == 100
        assert np.count_nonzero(frames) == 2


def test_conversion_and_offset_are_applied(tmp_path):
    f = new_nwbfile()
    f.add_stimulus(optical_series("scaled", np.full((4, 3, 2), 10, np.uint8), starting_time=0.0, rate=100.0,
                                  conversion=0.5, offset=-1.0))
    f.add_unit(spike_times=[0.01])
    write_nwbfile(f, tmp_path / "scaled.nwb")
    with read_nwb(tmp_path / "scaled.nwb") as rec:
        np.testing.assert_array_equal(rec.stimulus[:], np.full((4, 2, 3), 4.0, np.float32))


# ---- spikes: hand-computed binning, mocks, warnings ------------------------------------------------------
def test_units_are_binned_onto_the_frame_grid_as_computed_by_hand(tmp_path):
    f = new_nwbfile()
    f.add_stimulus(optical_series("s", np.zeros((4, 2, 2), np.uint8), starting_time=1.0, rate=10.0))
    # frames [1.0,1.1) [1.1,1.2) [1.2,1.3) [1.3,1.4)
    f.add_unit(spike_times=[1.0, 1.05, 1.1, 1.35, 1.399])
    f.add_unit(spike_times=[1.25, 1.3])
    write_nwbfile(f, tmp_path / "hand.nwb")
    with read_nwb(tmp_path / "hand.nwb") as rec:
        np.testing.assert_array_equal(rec.responses, [[2, 0], [1, 0], [0, 1], [2, 1]])
        np.testing.assert_allclose(rec.frame_times, [1.0, 1.1, 1.2, 1.3])


def test_mock_units_and_mock_file_read_with_spikes_outside_counted_and_warned(tmp_path):
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", np.zeros((300, 4, 3), np.uint8), starting_time=0.0, rate=100.0))
    mock_Units(num_units=5, max_spikes_per_unit=10, seed=2, nwbfile=f)
    write_nwbfile(f, tmp_path / "mock.nwb")
    with NWBHDF5IO(str(tmp_path / "mock.nwb"), "r") as io:
        u = io.read().units
        spikes = [np.asarray(u["spike_times"][i]) for i in range(len(u))]
    expected = np.array([(s < 3.0).sum() for s in spikes])
    n_out = sum((s >= 3.0).sum() for s in spikes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = read_nwb(tmp_path / "mock.nwb")
    try:
        np.testing.assert_array_equal(rec.responses.sum(0), expected)
        assert rec.cell_ids == [f"unit_{i}" for i in range(5)]  # the mock's unit_name column
        msgs = [str(w.message) for w in caught if "outside every stimulus" in str(w.message)]
        if n_out:
            assert len(msgs) == 1 and f"{n_out} of {sum(map(len, spikes))} spikes" in msgs[0]
        else:
            assert msgs == []
    finally:
        rec.close()
    assert n_out > 0  # the mock's spikes run past 3 s, so the warning path above was exercised


def test_spikes_during_the_other_stimulus_are_not_warned_about(nwbio_two_stimuli):
    path, nat, _ = nwbio_two_stimuli
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = read_nwb(path, stimulus="natural")
    rec.close()


def test_several_stimuli_need_a_name_and_the_error_lists_them(nwbio_two_stimuli):
    path, _, _ = nwbio_two_stimuli
    with pytest.raises(AmbiguousSeriesError, match=r"\['natural', 'whitenoise'\]") as err:
        read_nwb(path)
    assert str(path) in str(err.value)
    with pytest.raises(MissingStimulusError, match="no stimulus series named 'nope'"):
        read_nwb(path, stimulus="nope")


# ---- other stimulus and response types ---------------------------------------------------------------------
def test_index_series_with_images_reads_frames_by_index(tmp_path):
    f = new_nwbfile()
    imgs = [GrayscaleImage(name=f"img{k}", data=np.full((3, 2), k * 10, np.uint8) + np.arange(3)[:, None],
                           description="x by y") for k in range(3)]
    images = Images(name="images", images=imgs, description="test images")
    f.add_stimulus_template(images)
    idx = np.array([2, 0, 1, 1, 2], np.uint32)
    f.add_stimulus(IndexSeries(name="flashes", data=idx, indexed_images=images, unit="N/A",
                               timestamps=np.arange(5) * 0.1))
    f.add_unit(spike_times=[0.05, 0.31])
    write_nwbfile(f, tmp_path / "index.nwb")
    with pytest.warns(RuntimeWarning, match="no order_of_images"):  # names sort as inserted here
        rec = read_nwb(tmp_path / "index.nwb")
    with rec:
        frames = rec.stimulus[:]
        assert frames.shape == (5, 2, 3)  # images stored (x=3, y=2) -> (H=2, W=3)
        for t, k in enumerate(idx):
            np.testing.assert_array_equal(frames[t], (k * 10 + np.arange(3))[None, :].repeat(2, 0))
        np.testing.assert_array_equal(rec.responses[:, 0], [1, 0, 0, 1, 0])


def test_roi_response_series_rates_are_resampled_to_frames(tmp_path):
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", np.zeros((40, 3, 3), np.uint8), starting_time=0.0, rate=100.0))
    plane = mock_PlaneSegmentation(n_rois=2, nwbfile=f)
    data = np.stack([np.arange(21.0), 100 - np.arange(21.0)], axis=1)  # 50 Hz samples: 2 frames each
    mock_RoiResponseSeries(name="dff", data=data, rate=50.0, starting_time=0.0, plane_segmentation=plane, nwbfile=f)
    write_nwbfile(f, tmp_path / "roi.nwb")
    with read_nwb(tmp_path / "roi.nwb") as rec:
        assert rec.response_unit == "Hz" and rec.responses.shape == (40, 2)
        assert rec.provenance["responses"] == "dff" and rec.cell_ids == ["0", "1"]
        # samples at frames 0, 2, 4, ...: the frame holding a sample takes it; the frames between take the
        # linear interpolation at their centre (frame 1: 0.015 s, 3/4 of the way from sample 0 to sample 1)
        np.testing.assert_allclose(rec.responses[0::2, 0], np.arange(20.0))
        np.testing.assert_allclose(rec.responses[1::2, 0], np.arange(20.0) + 0.75)
        np.testing.assert_allclose(rec.responses[0::2, 1], 100 - np.arange(20.0))


def test_rates_covering_part_of_the_movie_trim_it_with_a_warning(tmp_path):
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", np.arange(100, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2),
                                  starting_time=0.0, rate=100.0))
    mod = f.create_processing_module("ophys", "rates")
    mod.add(TimeSeries(name="rates", data=np.ones((50, 3)), unit="Hz", starting_time=0.2, rate=100.0))
    write_nwbfile(f, tmp_path / "part.nwb")
    with pytest.warns(RuntimeWarning, match="covers frames 20..69"):
        rec = read_nwb(tmp_path / "part.nwb")
    with rec:
        assert rec.n_frames == 50 and rec.frame_times[0] == pytest.approx(0.2)
        assert rec.stimulus[0][0, 0, 0] == 20 and rec.stimulus[49:50][0, 0, 0] == 69


def test_several_overlapping_rate_series_are_ambiguous_and_chosen_by_name(tmp_path):
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", np.zeros((20, 2, 2), np.uint8)))
    mod = f.create_processing_module("ophys", "rates")
    for name, v in (("a", 1.0), ("b", 2.0)):
        mod.add(mock_TimeSeries(name=name, data=np.full((20, 2), v), unit="Hz", rate=100.0, starting_time=0.0))
    write_nwbfile(f, tmp_path / "two_rates.nwb")
    with pytest.raises(AmbiguousSeriesError, match=r"\['a', 'b'\]"):
        read_nwb(tmp_path / "two_rates.nwb")
    with read_nwb(tmp_path / "two_rates.nwb", responses="b") as rec:
        assert np.all(rec.responses == 2.0)


# ---- splits ----------------------------------------------------------------------------------------------
def test_splits_from_named_interval_tables_are_clipped_to_the_stimulus(tmp_path):
    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((100, 2, 2), np.uint8), starting_time=1.0, rate=100.0))
    f.add_unit(spike_times=np.linspace(1.0, 1.99, 50))
    for name, rows in (("train", [(0.0, 1.6)]), ("test", [(1.8, 2.5)]), ("holdout", [(1.6, 1.8)])):
        table = TimeIntervals(name=name, description=f"{name} split")
        for a, b in rows:
            table.add_interval(start_time=a, stop_time=b)
        f.add_time_intervals(table)
    write_nwbfile(f, tmp_path / "splits.nwb")
    with read_nwb(tmp_path / "splits.nwb") as rec:
        assert sorted(rec.intervals) == ["test", "train"]
        np.testing.assert_allclose(rec.intervals["train"], [[1.0, 1.6]])
        np.testing.assert_allclose(rec.intervals["test"], [[1.8, 2.0]])
        assert len(rec.split_bins("train")) == 60 and len(rec.split_bins("test")) == 20
    with read_nwb(tmp_path / "splits.nwb", splits=["holdout"]) as rec:
        assert list(rec.intervals) == ["holdout"] and len(rec.split_bins("holdout")) == 20
    with pytest.raises(UnknownIntervalError, match="'validation'.*available: \\['holdout', 'test', 'train'\\]"):
        read_nwb(tmp_path / "splits.nwb", splits=["train", "validation"])


def test_split_fractions_apply_when_the_file_has_no_splits(tmp_path):
    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((50, 2, 2), np.uint8)))
    f.add_unit(spike_times=[0.1])
    write_nwbfile(f, tmp_path / "nosplit.nwb")
    with read_nwb(tmp_path / "nosplit.nwb", split_fractions=(0.6, 0.2, 0.2)) as rec:
        assert [len(rec.split_bins(s)) for s in ("train", "validation", "test")] == [30, 10, 10]
        edges = frame_edges(rec.frame_times, rec.frame_rate)
        np.testing.assert_allclose(rec.intervals["test"], [[edges[40], edges[50]]])


# ---- laziness and closing ---------------------------------------------------------------------------------
def test_recording_keeps_file_open_until_closed(nwbio_two_stimuli):
    path, nat, _ = nwbio_two_stimuli
    rec = read_nwb(path, stimulus="natural").select_cells([1, 0])
    import gc

    gc.collect()  # the first Recording is gone; the file must stay open for the selection
    batch = next(rec.iter_windows("train", history=5, batch_size=16))
    assert batch.stimulus.shape == (16, 5, 5, 7)
    np.testing.assert_array_equal(batch.responses, nat.responses[batch.bins][:, [1, 0]])
    rec.close()
    with pytest.raises(Exception):  # noqa: B017 - h5py raises its own error on a closed file
        rec.stimulus[0:1]


def test_region_rois_give_cell_ids(tmp_path):
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", np.zeros((10, 2, 2), np.uint8)))
    plane = mock_PlaneSegmentation(n_rois=3, nwbfile=f)
    region = DynamicTableRegion(name="rois", description="rois", table=plane, data=[2, 0])
    mock_RoiResponseSeries(name="f", data=np.ones((10, 2)), rate=100.0, starting_time=0.0, rois=region,
                           plane_segmentation=plane, nwbfile=f)
    write_nwbfile(f, tmp_path / "rois.nwb")
    with read_nwb(tmp_path / "rois.nwb") as rec:
        assert rec.cell_ids == ["2", "0"]


def _rec(t: int = 10, n: int = 1, **kw) -> Recording:
    """A tiny in-memory recording: frame t holds the value t everywhere (non-square 2x3 frames)."""
    stim = np.broadcast_to(np.arange(t, dtype=np.float32)[:, None, None], (t, 2, 3)).copy()
    kw = {"frame_times": np.arange(t) / 100.0, "frame_rate": 100.0,
          "responses": np.arange(t * n, dtype=np.float32).reshape(t, n), **kw}
    return Recording(stimulus=stim, **kw)


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


# ---- item 6: declared sizes ----------------------------------------------------------------------------------------
def test_huge_declared_stimulus_is_refused_before_any_scan(tmp_path):
    path = huge_stimulus_nwb(tmp_path)
    with pytest.raises(ShapeMismatchError) as err:
        read_nwb(path)
    msg = str(err.value)
    assert str(path) in msg and "stimulus/movie/data" in msg and "100000000" in msg


# ---- item 8: silent acceptance -------------------------------------------------------------------------------------
def _epochs_outside_nwb(tmp: Path) -> Path:
    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((50, 3, 2), np.uint8)))
    f.units = Units(name="units", description="test units")
    f.units.add_unit(spike_times=[0.1, 0.2])
    for split, (a, b) in {"train": (100.0, 180.0), "test": (180.0, 200.0)}.items():
        f.add_epoch(start_time=a, stop_time=b, tags=[split])
    return write_nwbfile(f, tmp / "epochs_outside.nwb")


def test_epochs_all_outside_the_recording_are_warned_about_and_no_splits_invented(tmp_path):
    path = _epochs_outside_nwb(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"epochs: the intervals \['test', 'train'\].*lie outside"):
        rec = read_nwb(path)
    with rec:
        assert rec.intervals == {}
    with read_nwb(path, split_fractions=(0.8, 0.1, 0.1)) as rec:  # asked for: splits by fraction
        assert set(rec.intervals) == {"train", "validation", "test"}
