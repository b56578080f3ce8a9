"""Frame sources: stimulus movies that may live in memory or lazily in an HDF5 file.

A frame source behaves like a read-only ``(T, H, W)`` float32 array along its first axis:
``len(src)``, ``src.shape``, and ``src[a:b]`` (a contiguous slice of frames, returned as a float32
numpy array of shape ``(b - a, H, W)``). Only the frames asked for are read, so a one-hour movie can
be iterated in windows without holding it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import RecordingError

__all__ = ["FrameSource", "ArrayFrames", "H5Frames", "IndexedFrames", "ConcatFrames", "as_frame_source",
           "raw_frames"]


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields float32 ``(n, H, W)`` frames for a slice of time."""

    shape: tuple[int, int, int]

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice) -> np.ndarray: ...


def _as_slice(key: Any, n: int) -> tuple[int, int]:
    if isinstance(key, (int, np.integer)):
        k = int(key) + (n if key < 0 else 0)
        if not 0 <= k < n:
            raise IndexError(f"frame {key} out of range for {n} frames")
        return k, k + 1
    if not isinstance(key, slice) or key.step not in (None, 1):
        raise TypeError("frame sources support integers and contiguous slices only")
    start, stop, _ = key.indices(n)
    return start, max(start, stop)


def _to_float32(raw: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``raw * scale + offset`` as C-contiguous float32; ``raw`` itself only when nothing changes."""
    if scale == 1.0 and offset == 0.0 and raw.dtype == np.float32 and raw.flags.c_contiguous:
        return raw
    out = np.array(raw, dtype=np.float32, order="C")  # always a copy: never scale the source in place
    if scale != 1.0:
        out *= np.float32(scale)
    if offset != 0.0:
        out += np.float32(offset)
    return out


class ArrayFrames:
    """Frames held in memory (any numeric dtype), converted to float32 as ``data * scale + offset``."""

    def __init__(self, data: np.ndarray, scale: float = 1.0, offset: float = 0.0):
        data = np.asarray(data)
        if data.ndim != 3:
            raise RecordingError(f"stimulus must be (T, H, W); got shape {data.shape}")
        self.data, self.scale, self.offset = data, float(scale), float(offset)
        self.shape = tuple(int(s) for s in data.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        a, b = _as_slice(key, len(self))
        return _to_float32(self.data[a:b], self.scale, self.offset)

    def raw(self, key: Any) -> tuple[np.ndarray, float, float]:
        """Stored values of a slice, unconverted (a view), with ``scale, offset``: frames = raw·scale + offset."""
        a, b = _as_slice(key, len(self))
        return self.data[a:b], self.scale, self.offset

    def __repr__(self) -> str:
        return f"ArrayFrames(shape={self.shape}, dtype={self.data.dtype})"


class H5Frames:
    """Lazy frames from an HDF5 dataset (h5py.Dataset or anything sliceable along axis 0).

    ``transpose=True`` reads NWB's ``(frame, x, y)`` order and returns ``(frame, y, x)`` = ``(T, H, W)``.
    Values are returned as ``data * scale + offset`` (NWB's ``conversion`` and ``offset``).
    """

    def __init__(self, dataset: Any, transpose: bool = False, scale: float = 1.0, offset: float = 0.0):
        if len(dataset.shape) != 3:
            raise RecordingError(f"stimulus dataset must be 3-D; got shape {tuple(dataset.shape)}")
        self.dataset, self.transpose = dataset, bool(transpose)
        self.scale, self.offset = float(scale), float(offset)
        t, a, b = (int(s) for s in dataset.shape)
        self.shape = (t, b, a) if transpose else (t, a, b)
        self.dtype = np.dtype(dataset.dtype)
        self.filename = str(getattr(getattr(dataset, "file", None), "filename", "") or "<in memory>")

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, key: Any) -> np.ndarray:
        """Stored frames ``[a, b)`` as read; a closed file is a :class:`RecordingError` (h5py: RuntimeError)."""
        a, b = _as_slice(key, len(self))
        if not getattr(getattr(self.dataset, "id", None), "valid", True):
            raise RecordingError(f"{self.filename}: stimulus frames: the file is closed (the frames are read "
                                 "lazily: use the recording inside 'with read_nwb(...) as rec:' or before "
                                 "rec.close())")
        try:
            return np.asarray(self.dataset[a:b])
        except OSError as err:  # h5py: a corrupt compressed chunk ("filter returned failure during read")
            raise RecordingError(f"{self.filename}: stimulus frames {a}–{b}: cannot be read ({err}); the file is "
                                 "damaged") from err

    def __getitem__(self, key: Any) -> np.ndarray:
        raw = self._read(key)
        return _to_float32(raw.transpose(0, 2, 1) if self.transpose else raw, self.scale, self.offset)

    def raw(self, key: Any) -> tuple[np.ndarray, float, float]:
        """Stored values of a slice as read from the file (``(n, H, W)``), with ``scale, offset``."""
        raw = self._read(key)
        return (raw.transpose(0, 2, 1) if self.transpose else raw), self.scale, self.offset

    def __repr__(self) -> str:
        return f"H5Frames(shape={self.shape}, transpose={self.transpose})"


class IndexedFrames:
    """Frames given as indices into a small stack of images (NWB IndexSeries + Images).

    ``images`` is ``(K, H, W)`` (already in ``(H, W)`` order), ``indices`` is ``(T,)`` integers.
    """

    def __init__(self, indices: Any, images: np.ndarray, scale: float = 1.0, offset: float = 0.0):
        self.indices = indices
        self.images = np.asarray(images, dtype=np.float32) * np.float32(scale) + np.float32(offset)
        self.shape = (int(len(indices)),) + tuple(int(s) for s in self.images.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        a, b = _as_slice(key, len(self))
        idx = np.asarray(self.indices[a:b], dtype=np.int64)
        return self.images[idx]

    def __repr__(self) -> str:
        return f"IndexedFrames(shape={self.shape}, n_images={len(self.images)})"


class ConcatFrames:
    """Several frame sources played one after the other (e.g. a lab file's train then test movie)."""

    def __init__(self, parts: Sequence[FrameSource]):
        if not parts:
            raise RecordingError("ConcatFrames needs at least one part")
        hw = {tuple(p.shape[1:]) for p in parts}
        if len(hw) != 1:
            raise RecordingError(f"all parts must share (H, W); got {sorted(hw)}")
        self.parts = list(parts)
        self.bounds = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.bounds[-1]),) + next(iter(hw))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        a, b = _as_slice(key, len(self))
        chunks = []
        for i, part in enumerate(self.parts):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            s, e = max(a, lo), min(b, hi)
            if s < e:
                chunks.append(part[s - lo : e - lo])
        if not chunks:
            return np.zeros((0,) + self.shape[1:], np.float32)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def __repr__(self) -> str:
        return f"ConcatFrames(shape={self.shape}, parts={len(self.parts)})"


def as_frame_source(stimulus: Any) -> FrameSource:
    """Wrap a numpy array as :class:`ArrayFrames`; pass frame sources through unchanged."""
    if isinstance(stimulus, (ArrayFrames, H5Frames, IndexedFrames, ConcatFrames)):
        return stimulus
    if isinstance(stimulus, np.ndarray):
        return ArrayFrames(stimulus)
    if hasattr(stimulus, "shape") and hasattr(stimulus, "__getitem__") and len(stimulus.shape) == 3:
        if isinstance(stimulus, FrameSource) and not hasattr(stimulus, "dtype"):
            return stimulus
        return H5Frames(stimulus)
    return ArrayFrames(np.asarray(stimulus))


def raw_frames(source: Any, a: int, b: int) -> tuple[np.ndarray, float, float] | None:
    """Frames ``a … b−1`` of ``source`` as stored (e.g. uint8 codes) with ``scale, offset`` such that
    ``source[a:b] == raw · scale + offset``; ``None`` for sources that only give converted frames."""
    get = getattr(source, "raw", None)
    return get(slice(a, b)) if callable(get) else None
