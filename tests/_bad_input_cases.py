"""Bad input files for tests/recordings/test_bad_input.py and tests/cli/test_cli_bad_input.py (not a test
module): one builder per defect and the case table ``CASES``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from _nwbio_helpers import new_nwbfile, optical_series, write_lab_h5, write_nwbfile
from pynwb import TimeSeries
from pynwb.misc import Units

from retina_codec.errors import (
    AmbiguousSeriesError,
    EmptyUnitsError,
    FileFormatError,
    MissingStimulusError,
    NonFiniteFramesError,
    NoOverlapError,
    RetinaCodecError,
    ShapeMismatchError,
    TimestampError,
    UnknownIntervalError,
)
from retina_codec.recordings import read_lab_h5, read_nwb


# ---- bad files ------------------------------------------------------------------------------------------
def _nwb(tmp: Path, stimuli=(), units: list | None = None, extra: Callable | None = None) -> Path:
    f = new_nwbfile()
    for s in stimuli:
        f.add_stimulus(s)
    if units is not None:
        f.units = Units(name="units", description="test units")
        for st in units:
            f.units.add_unit(spike_times=st)
    if extra is not None:
        extra(f)
    return write_nwbfile(f, tmp / "bad.nwb")

def _movie(name: str = "movie", n: int = 50, **kw) -> object:
    return optical_series(name, np.zeros((n, 3, 2), np.uint8), **kw)

def nwb_missing_stimulus(tmp: Path) -> Path:
    return _nwb(tmp, units=[[0.1, 0.2]])

def nwb_ambiguous(tmp: Path) -> Path:
    def rates(f):
        mod = f.create_processing_module("ophys", "two rate series")
        for name in ("rates_a", "rates_b"):
            mod.add(TimeSeries(name=name, data=np.ones((50, 2)), unit="Hz", starting_time=0.0, rate=100.0))
    return _nwb(tmp, [_movie("movie_a"), _movie("movie_b")], extra=rates)

def nwb_non_monotonic(tmp: Path) -> Path:
    ts = np.arange(50) / 100.0
    ts[20] = ts[18]
    return _nwb(tmp, [_movie(timestamps=ts)], units=[[0.1]])

def nwb_nan_frames(tmp: Path) -> Path:
    data = np.zeros((50, 3, 2), np.float32)
    data[33, 1, 1] = np.nan
    return _nwb(tmp, [optical_series("movie", data)], units=[[0.1]])

def nwb_empty_units(tmp: Path) -> Path:
    return _nwb(tmp, [_movie()], units=[])

def nwb_units_without_spikes(tmp: Path) -> Path:
    return _nwb(tmp, [_movie()], units=[[], []])

def nwb_no_overlap(tmp: Path) -> Path:
    return _nwb(tmp, [_movie()], units=[[100.0, 101.0], [102.0]])

def nwb_shape_mismatch(tmp: Path) -> Path:
    path = _nwb(tmp, [_movie(timestamps=np.arange(50) / 100.0)], units=[[0.1]])
    with h5py.File(path, "a") as f:  # pynwb refuses to build this, another writer might not
        del f["stimulus/presentation/movie/timestamps"]
        f["stimulus/presentation/movie/timestamps"] = np.arange(49) / 100.0
    return path

def nwb_truncated(tmp: Path) -> Path:
    path = _nwb(tmp, [_movie()], units=[[0.1]])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path

def not_hdf5(tmp: Path) -> Path:
    path = tmp / "notes.nwb"
    path.write_text("this is not an HDF5 file\n")
    return path

def nwb_with_splits(tmp: Path) -> Path:
    def epochs(f):
        f.add_epoch(start_time=0.0, stop_time=0.4, tags=["train"])
    return _nwb(tmp, [_movie()], units=[[0.1]], extra=epochs)

def _lab(tmp: Path, edit: Callable[[h5py.File], None], **kw) -> Path:
    path = tmp / "naturalscene.h5"
    write_lab_h5(path, n_train=40, n_test=10, **kw)
    with h5py.File(path, "a") as f:
        edit(f)
    return path

def lab_missing_stimulus(tmp: Path) -> Path:
    return _lab(tmp, lambda f: f.__delitem__("train/stimulus"))

def lab_non_monotonic(tmp: Path) -> Path:
    def edit(f):
        t = f["test/time"][()]
        t[5] = t[2]
        f["test/time"][...] = t
    return _lab(tmp, edit)

def lab_nan_frames(tmp: Path) -> Path:
    def edit(f):
        f["train/stimulus"][7, 2, 3] = np.inf
    return _lab(tmp, edit, dtype="float32")

def lab_shape_mismatch(tmp: Path) -> Path:
    def edit(f):
        del f["train/response/binned"]
        f["train/response/binned"] = np.zeros((3, 41), np.float32)
    return _lab(tmp, edit)

def lab_truncated(tmp: Path) -> Path:
    path = _lab(tmp, lambda f: None)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    return path

@dataclass
class Case:
    make: Callable[[Path], Path]
    read: Callable[[Path], object]
    error: type[RetinaCodecError]
    field: str  # must appear in the message, with the file name
    cli: str = "convert"  # sub-command that meets the same error
    cli_args: tuple[str, ...] = ()

CASES = {
    "nwb_missing_stimulus": Case(nwb_missing_stimulus, read_nwb, MissingStimulusError, "stimulus"),
    "lab_missing_stimulus": Case(lab_missing_stimulus, read_lab_h5, MissingStimulusError, "train/stimulus"),
    "nwb_several_series_no_name": Case(nwb_ambiguous, read_nwb, AmbiguousSeriesError, "['movie_a', 'movie_b']"),
    "nwb_non_monotonic_timestamps": Case(nwb_non_monotonic, read_nwb, TimestampError, "stimulus/movie/timestamps"),
    "lab_non_monotonic_time": Case(lab_non_monotonic, read_lab_h5, TimestampError, "test/time"),
    "nwb_nan_frames": Case(nwb_nan_frames, read_nwb, NonFiniteFramesError, "stimulus/movie/data: frame 33"),
    "lab_inf_frames": Case(lab_nan_frames, read_lab_h5, NonFiniteFramesError, "train/stimulus: frame 7"),
    "nwb_empty_units": Case(nwb_empty_units, read_nwb, EmptyUnitsError, "units"),
    "nwb_units_without_spikes": Case(nwb_units_without_spikes, read_nwb, EmptyUnitsError, "units/spike_times"),
    "nwb_no_overlap": Case(nwb_no_overlap, read_nwb, NoOverlapError, "units/spike_times"),
    "nwb_shape_mismatch": Case(nwb_shape_mismatch, read_nwb, ShapeMismatchError, "stimulus/movie/timestamps"),
    "lab_shape_mismatch": Case(lab_shape_mismatch, read_lab_h5, ShapeMismatchError, "train/response/binned"),
    "nwb_truncated": Case(nwb_truncated, read_nwb, FileFormatError, ""),
    "lab_truncated": Case(lab_truncated, read_lab_h5, FileFormatError, ""),
    "not_hdf5_nwb": Case(not_hdf5, read_nwb, FileFormatError, "not an HDF5 file"),
    "not_hdf5_lab": Case(not_hdf5, read_lab_h5, FileFormatError, "not an HDF5 file"),
    "unknown_interval": Case(nwb_with_splits, lambda p: read_nwb(p, splits=["train", "bogus"]),
                             UnknownIntervalError, "'bogus'", cli="inspect", cli_args=("--splits", "train", "bogus")),
}
