"""Baccus-lab h5 reader, ``retina-codec convert`` and ``retina-codec inspect``."""

from __future__ import annotations

import numpy as np
import pytest
from _nwbio_helpers import natural_recording, write_lab_h5

from retina_codec.cli.main import main
from retina_codec.recordings import ConcatFrames, read_lab_h5, read_nwb


@pytest.fixture
def labh5_file(tmp_path):
    path = tmp_path / "naturalscene.h5"
    return path, write_lab_h5(path)


def test_lab_file_reads_train_then_test_with_shifted_test_times_and_three_splits(labh5_file):
    path, data = labh5_file
    with read_lab_h5(path) as rec:
        assert isinstance(rec.stimulus, ConcatFrames) and rec.stimulus.shape == (260, 6, 8)
        assert rec.stimulus_name == "naturalscene" and rec.response_unit == "count"
        np.testing.assert_array_equal(rec.stimulus[195:205], np.concatenate(
            [data["train"]["stimulus"][195:], data["test"]["stimulus"][:5]]).astype(np.float32))
        np.testing.assert_array_equal(rec.responses, np.concatenate(
            [data["train"]["binned"], data["test"]["binned"]], axis=1).T)
        # test time started at 0 (overlapping train): shifted to follow the train movie
        np.testing.assert_allclose(rec.frame_times[200:], 2.0 + data["test"]["time"])
        assert rec.provenance["test_time_shift_s"] == pytest.approx(2.0)
        assert [len(rec.split_bins(s)) for s in ("train", "validation", "test")] == [180, 20, 60]
        np.testing.assert_array_equal(rec.split_bins("test"), np.arange(200, 260))
        assert rec.frame_rate == pytest.approx(100.0)


def test_lab_file_firing_rates_and_non_overlapping_test_times(tmp_path):
    data = write_lab_h5(tmp_path / "whitenoise.h5", test_starts_at_zero=False, dtype="float32")
    with read_lab_h5(tmp_path / "whitenoise.h5", response="firing_rate_10ms", validation_fraction=0.0) as rec:
        assert rec.response_unit == "Hz" and "validation" not in rec.intervals
        np.testing.assert_array_equal(rec.responses[:200], data["train"]["firing_rate_10ms"].T)
        np.testing.assert_allclose(rec.frame_times[200:], data["test"]["time"])  # no shift needed
        assert rec.provenance["test_time_shift_s"] == 0.0


def test_convert_writes_an_nwb_file_that_reads_back_the_lab_data(labh5_file, tmp_path):
    path, data = labh5_file
    out = tmp_path / "out" / "naturalscene.nwb"
    assert main(["-q", "convert", str(path), str(out)]) == 0
    with read_lab_h5(path) as lab, read_nwb(out) as rec:
        assert rec.stimulus_name == "naturalscene"
        np.testing.assert_array_equal(rec.stimulus[:], lab.stimulus[:])
        np.testing.assert_array_equal(rec.responses, lab.responses)
        np.testing.assert_allclose(rec.frame_times, lab.frame_times, atol=1e-9)
        for k in ("train", "validation", "test"):
            np.testing.assert_array_equal(rec.split_bins(k), lab.split_bins(k))
    import h5py

    with h5py.File(out, "r") as f:  # uint8 lab frames stay uint8 in the NWB file
        assert f["stimulus/presentation/naturalscene/data"].dtype == np.uint8
    assert sorted(p.name for p in out.parent.iterdir()) == ["naturalscene.nwb"]  # no temporary left over


def test_convert_refuses_to_overwrite_without_flag(labh5_file, tmp_path, capsys):
    path, _ = labh5_file
    out = tmp_path / "o.nwb"
    out.write_bytes(b"keep me")
    assert main(["-q", "convert", str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0]
    assert out.read_bytes() == b"keep me"
    assert main(["-q", "convert", str(path), str(out), "--overwrite"]) == 0
    with read_nwb(out) as rec:
        assert rec.n_frames == 260


def test_inspect_prints_series_rates_splits_and_ground_truth(tmp_path, labh5_file, capsys):
    from retina_codec.recordings import write_nwb

    rec = natural_recording()
    write_nwb(rec, tmp_path / "sim.nwb")
    assert main(["inspect", str(tmp_path / "sim.nwb")]) == 0
    out = capsys.readouterr().out
    assert "stimulus/natural" in out and "OpticalSeries" in out and "(240, 7, 5)" in out and "uint8" in out
    assert "240 frames of 5x7 (H x W) at 100 Hz" in out and "duration 2.40 s" in out
    assert "cells: 4" in out and "ground truth: yes" in out
    rate0 = rec.responses[:, 0].mean() * 100
    assert f"cell0 {rate0:.2f}" in out
    assert "train 1x, 1.92 s, 192 bins" in out
    path, _ = labh5_file
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Baccus-lab h5" in out and "train/stimulus" in out and "(200, 6, 8)" in out
    assert "ground truth: no" in out and "validation 1x" in out


def test_convert_float_lab_file_with_rates_keeps_values_and_is_nwbinspector_clean(tmp_path):
    from nwbinspector import Importance, inspect_nwbfile

    write_lab_h5(tmp_path / "whitenoise.h5", dtype="float32", test_starts_at_zero=False)
    out = tmp_path / "wn.nwb"
    assert main(["-q", "convert", str(tmp_path / "whitenoise.h5"), str(out), "--response", "firing_rate_10ms",
                 "--stimulus-name", "wn"]) == 0
    with read_lab_h5(tmp_path / "whitenoise.h5", response="firing_rate_10ms") as lab, read_nwb(out) as rec:
        assert rec.stimulus_name == "wn" and rec.response_unit == "Hz"
        np.testing.assert_array_equal(rec.stimulus[:], lab.stimulus[:])
        np.testing.assert_array_equal(rec.responses, lab.responses)
        assert rec.provenance["format"] == "baccus-lab-h5"
    bad = [m for m in inspect_nwbfile(nwbfile_path=out)
           if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    assert bad == [], [f"{m.check_function_name}: {m.message}" for m in bad]
