"""Baccus-lab h5 recordings (``<experiment>/<naturalscene|whitenoise>.h5``).

Layout: groups ``train`` and ``test``, each with ``time`` (T,) seconds, ``stimulus`` (T, H, W) (50x50),
``response/firing_rate_10ms`` (N, T) Hz and ``response/binned`` (N, T) spike counts; frames at 100 Hz.
The test movie is played after the train movie: one :class:`Recording` holds both (lazy frames), with
intervals ``train`` / ``validation`` (the end of the train movie) / ``test`` and two movie segments
(``segment_starts = [0, n_train]``), so no history window of a test bin reaches back into the train movie.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import (
    FileFormatError,
    MissingStimulusError,
    NonFiniteFramesError,
    RecordingError,
    ShapeMismatchError,
)
from ..progress import progress
from .binning import checked_times, frame_edges
from .frames import ConcatFrames, H5Frames
from .hdf5_files import is_nwb_file, open_hdf5
from .recording import Recording

__all__ = ["read_lab_h5", "LAB_RESPONSES", "is_lab_h5"]

LAB_RESPONSES = {"binned": "count", "firing_rate_10ms": "Hz"}
LAB_PARTS = ("train", "test")


def is_lab_h5(f: h5py.File) -> bool:
    """True when an open HDF5 file looks like a Baccus-lab recording (train and test groups, no NWB)."""
    return not is_nwb_file(f) and all(isinstance(f.get(p), h5py.Group) for p in LAB_PARTS)


def _dataset(f: h5py.File, key: str, path: Path, missing: type[RecordingError] = FileFormatError) -> h5py.Dataset:
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise missing(f"{path}: {key}: missing dataset (Baccus-lab layout: train/ and test/ with time, stimulus, "
                      f"response/binned, response/firing_rate_10ms)")
    return obj


def _part(f: h5py.File, part: str, response: str, path: Path, validate: bool) -> tuple[H5Frames, np.ndarray, np.ndarray]:
    if not isinstance(f.get(part), h5py.Group):
        raise FileFormatError(f"{path}: {part}: missing group (Baccus-lab layout needs groups 'train' and 'test')")
    stim = _dataset(f, f"{part}/stimulus", path, MissingStimulusError)
    if stim.ndim != 3:
        raise ShapeMismatchError(f"{path}: {part}/stimulus: expected (T, H, W) frames, found shape {stim.shape}")
    n = stim.shape[0]
    if n == 0:
        raise MissingStimulusError(f"{path}: {part}/stimulus: no frames")
    time = checked_times(_dataset(f, f"{part}/time", path)[()], n, f"{path}: {part}/time")
    resp = np.asarray(_dataset(f, f"{part}/response/{response}", path)[()], dtype=np.float32)
    if resp.ndim == 1:
        resp = resp[None, :]
    if resp.ndim != 2 or resp.shape[1] != n:
        raise ShapeMismatchError(f"{path}: {part}/response/{response}: expected (N, {n}) (cells x frames), "
                                 f"found shape {resp.shape}")
    if response == "binned":  # spike counts: checked here, naming the file, not later by the NWB writer
        bad = ~np.isfinite(resp) | (resp < 0) | (resp != np.round(resp))
        if bad.any():
            i, t = (int(v) for v in np.argwhere(bad)[0])
            raise RecordingError(f"{path}: {part}/response/binned: expected non-negative integer spike counts, "
                                 f"found {float(resp[i, t])!r} (cell {i}, frame {t})")
    if validate and stim.dtype.kind == "f":
        chunk = 2048
        for a in progress(range(0, n, chunk), desc=f"checking {part}/stimulus", total=-(-n // chunk),
                          unit="chunk", delay=1.0):
            ok = np.isfinite(stim[a : a + chunk]).reshape(-1, stim.shape[1] * stim.shape[2]).all(1)
            if not ok.all():
                raise NonFiniteFramesError(f"{path}: {part}/stimulus: frame {a + int(np.flatnonzero(~ok)[0])} "
                                           f"contains NaN or infinite values")
    return H5Frames(stim), time, resp.T


def read_lab_h5(
    path: str | os.PathLike,
    response: str = "binned",
    stimulus_name: str | None = None,
    validation_fraction: float = 0.1,
    frame_rate: float | None = None,
    validate: bool = True,
) -> Recording:
    """Read a Baccus-lab h5 file as one lazy :class:`Recording` (train movie, then test movie).

    Parameters
    ----------
    response : ``"binned"`` (spike counts per 10 ms bin, ``response_unit="count"``) or
        ``"firing_rate_10ms"`` (Hz).
    stimulus_name : defaults to the file's stem (``naturalscene`` / ``whitenoise``).
    validation_fraction : the last fraction of the train movie becomes the ``validation`` interval.
    frame_rate : Hz; default from the train ``time`` steps (100 Hz in the lab's files).
    validate : scan float frames for NaN / inf.

    The test times are shifted to follow the train movie when they overlap it (recorded in
    ``provenance["test_time_shift_s"]``). The two movies are separate segments (``segment_starts``): like
    torch-deep-retina, the first ``history`` bins of the test movie have no window. The file stays open:
    ``recording.close()`` or ``with``.
    """
    path = Path(path)
    if response not in LAB_RESPONSES:
        raise RecordingError(f"response: expected one of {sorted(LAB_RESPONSES)}, found {response!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise RecordingError(f"validation_fraction: expected a number in [0, 1), found {validation_fraction!r}")
    f = open_hdf5(path)
    try:
        rec = _read(f, path, response, stimulus_name, validation_fraction, frame_rate, validate)
    except BaseException:
        f.close()
        raise
    rec.resources.append(f)
    return rec


def _read(f: h5py.File, path: Path, response: str, stimulus_name: str | None, validation_fraction: float,
          frame_rate: float | None, validate: bool) -> Recording:
    if is_nwb_file(f):
        raise FileFormatError(f"{path}: is an NWB file, not a Baccus-lab h5 file (use read_nwb)")
    train_frames, train_t, train_r = _part(f, "train", response, path, validate)
    test_frames, test_t, test_r = _part(f, "test", response, path, validate)
    if train_frames.shape[1:] != test_frames.shape[1:]:
        raise ShapeMismatchError(f"{path}: test/stimulus: frames are {test_frames.shape[1:]}, train/stimulus "
                                 f"frames {train_frames.shape[1:]}; they must match")
    if train_r.shape[1] != test_r.shape[1]:
        raise ShapeMismatchError(f"{path}: test/response/{response}: {test_r.shape[1]} cells, train has "
                                 f"{train_r.shape[1]}; they must match")
    if frame_rate is None:
        steps = np.diff(train_t) if len(train_t) > 1 else np.diff(test_t)
        frame_rate = float(1.0 / np.median(steps)) if len(steps) else 100.0
    train_end = float(frame_edges(train_t, frame_rate)[-1])
    shift = 0.0
    if test_t[0] < train_end - 1e-9:
        shift = train_end - float(test_t[0])
        test_t = test_t + shift
    n_train = len(train_t)
    n_fit = int(round(n_train * (1.0 - validation_fraction)))
    edges_train = frame_edges(train_t, frame_rate)
    intervals: dict[str, Any] = {"train": [[edges_train[0], edges_train[n_fit]]]}
    if n_fit < n_train:
        intervals["validation"] = [[edges_train[n_fit], edges_train[-1]]]
    intervals["test"] = [[float(test_t[0]), float(frame_edges(test_t, frame_rate)[-1])]]
    try:
        return Recording(
            stimulus=ConcatFrames([train_frames, test_frames]),
            frame_times=np.concatenate([train_t, test_t]),
            frame_rate=frame_rate,
            responses=np.concatenate([train_r, test_r]),
            cell_ids=[str(i) for i in range(train_r.shape[1])],
            intervals=intervals,
            segment_starts=[0, n_train],
            response_unit=LAB_RESPONSES[response],
            stimulus_name=stimulus_name or path.stem,
            provenance={"source_file": str(path), "format": "baccus-lab-h5", "response": response,
                        "n_train_frames": n_train, "n_test_frames": len(test_t),
                        "test_time_shift_s": shift, "validation_fraction": validation_fraction,
                        "reader": f"retina_codec {__version__} read_lab_h5"},
        )
    except RecordingError as err:
        raise type(err)(f"{path}: {err}") from err
