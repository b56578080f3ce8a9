"""NWB recordings: :func:`read_nwb` (lazy) and :func:`write_nwb` (one or several stimuli per file).

File layout that :func:`write_nwb` produces and :func:`read_nwb` understands (any NWB file with a
stimulus series and spikes or rates reads too):

- ``stimulus/<stimulus_name>``: OpticalSeries, data ``(frame, x, y)`` = ``(T, W, H)``, uint8 with NWB
  ``conversion`` / ``offset`` when the frames are stored as uint8, float32 otherwise; chunked along time,
  gzip-compressed; ``starting_time`` + ``rate`` for a regular frame grid, else ``timestamps``.
- ``units``: spike counts as spike times (k spikes of bin t at ``start_t + (j + 0.5) / k * width_t``),
  column ``cell_id``; rates (``response_unit="Hz"``) go to ``processing/responses/rates_<stimulus>``.
- ``epochs``: one row per split interval, tags ``[split, stimulus_name]``.
- ``processing/retina_codec``: ``recordings`` (stimulus_name, response_unit, norm_mean, norm_std, frame_rate,
  segment_starts: ragged frame indices where a separately presented movie starts; absent = one movie),
  ``cells`` (cell_id), ``provenance_<stimulus>`` (JSON key/value rows).
- ``processing/ground_truth``: see :mod:`retina_codec.recordings.nwb_ground_truth`.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, VectorData, VectorIndex
from hdmf.data_utils import GenericDataChunkIterator
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.file import Subject
from pynwb.image import ImageSeries, IndexSeries, OpticalSeries
from pynwb.misc import Units
from pynwb.ophys import RoiResponseSeries

from .._version import __version__
from ..errors import (
    AmbiguousSeriesError,
    EmptyUnitsError,
    FileFormatError,
    MissingStimulusError,
    NonFiniteFramesError,
    NoOverlapError,
    OutputExistsError,
    RecordingError,
    ShapeMismatchError,
    TimestampError,
    UnknownIntervalError,
)
from ..io_utils import atomic_path, available_memory_bytes, check_output_path, h5_create
from ..progress import is_quiet, progress
from .binning import bin_spikes, checked_times, frame_edges, resample_rates
from .frames import ArrayFrames, ConcatFrames, H5Frames, IndexedFrames
from .hdf5_files import check_hdf5_file, one_line
from .nwb_ground_truth import (
    GT_MODULE,
    dict_to_table,
    read_ground_truth,
    table_to_dict,
    write_ground_truth,
)
from .recording import SPLITS, Recording

__all__ = ["read_nwb", "write_nwb", "open_nwb", "stimulus_series", "fraction_intervals", "META_MODULE"]

META_MODULE = "retina_codec"
RATES_MODULE = "responses"
CODEC_MODULE = "codec"  # retina-codec's analysis outputs (``modes --nwb``: loadings, predicted rates), not responses
_NAME_OK = re.compile(r"^[^/:]+$")


# =====================================================================================================
# reading
# =====================================================================================================
def open_nwb(path: str | os.PathLike) -> tuple[NWBHDF5IO, NWBFile]:
    """Open an NWB file read-only; returns ``(io, nwbfile)``. The caller closes ``io``."""
    io, nwbfile, _ = _open_nwb(path)
    return io, nwbfile


def _open_nwb(path: str | os.PathLike) -> tuple[NWBHDF5IO, NWBFile, list[warnings.WarningMessage]]:
    """Open an NWB file; pynwb's warnings while building the containers are returned, not shown, so
    that a reader can drop them when it raises its own (clearer) error about the same problem."""
    path = check_hdf5_file(path)
    io = None
    try:
        io = NWBHDF5IO(str(path), mode="r")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nwbfile = io.read()
        return io, nwbfile, caught
    except Exception as err:  # pynwb/hdmf/h5py raise many kinds; all mean "not a readable NWB file"
        if io is not None:
            try:
                io.close()
            except Exception:  # noqa: BLE001 - closing a half-open file may fail too
                pass
        if _is_lab_file(path):
            raise FileFormatError(f"{path}: a Baccus-lab h5 file, not NWB; convert it first: retina-codec convert "
                                  f"{path} OUT.nwb (Python: read_lab_h5)") from err
        raise FileFormatError(f"{path}: not a readable NWB file ({type(err).__name__}: {one_line(err)})") from err


def _is_lab_file(path: Path) -> bool:
    """True when ``path`` opens as HDF5 with the Baccus-lab layout (for a clearer error than pynwb's)."""
    import h5py

    from .labh5 import is_lab_h5

    try:
        with h5py.File(path, "r") as f:
            return is_lab_h5(f)
    except OSError:
        return False


def stimulus_series(nwbfile: NWBFile) -> dict[str, Any]:
    """Candidate stimulus series in ``nwbfile.stimulus``: ImageSeries (incl. OpticalSeries) and IndexSeries."""
    return {name: s for name, s in nwbfile.stimulus.items() if isinstance(s, (ImageSeries, IndexSeries))}


def _choose(kind: str, field: str, path: Path, cands: dict[str, Any], name: str | None,
            missing: type[RecordingError], hint: str) -> str:
    if name is None:
        if len(cands) > 1:
            raise AmbiguousSeriesError(
                f"{path}: {field}: {len(cands)} candidate {kind} series {sorted(cands)}; choose one with {hint}"
            )
        return next(iter(cands))
    if name not in cands:
        raise missing(f"{path}: {field}: no {kind} series named {name!r}; available: {sorted(cands) or 'none'}")
    return name


def _series_times(series: Any, n: int, path: Path, field: str) -> tuple[np.ndarray, float]:
    """Sample times ``(n,)`` in seconds and the sampling rate (Hz) of a TimeSeries."""
    if series.timestamps is not None:
        ts = checked_times(series.timestamps[:], n, f"{path}: {field}/timestamps", "timestamps", "sample")
        rate = float(series.rate) if series.rate else (1.0 / float(np.median(np.diff(ts))) if n > 1 else 1.0)
        return ts, rate
    rate = series.rate
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise TimestampError(f"{path}: {field}/starting_time: rate must be a positive number of Hz, found {rate!r}")
    start = float(series.starting_time or 0.0)
    if not np.isfinite(start):
        raise TimestampError(f"{path}: {field}/starting_time: expected a finite time in seconds, found {start!r}")
    return start + np.arange(n, dtype=np.float64) / float(rate), float(rate)


def _series_span(series: Any) -> tuple[float, float]:
    """``[first, end)`` seconds of a series, from its first/last timestamp (cheap: reads two values)."""
    n = int(series.data.shape[0]) if series.data is not None else 0
    if n == 0:
        return (np.inf, -np.inf)
    if series.timestamps is not None:
        t0, t1 = float(series.timestamps[0]), float(series.timestamps[n - 1])
        step = (t1 - t0) / (n - 1) if n > 1 else 1.0 / (series.rate or 1.0)
        return t0, t1 + step
    rate = float(series.rate or 1.0)
    t0 = float(series.starting_time or 0.0)
    return t0, t0 + n / rate


def _image_stack(images: Any, path: Path, field: str) -> np.ndarray:
    """``(K, H, W)`` float32 from an NWB Images container (each image stored ``(x, y)``)."""
    order = getattr(images, "order_of_images", None)
    if order is not None:
        items = [order.data[i] for i in range(len(order.data))]
    else:
        items = list(images.images.values())
        if len(items) > 1:  # NWB requires order_of_images when an IndexSeries points into Images
            warnings.warn(f"{path}: {field}: Images has no order_of_images, so the order the indices refer to is "
                          f"undefined; using the images in name order {[img.name for img in items]}",
                          RuntimeWarning, stacklevel=2)
    arrays = []
    for img in items:
        a = np.asarray(img.data[:], dtype=np.float32)
        if a.ndim != 2:
            raise ShapeMismatchError(f"{path}: {field}/{img.name}: expected a grey (x, y) image, found shape {a.shape}")
        arrays.append(a.T)
    if not arrays:
        raise MissingStimulusError(f"{path}: {field}: the Images container holds no images")
    if len({a.shape for a in arrays}) != 1:
        raise ShapeMismatchError(f"{path}: {field}: images differ in shape {sorted({a.shape for a in arrays})}")
    return np.stack(arrays)


def _frame_source(series: Any, path: Path, field: str) -> H5Frames | IndexedFrames:
    """A lazy ``(T, H, W)`` frame source for an ImageSeries / OpticalSeries / IndexSeries."""
    if isinstance(series, IndexSeries):
        if series.indexed_images is not None:
            images = _image_stack(series.indexed_images, path, f"{field}/indexed_images")
        elif series.indexed_timeseries is not None:
            src = series.indexed_timeseries
            raw = np.asarray(src.data[:], dtype=np.float32)
            if raw.ndim != 3:
                raise ShapeMismatchError(f"{path}: {field}/indexed_timeseries: expected (frame, x, y), "
                                         f"found shape {raw.shape}")
            images = raw.transpose(0, 2, 1) * np.float32(src.conversion) + np.float32(getattr(src, "offset", 0.0))
        else:
            raise MissingStimulusError(f"{path}: {field}: IndexSeries points to no images")
        idx = series.data
        if len(idx.shape) != 1:
            raise ShapeMismatchError(f"{path}: {field}/data: expected (T,) image indices, found shape {idx.shape}")
        if len(idx) and (int(np.max(idx[:])) >= len(images) or int(np.min(idx[:])) < 0):
            raise ShapeMismatchError(f"{path}: {field}/data: image indices must lie in [0, {len(images)}), "
                                     f"found {int(np.min(idx[:]))}..{int(np.max(idx[:]))}")
        return IndexedFrames(idx, images)
    data = series.data
    external = getattr(series, "external_file", None)
    if data is None or (external is not None and (len(data.shape) < 3 or data.shape[0] == 0)):
        where = f" ({', '.join(str(x) for x in external[:3])})" if external is not None else ""
        raise MissingStimulusError(f"{path}: {field}/external_file: frames stored in external files{where} are not "
                                   "supported; expected the frames in data (frame, x, y)")
    if len(data.shape) != 3:
        raise ShapeMismatchError(f"{path}: {field}/data: expected grey frames (frame, x, y), found shape "
                                 f"{tuple(data.shape)}")
    scale = float(series.conversion if series.conversion is not None else 1.0)
    offset = float(getattr(series, "offset", 0.0) or 0.0)
    if not (np.isfinite(scale) and np.isfinite(offset)):
        raise NonFiniteFramesError(f"{path}: {field}: conversion/offset must be finite, found {scale}, {offset}")
    _check_declared_size(data, path, f"{field}/data")
    return H5Frames(data, transpose=True, scale=scale, offset=offset)


def _check_declared_size(data: Any, path: Path, field: str) -> None:
    """A :class:`ShapeMismatchError` when an HDF5 dataset declares more data than the file stores (a chunked
    dataset whose chunks were never written, a contiguous one that was never filled): its shape is not its
    content, and reading or scanning it would allocate or loop over data that is not there. Cheap: asks the
    HDF5 chunk index, reads no frames."""
    dsid = getattr(data, "id", None)
    shape = tuple(int(v) for v in getattr(data, "shape", ()) or ())
    if dsid is None or not shape or not all(shape):
        return
    try:
        itemsize = int(data.dtype.itemsize)
        declared = int(np.prod(shape, dtype=np.float64)) * itemsize
        chunks = data.chunks
        if chunks is None:
            stored = int(dsid.get_storage_size())
            if data.compression is None and stored < declared:
                raise ShapeMismatchError(f"{path}: {field}: declares shape {shape} ({_bytes(declared)}) but the file "
                                         f"stores only {_bytes(stored)} of it")
            return
        n_chunks = int(np.prod([-(-s // c) for s, c in zip(shape, chunks)], dtype=np.float64))
        written = int(dsid.get_num_chunks())
    except ShapeMismatchError:
        raise
    except Exception:  # noqa: BLE001 - an HDF5 library without the chunk query: nothing to compare
        return
    if written < n_chunks:
        raise ShapeMismatchError(f"{path}: {field}: declares {shape[0]} frames of {shape[1:]} "
                                 f"({_bytes(declared)}) but the file stores only {written} of its {n_chunks} "
                                 "chunks; expected every declared frame to be written")


def _bytes(n: float) -> str:
    """``n`` bytes as ``"1.5 GB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def _check_memory(n_frames: int, n_columns: int, path: Path, field: str) -> None:
    """A :class:`RecordingError` when the per-frame arrays of a recording (frame times, bin edges, responses of
    ``n_columns`` cells, in float64) need more memory than the machine has available; checked before they are
    allocated."""
    need = float(n_frames) * 8.0 * (n_columns + 4)
    free = available_memory_bytes()
    if free is not None and need > free:
        raise RecordingError(f"{path}: {field}: {n_frames} frames with {n_columns} response columns need "
                             f"{_bytes(need)} for times and responses, more than the {_bytes(free)} available")


def _check_finite(frames: H5Frames | IndexedFrames, path: Path, field: str, chunk: int = 2048) -> None:
    """Scan float frames chunk by chunk for NaN / inf (integer data cannot hold them)."""
    if isinstance(frames, IndexedFrames):
        bad = ~np.isfinite(frames.images).reshape(len(frames.images), -1).all(1)
        if bad.any():
            raise NonFiniteFramesError(f"{path}: {field}: image {int(np.flatnonzero(bad)[0])} contains NaN or "
                                       f"infinite values")
        return
    if frames.dtype.kind != "f":
        return
    n = len(frames)
    for a in progress(range(0, n, chunk), desc=f"checking {field}", total=-(-n // chunk), unit="chunk", delay=1.0):
        raw = np.asarray(frames.dataset[a : a + chunk])
        ok = np.isfinite(raw).reshape(len(raw), -1).all(1)
        if not ok.all():
            raise NonFiniteFramesError(f"{path}: {field}/data: frame {a + int(np.flatnonzero(~ok)[0])} contains "
                                       f"NaN or infinite values")


class _FrameRange:
    """Frames ``start:stop`` of another frame source (used when responses cover only part of a movie)."""

    def __init__(self, source: Any, start: int, stop: int):
        self.source, self.start, self.stop = source, int(start), int(stop)
        self.shape = (self.stop - self.start,) + tuple(source.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            key = slice(int(key) + (len(self) if key < 0 else 0), None)
            a, _, _ = key.indices(len(self))
            return self.source[self.start + a : self.start + a + 1]
        a, b, _ = key.indices(len(self))
        return self.source[self.start + a : self.start + max(a, b)]


def _units_responses(
    nwbfile: NWBFile, path: Path, edges: np.ndarray, spans: list[tuple[float, float]], stim_name: str,
    silent_ok: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Spike counts ``(T, N)`` from the Units table (flat ``spike_times`` + index read once).

    ``silent_ok``: no spikes (in the file or during this stimulus) give zero counts instead of an error
    (files that :func:`write_nwb` wrote from spike counts, where silence is data, not a time-base mistake).
    """
    units = nwbfile.units
    if units is None or len(units.id) == 0:
        raise EmptyUnitsError(f"{path}: units: the Units table has no units")
    if "spike_times" not in units.colnames:
        raise EmptyUnitsError(f"{path}: units/spike_times: the Units table has no spike_times column")
    index_col = units["spike_times"]  # VectorIndex over the flat VectorData
    index = np.asarray(index_col.data[:], dtype=np.int64)
    times = np.asarray(index_col.target.data[:], dtype=np.float64)
    if times.size == 0 and not silent_ok:
        raise EmptyUnitsError(f"{path}: units/spike_times: the {len(index)} units have no spikes")
    if not np.all(np.isfinite(times)):
        raise TimestampError(f"{path}: units/spike_times: contains NaN or infinite spike times")
    if np.any(np.diff(np.concatenate([[0], index])) < 0) or (len(index) and index[-1] != times.size):
        raise ShapeMismatchError(f"{path}: units/spike_times_index: expected non-decreasing end offsets ending at "
                                 f"the {times.size} spike times, found {index[:8].tolist()}"
                                 f"{'...' if len(index) > 8 else ''} (last {int(index[-1])})")
    counts, n_out = bin_spikes(times, index, edges)
    if counts.sum() == 0 and not silent_ok:
        raise NoOverlapError(
            f"{path}: units/spike_times: none of the {times.size} spikes ({times.min():.3f}-{times.max():.3f} s) "
            f"falls inside stimulus {stim_name!r} ({edges[0]:.3f}-{edges[-1]:.3f} s)"
        )
    if n_out and times.size:
        inside_any = np.zeros(times.size, bool)
        for t0, t1 in spans:
            inside_any |= (times >= t0) & (times < t1)
        n_orphan = int((~inside_any).sum())
        if n_orphan:
            warnings.warn(f"{path}: units/spike_times: {n_orphan} of {times.size} spikes fall outside every "
                          f"stimulus series and were not counted", RuntimeWarning, stacklevel=3)
    for col in ("cell_id", "unit_name"):
        if col in units.colnames:
            ids = [c.decode() if isinstance(c, bytes) else str(c) for c in units[col].data[:]]
            break
    else:
        ids = [str(i) for i in units.id.data[:]]
    return counts, ids


def _rate_candidates(nwbfile: NWBFile) -> dict[str, TimeSeries]:
    """Rate-like series: RoiResponseSeries anywhere, plain TimeSeries in processing modules (not in the
    ground-truth, bookkeeping and ``codec`` analysis modules; those stay readable by name)."""
    found: dict[str, TimeSeries] = {}

    def visit(obj: Any, where: str, plain_ok: bool) -> None:
        if isinstance(obj, RoiResponseSeries) or (plain_ok and type(obj) is TimeSeries):
            key = obj.name if obj.name not in found else f"{where}/{obj.name}"
            found[key] = obj
        for attr in ("roi_response_series", "time_series"):
            inner = getattr(obj, attr, None)
            if isinstance(inner, dict):
                for v in inner.values():
                    visit(v, f"{where}/{obj.name}", plain_ok)

    for mod_name, mod in nwbfile.processing.items():
        if mod_name in (GT_MODULE, META_MODULE, CODEC_MODULE):
            continue
        for obj in mod.data_interfaces.values():
            visit(obj, f"processing/{mod_name}", True)
    for obj in nwbfile.acquisition.values():
        visit(obj, "acquisition", False)
    return found


def _all_series(nwbfile: NWBFile) -> dict[str, TimeSeries]:
    """Every TimeSeries in the file by name (for ``responses=NAME``)."""
    out: dict[str, TimeSeries] = {}
    for obj in nwbfile.objects.values():
        if isinstance(obj, TimeSeries) and not isinstance(obj, (ImageSeries, IndexSeries)):
            out.setdefault(obj.name, obj)
    return out


def _rate_responses(series: TimeSeries, path: Path, field: str, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(series.data[:], dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ShapeMismatchError(f"{path}: {field}/data: expected (time, cells), found shape {data.shape}")
    data = data * float(series.conversion if series.conversion is not None else 1.0) + float(
        getattr(series, "offset", 0.0) or 0.0)
    times, _ = _series_times(series, data.shape[0], path, field)
    rates, covered = resample_rates(times, data, edges)
    if not covered.any():
        raise NoOverlapError(f"{path}: {field}: samples ({times[0]:.3f}-{times[-1]:.3f} s) do not overlap the "
                             f"stimulus ({edges[0]:.3f}-{edges[-1]:.3f} s)")
    return rates, covered


def _roi_ids(series: TimeSeries, n: int) -> list[str] | None:
    rois = getattr(series, "rois", None)
    if rois is None:
        return None
    try:
        rows = np.asarray(rois.data[:], dtype=np.int64)
        ids = np.asarray(rois.table.id.data[:])[rows]
        return [str(i) for i in ids] if len(ids) == n else None
    except Exception:  # noqa: BLE001 - ids are a nicety; fall back to column numbers
        return None


def _interval_tables(nwbfile: NWBFile) -> Iterator[tuple[str, np.ndarray, np.ndarray, list[set[str]] | None]]:
    """``(table name, starts, stops, tags per row or None)`` for every non-empty interval table (and epochs)."""
    tables = dict(nwbfile.intervals.items()) if nwbfile.intervals is not None else {}
    if nwbfile.epochs is not None:
        tables.setdefault("epochs", nwbfile.epochs)
    for tname, table in tables.items():
        if len(table.id) == 0:
            continue
        starts = np.asarray(table["start_time"].data[:], dtype=np.float64)
        stops = np.asarray(table["stop_time"].data[:], dtype=np.float64)
        tags = ([{t.decode() if isinstance(t, bytes) else str(t) for t in row} for row in table["tags"][:]]
                if "tags" in table.colnames else None)
        yield tname, starts, stops, tags


def _file_intervals(nwbfile: NWBFile) -> dict[str, np.ndarray]:
    """All named intervals: rows by tag (any TimeIntervals with tags) and whole tables by name."""
    found: dict[str, list[tuple[float, float]]] = {}
    for tname, starts, stops, tags in _interval_tables(nwbfile):
        if tname not in ("epochs", "trials", "invalid_times"):
            found.setdefault(tname, []).extend(zip(starts, stops))
        for i, row in enumerate(tags or ()):
            for tag in row:
                found.setdefault(tag, []).append((starts[i], stops[i]))
    return {k: np.asarray(sorted(v), dtype=np.float64).reshape(-1, 2) for k, v in found.items()}


def _own_splits(nwbfile: NWBFile, name: str, others: set[str]) -> dict[str, np.ndarray]:
    """train / validation / test rows of the file's interval tables that may belong to stimulus ``name``: rows
    tagged with another stimulus series' name (``write_nwb`` tags each row with its stimulus) are left out."""
    found: dict[str, list[tuple[float, float]]] = {}
    for tname, starts, stops, tags in _interval_tables(nwbfile):
        if tname in SPLITS:
            found.setdefault(tname, []).extend(zip(starts, stops))
        for i, row in enumerate(tags or ()):
            if row & others and name not in row:
                continue
            for tag in row & set(SPLITS):
                found.setdefault(tag, []).append((starts[i], stops[i]))
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in found.items() if v}


def fraction_intervals(
    frame_times: np.ndarray, frame_rate: float, fractions: Sequence[float] = (0.8, 0.1, 0.1),
    names: Sequence[str] = SPLITS,
) -> dict[str, np.ndarray]:
    """Contiguous splits by fraction of frames, in order (train, validation, test): name -> (1, 2) seconds."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (len(names),) or np.any(f < 0) or f.sum() <= 0:
        raise RecordingError(f"split_fractions: expected {len(names)} non-negative numbers, found {tuple(fractions)}")
    n = len(frame_times)
    bounds = np.round(np.concatenate([[0.0], np.cumsum(f)]) / f.sum() * n).astype(int)
    edges = frame_edges(frame_times, frame_rate)
    return {name: np.array([[edges[a], edges[b]]]) for name, a, b in zip(names, bounds[:-1], bounds[1:]) if b > a}


def _clip(iv: np.ndarray, t0: float, t1: float) -> np.ndarray:
    keep = (iv[:, 1] > t0) & (iv[:, 0] < t1)
    out = iv[keep].copy()
    out[:, 0] = np.maximum(out[:, 0], t0)
    out[:, 1] = np.minimum(out[:, 1], t1)
    return out


def _meta(nwbfile: NWBFile, stim_name: str) -> dict[str, Any]:
    """What :func:`write_nwb` stored about this stimulus (norm stats, unit, cell ids, provenance)."""
    mod = nwbfile.processing.get(META_MODULE)
    if mod is None:
        return {}
    out: dict[str, Any] = {}
    objs = mod.data_interfaces
    if "recordings" in objs:
        t = objs["recordings"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in t["stimulus_name"].data[:]]
        if stim_name in names:
            i = names.index(stim_name)
            for col in ("norm_mean", "norm_std", "frame_rate"):
                if col in t.colnames:
                    v = float(t[col].data[i])
                    out[col] = None if np.isnan(v) else v
            u = t["response_unit"].data[i]
            out["response_unit"] = u.decode() if isinstance(u, bytes) else str(u)
            if "segment_starts" in t.colnames:
                out["segment_starts"] = np.asarray(t["segment_starts"][i], dtype=np.int64)
    if "cells" in objs:
        out["cell_ids"] = [c.decode() if isinstance(c, bytes) else str(c) for c in objs["cells"]["cell_id"].data[:]]
    if f"provenance_{stim_name}" in objs:
        out["provenance"] = table_to_dict(objs[f"provenance_{stim_name}"])
    return out


def read_nwb(
    path: str | os.PathLike,
    stimulus: str | None = None,
    responses: str | None = None,
    splits: Sequence[str] | None = None,
    split_fractions: Sequence[float] | None = None,
    validate: bool = True,
) -> Recording:
    """Read one stimulus series and the responses to it from an NWB file, lazily.

    Parameters
    ----------
    path : the ``.nwb`` file.
    stimulus : name of the stimulus series in ``nwbfile.stimulus`` (OpticalSeries / ImageSeries,
        data ``(frame, x, y)``, read as ``(T, H, W)``; or IndexSeries + Images). Needed when the file
        has several; otherwise :class:`AmbiguousSeriesError` lists them.
    responses : ``None`` (automatic: the Units table if it has spikes in the stimulus' time span, else
        the one rate series overlapping it), ``"units"``, or the name of a TimeSeries /
        RoiResponseSeries of rates (resampled to the frames, ``response_unit="Hz"``; frames the series
        does not cover are dropped with a warning). Spikes are binned onto the frame grid; spikes
        outside every stimulus series are counted and warned about.
    splits : interval names to read from ``epochs`` tags or ``intervals`` tables (clipped to the
        stimulus' time span). ``None``: whichever of train / validation / test exist, else contiguous
        splits by ``split_fractions``. A name the file lacks raises :class:`UnknownIntervalError`.
    split_fractions : fractions (train, validation, test) of contiguous splits for a file without train /
        validation / test intervals (``None``: 0.8 / 0.1 / 0.1). When the file has such intervals but every one
        of them lies outside the stimulus, a warning names them and no splits are invented unless
        ``split_fractions`` is given.
    validate : scan float frames for NaN / inf (chunk by chunk).

    Returns a :class:`Recording` whose stimulus stays in the file: keep it open while you use it and
    close it with ``recording.close()`` or ``with read_nwb(...) as rec:``.
    """
    path = Path(path)
    io, nwbfile, caught = _open_nwb(path)
    try:
        rec = _read(nwbfile, path, stimulus, responses, splits, split_fractions, validate)
    except BaseException:
        io.close()
        raise
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    rec.resources.append(io)
    return rec


def _read(nwbfile: NWBFile, path: Path, stimulus: str | None, responses: str | None,
          splits: Sequence[str] | None, split_fractions: Sequence[float] | None, validate: bool) -> Recording:
    cands = stimulus_series(nwbfile)
    if not cands:
        raise MissingStimulusError(f"{path}: stimulus: no OpticalSeries, ImageSeries or IndexSeries in "
                                   f"nwbfile.stimulus (found: {sorted(nwbfile.stimulus) or 'nothing'})")
    name = _choose("stimulus", "stimulus", path, cands, stimulus, MissingStimulusError,
                   "stimulus=NAME (CLI: --stimulus NAME)")
    series = cands[name]
    field = f"stimulus/{name}"
    frames = _frame_source(series, path, field)
    n = len(frames)
    if n == 0:
        raise MissingStimulusError(f"{path}: {field}/data: the stimulus has no frames")
    n_units = len(nwbfile.units.id) if nwbfile.units is not None else 0
    _check_memory(n, n_units, path, f"{field}/data")
    frame_times, rate = _series_times(series, n, path, field)
    meta = _meta(nwbfile, name)
    if series.timestamps is not None and meta.get("frame_rate"):
        rate = float(meta["frame_rate"])  # the written recording's rate (timestamps alone only give the median)
    if validate:
        _check_finite(frames, path, field)
    edges = frame_edges(frame_times, rate)
    silent_ok = meta.get("response_unit") == "count"

    # ---- responses
    rate_cands = _rate_candidates(nwbfile)
    covered: np.ndarray | None = None
    if responses is None:
        has_units = nwbfile.units is not None and len(nwbfile.units.id) > 0
        overlapping = {k: s for k, s in rate_cands.items()
                       if (lambda sp: sp[0] < edges[-1] and sp[1] > edges[0])(_series_span(s))}
        if has_units:
            try:
                counts, ids = _units_responses(nwbfile, path, edges, [_series_span(s) for s in cands.values()], name,
                                               silent_ok)
                choice = "units"
            except (NoOverlapError, EmptyUnitsError):
                if not overlapping:
                    raise
                choice = None
        else:
            choice = None
        if choice is None:
            if not overlapping:
                if rate_cands:
                    raise NoOverlapError(f"{path}: responses: none of the rate series {sorted(rate_cands)} overlaps "
                                         f"stimulus {name!r} ({edges[0]:.3f}-{edges[-1]:.3f} s)")
                raise EmptyUnitsError(f"{path}: units: no Units table and no rate series (TimeSeries / "
                                      f"RoiResponseSeries) to read responses from")
            choice = _choose("response", "responses", path, overlapping, None, RecordingError,
                             "responses=NAME (CLI: --responses NAME)")
    else:
        choice = responses
    if choice == "units":
        if responses is not None:
            counts, ids = _units_responses(nwbfile, path, edges, [_series_span(s) for s in cands.values()], name,
                                           silent_ok)
        values, unit = counts, "count"
    else:
        pool = dict(rate_cands)
        for k, s in _all_series(nwbfile).items():
            pool.setdefault(k, s)
        key = _choose("response", "responses", path, pool, choice, RecordingError, "responses=NAME")
        rseries = pool[key]
        values, covered = _rate_responses(rseries, path, f"responses/{key}", edges)
        unit = "Hz"
        ids = _roi_ids(rseries, values.shape[1]) or meta.get("cell_ids") or []
        if len(ids) != values.shape[1]:
            ids = [str(i) for i in range(values.shape[1])]
    # ---- trim to the frames the responses cover (rates only)
    start, stop = 0, n
    if covered is not None and not covered.all():
        idx = np.flatnonzero(covered)
        start, stop = int(idx[0]), int(idx[-1]) + 1
        warnings.warn(f"{path}: responses/{choice}: covers frames {start}..{stop - 1} of {n} of stimulus {name!r}; "
                      f"the others are dropped", RuntimeWarning, stacklevel=2)
        frames = _FrameRange(frames, start, stop)
        values = values[start:stop]
        frame_times = frame_times[start:stop]
    segment_starts = meta.get("segment_starts", np.zeros(1, np.int64))
    if (start, stop) != (0, n):  # the segment holding the new first frame starts at 0; later ones shift
        kept = segment_starts[(segment_starts > start) & (segment_starts < stop)]
        segment_starts = np.concatenate([[0], kept - start])
    t0, t1 = float(frame_times[0]), float(frame_times[-1] + 1.0 / rate)

    # ---- intervals
    available = _file_intervals(nwbfile)
    if splits is not None:
        intervals = {}
        for s in splits:
            if s not in available:
                raise UnknownIntervalError(f"{path}: intervals: no interval named {s!r} (epochs tags or "
                                           f"intervals tables); available: {sorted(available) or 'none'}")
            intervals[s] = _clip(available[s], t0, t1)
    else:
        intervals = {s: _clip(available[s], t0, t1) for s in SPLITS if s in available}
        intervals = {k: v for k, v in intervals.items() if len(v)}
        if not intervals:
            own = _own_splits(nwbfile, name, set(cands) - {name})
            if own and split_fractions is None:
                rows = np.concatenate(list(own.values()))
                warnings.warn(f"{path}: epochs: the intervals {sorted(own)} ({len(rows)} rows, {rows.min():.3f}-"
                              f"{rows.max():.3f} s) all lie outside stimulus {name!r} ({t0:.3f}-{t1:.3f} s); the "
                              "recording has no splits (pass split_fractions to split it by fraction)",
                              RuntimeWarning, stacklevel=3)
                intervals = {}
            else:
                intervals = fraction_intervals(frame_times, rate, split_fractions or (0.8, 0.1, 0.1))

    gt = read_ground_truth(nwbfile, name, n)
    if gt is not None and (start, stop) != (0, n):
        gt = gt.time_slice(start, stop)
    provenance = dict(meta.get("provenance", {}))
    provenance.update({"source_file": str(path), "stimulus_series": name, "stimulus_type": type(series).__name__,
                       "responses": choice, "reader": f"retina_codec {__version__} read_nwb"})
    try:
        return Recording(
            stimulus=frames, frame_times=frame_times, frame_rate=rate, responses=values, cell_ids=ids,
            intervals=intervals, response_unit=unit, stimulus_name=name,
            norm_mean=meta.get("norm_mean"), norm_std=meta.get("norm_std"), provenance=provenance,
            ground_truth=gt, segment_starts=segment_starts,
        )
    except RecordingError as err:
        raise type(err)(f"{path}: {err}") from err


# =====================================================================================================
# writing
# =====================================================================================================
class _FrameChunks(GenericDataChunkIterator):
    """Streams frames to the file in time chunks, already in NWB order ``(T, W, H)``."""

    def __init__(self, read: Callable[[int, int], np.ndarray], shape: tuple[int, int, int], dtype: np.dtype,
                 chunk_frames: int, buffer_frames: int, desc: str):
        self._read, self._shape, self._dtype_ = read, shape, np.dtype(dtype)
        t, h, w = shape
        chunk_frames = max(1, min(chunk_frames, t))
        buffer_frames = max(chunk_frames, min(t, buffer_frames // chunk_frames * chunk_frames))
        super().__init__(chunk_shape=(chunk_frames, w, h), buffer_shape=(buffer_frames, w, h),
                         display_progress=not is_quiet(),
                         progress_bar_options={"desc": desc, "leave": False, "unit": "buffer", "delay": 1.0})

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        a, b, _ = selection[0].indices(self._shape[0])
        frames = np.asarray(self._read(a, b)).astype(self._dtype_, copy=False)
        return np.ascontiguousarray(frames.transpose(0, 2, 1)[:, selection[1], selection[2]])

    def _get_maxshape(self) -> tuple[int, int, int]:
        t, h, w = self._shape
        return (t, w, h)

    def _get_dtype(self) -> np.dtype:
        return self._dtype_


def _compact_reader(src: Any) -> tuple[Callable[[int, int], np.ndarray], np.dtype, float, float]:
    """How to store a frame source compactly: reader of raw ``(b-a, H, W)`` frames, dtype, scale, offset.

    uint8 data with an affine scale (ArrayFrames, H5Frames, ConcatFrames of those with one scale) are
    stored as uint8 with NWB ``conversion`` / ``offset``; anything else as float32.
    """
    if isinstance(src, ArrayFrames) and src.data.dtype == np.uint8:
        return (lambda a, b: src.data[a:b]), np.dtype(np.uint8), src.scale, src.offset
    if isinstance(src, H5Frames) and src.dtype == np.uint8:
        def read_h5(a: int, b: int) -> np.ndarray:
            raw = np.asarray(src.dataset[a:b])
            return raw.transpose(0, 2, 1) if src.transpose else raw
        return read_h5, np.dtype(np.uint8), src.scale, src.offset
    if isinstance(src, ConcatFrames):
        parts = [_compact_reader(p) for p in src.parts]
        if all(p[1] == np.uint8 for p in parts) and len({(p[2], p[3]) for p in parts}) == 1:
            def read_concat(a: int, b: int) -> np.ndarray:
                out = []
                for i, (read, _, _, _) in enumerate(parts):
                    lo, hi = int(src.bounds[i]), int(src.bounds[i + 1])
                    s, e = max(a, lo), min(b, hi)
                    if s < e:
                        out.append(read(s - lo, e - lo))
                return np.concatenate(out) if len(out) > 1 else out[0]
            return read_concat, np.dtype(np.uint8), parts[0][2], parts[0][3]
    return (lambda a, b: src[a:b]), np.dtype(np.float32), 1.0, 0.0


def _timing(frame_times: np.ndarray, rate: float) -> dict[str, Any]:
    """``starting_time`` + ``rate`` when the grid is regular to 1 ns, else ``timestamps``."""
    n = len(frame_times)
    regular = frame_times[0] + np.arange(n) / rate
    if np.max(np.abs(regular - frame_times)) <= 1e-9:
        return {"starting_time": float(frame_times[0]), "rate": float(rate)}
    return {"timestamps": H5DataIO(np.asarray(frame_times, np.float64), compression="gzip", compression_opts=4,
                                   chunks=(min(n, 2**16),))}


def _spike_times(rec: Recording) -> list[np.ndarray]:
    """Per cell, spike times that put back exactly ``rec.responses`` counts: k spikes of bin t at
    ``edges[t] + (j + 0.5) / k * (edges[t+1] - edges[t])``, j = 0..k-1."""
    counts = np.asarray(rec.responses, dtype=np.float64)
    bad = ~np.isfinite(counts) | (counts < 0) | (counts != np.round(counts))
    if bad.any():
        t, i = np.argwhere(bad)[0]
        raise RecordingError(f"{rec.stimulus_name}: responses: spike counts must be non-negative integers "
                             f"(response_unit='count'); found {counts[t, i]!r} in bin {t}, cell {i}")
    counts = counts.astype(np.int64)
    edges = frame_edges(rec.frame_times, rec.frame_rate)
    width = np.diff(edges)
    out = []
    for i in range(counts.shape[1]):
        k = counts[:, i]
        bins = np.repeat(np.arange(len(k)), k)
        j = np.arange(bins.size) - np.repeat(np.cumsum(k) - k, k)
        out.append(edges[bins] + (j + 0.5) / k[bins] * width[bins])
    return out


def _check_writable(recs: list[Recording]) -> None:
    names = [r.stimulus_name for r in recs]
    for nm in names:
        if not _NAME_OK.match(nm):
            raise RecordingError(f"stimulus_name: {nm!r} cannot name an NWB object (no '/' or ':')")
    if len(set(names)) != len(names):
        raise RecordingError(f"stimulus_name: recordings written together need distinct names, found {names}")
    ids = list(recs[0].cell_ids)
    for r in recs[1:]:
        if list(r.cell_ids) != ids:
            raise ShapeMismatchError(f"cell_ids: recordings written together must share cell ids; "
                                     f"{recs[0].stimulus_name!r} has {len(ids)}, {r.stimulus_name!r} has "
                                     f"{len(r.cell_ids)} (or in another order)")
    spans = sorted((r.frame_times[0], r.frame_times[-1] + 1.0 / r.frame_rate, r.stimulus_name) for r in recs)
    for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        if b0 < a1 - 1e-9:
            raise TimestampError(f"frame_times: {an!r} ({a0:.3f}-{a1:.3f} s) and {bn!r} (from {b0:.3f} s) overlap "
                                 f"in time; shift one of them")


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _subject(provenance: dict[str, Any]) -> Subject:
    info = provenance.get("subject") if isinstance(provenance.get("subject"), dict) else {}
    return Subject(
        subject_id=str(info.get("subject_id", "unknown")),
        species=str(info.get("species", "Ambystoma tigrinum")),
        sex=str(info.get("sex", "U")),
        age=str(info.get("age", "P0D/")),
        description=str(info.get("description", "subject details unknown (simulated or converted recording; "
                                                  "species defaults to the tiger salamander)")),
    )


def write_nwb(
    recordings: Recording | Sequence[Recording],
    path: str | os.PathLike,
    overwrite: bool = False,
    session_description: str | None = None,
    identifier: str | None = None,
    session_start_time: datetime | None = None,
    chunk_frames: int = 256,
) -> Path:
    """Write one or several recordings (distinct ``stimulus_name``, same cells, non-overlapping times)
    to one NWB file, atomically (temporary name, then rename). Returns the path.

    Stimuli become OpticalSeries in ``nwbfile.stimulus`` (uint8 + ``conversion``/``offset`` when the
    frames are uint8, float32 otherwise; chunks of ``chunk_frames`` frames, gzip), spike counts the
    Units table, rates a TimeSeries, intervals epochs; ground truth the ``ground_truth`` module. See the
    module docstring for the layout. Raises :class:`OutputExistsError` if ``path`` exists and not
    ``overwrite``.
    """
    recs = [recordings] if isinstance(recordings, Recording) else list(recordings)
    if not recs:
        raise RecordingError("recordings: nothing to write")
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: file exists (pass overwrite=True / --overwrite to replace it)")
    check_output_path(path)  # a directory or a read-only folder: refused before building the file
    _check_writable(recs)
    recs = sorted(recs, key=lambda r: r.frame_times[0])
    first = recs[0]
    start_time = session_start_time
    if start_time is None and isinstance(first.provenance.get("session_start_time"), str):
        try:
            start_time = datetime.fromisoformat(first.provenance["session_start_time"])
        except ValueError:
            start_time = None
    if start_time is None:
        start_time = datetime.now(timezone.utc).replace(microsecond=0)
    if start_time.tzinfo is None:
        start_time = start_time.replace(tzinfo=timezone.utc)
    nwbfile = NWBFile(
        session_description=session_description or "retinal ganglion-cell responses to "
        + ", ".join(r.stimulus_name for r in recs) + " (written by retina-codec)",
        identifier=identifier or str(uuid.uuid4()),
        session_start_time=start_time,
        source_script=f"retina-codec {__version__}",
        source_script_file_name="retina_codec/recordings/nwb.py",
        subject=_subject(first.provenance),
    )
    meta = nwbfile.create_processing_module(META_MODULE, "retina-codec bookkeeping: stimulus normalisation, cell "
                                                          "ids, response unit and provenance per stimulus")
    count_recs = [r for r in recs if r.response_unit == "count"]
    epochs: list[tuple[float, float, list[str]]] = []
    for rec in recs:
        timing = _timing(rec.frame_times, rec.frame_rate)
        read, dtype, scale, offset = _compact_reader(rec.stimulus)
        t, h, w = rec.stimulus.shape
        data = _FrameChunks(read, (t, h, w), dtype, chunk_frames, buffer_frames=max(chunk_frames, 2**25 // (h * w)),
                            desc=f"writing {rec.stimulus_name}")
        prov = rec.provenance
        nwbfile.add_stimulus(OpticalSeries(
            name=rec.stimulus_name,
            data=H5DataIO(data, compression="gzip", compression_opts=4),
            unit="a.u.", conversion=float(scale), offset=float(offset),
            distance=_number(prov.get("screen_distance_m"), 0.0),
            field_of_view=[float(w), float(h)],
            orientation="data is (frame, x, y): x = column (left to right), y = row (top to bottom); "
                        "field_of_view is in stimulus pixels",
            dimension=[w, h],
            description=f"stimulus {rec.stimulus_name!r}: {t} grey frames of {h}x{w} pixels at "
                        f"{rec.frame_rate:g} Hz, intensity = data * conversion + offset",
            **timing,
        ))
        if rec.response_unit != "count":
            mod = nwbfile.processing.get(RATES_MODULE) or nwbfile.create_processing_module(
                RATES_MODULE, "firing rates of the recorded cells on each stimulus' frame grid")
            resp = np.asarray(rec.responses, np.float32)
            mod.add(TimeSeries(
                name=f"rates_{rec.stimulus_name}",
                data=H5DataIO(resp, compression="gzip", compression_opts=4,
                              chunks=(min(t, max(1, 2**16 // resp.shape[1])), resp.shape[1])),
                unit=rec.response_unit, description=f"responses (T, N) to {rec.stimulus_name!r} in "
                f"{rec.response_unit}; columns are the cells of processing/{META_MODULE}/cells", **_timing(
                    rec.frame_times, rec.frame_rate)))
        for split, ivs in rec.intervals.items():
            for a, b in ivs:
                epochs.append((float(a), float(b), [split, rec.stimulus_name]))
        if rec.ground_truth is not None:
            write_ground_truth(nwbfile, rec.ground_truth, rec.stimulus_name, _timing(rec.frame_times, rec.frame_rate), t)
        if prov:
            meta.add(dict_to_table(f"provenance_{rec.stimulus_name}", prov,
                                   f"provenance of {rec.stimulus_name!r} as JSON key/value rows"))
    if count_recs:
        units = Units(name="units", resolution=1.0 / max(r.frame_rate for r in count_recs),
                      description="spike times placed deterministically inside each frame bin from spike counts "
                                  "(k spikes of bin t at start + (j + 0.5) / k * bin width)")
        units.add_column("cell_id", "identifier of the cell")
        per_rec = [_spike_times(r) for r in count_recs]
        for i, cid in enumerate(first.cell_ids):
            st = np.sort(np.concatenate([p[i] for p in per_rec]))
            units.add_unit(spike_times=st, cell_id=str(cid))
        nwbfile.units = units
    for a, b, tags in sorted(epochs, key=lambda e: (e[0], e[1])):
        nwbfile.add_epoch(start_time=a, stop_time=b, tags=tags)
    seg_starts = VectorData(name="segment_starts", description="frame indices where a separately presented movie "
                            "starts (history windows never span two); [0]: one continuous movie",
                            data=[int(s) for r in recs for s in r.segment_starts])
    seg_index = VectorIndex(name="segment_starts_index", target=seg_starts,
                            data=[int(i) for i in np.cumsum([len(r.segment_starts) for r in recs])])
    meta.add(DynamicTable(
        name="recordings", description="one row per stimulus series",
        columns=[
            VectorData(name="stimulus_name", description="name of the stimulus series",
                       data=[r.stimulus_name for r in recs]),
            VectorData(name="response_unit", description="'count' (spikes per frame bin) or 'Hz'",
                       data=[r.response_unit for r in recs]),
            VectorData(name="norm_mean", description="stimulus normalisation mean (NaN: not computed)",
                       data=[np.nan if r.norm_mean is None else float(r.norm_mean) for r in recs]),
            VectorData(name="norm_std", description="stimulus normalisation std (NaN: not computed)",
                       data=[np.nan if r.norm_std is None else float(r.norm_std) for r in recs]),
            VectorData(name="frame_rate", description="frame rate in Hz (sets the last frame's duration when the "
                       "stimulus has timestamps)", data=[float(r.frame_rate) for r in recs]),
            seg_starts, seg_index,
        ],
    ))
    meta.add(DynamicTable(name="cells", description="the recorded cells, in response-column order", columns=[
        VectorData(name="cell_id", description="identifier of the cell", data=[str(c) for c in first.cell_ids])]))
    with atomic_path(path, suffix=".nwb") as tmp:
        # our own h5py file, without hdmf's 32 MiB raw-data chunk cache: after a failed write (disk full)
        # HDF5 would flush that cache when closing the datasets, fail again and then crash (segfault)
        with NWBHDF5IO(str(tmp), mode="w", file=h5_create(tmp)) as io:
            io.write(nwbfile)
    return path

