"""History windows: the model input for bin t is the ``h`` frames before it, oldest first.

By the torch-deep-retina convention (``offset=1``) the response in bin ``t`` is predicted from frames
``t - h … t - 1``. In general the window of bin ``t`` holds frames ``t - h - offset + 1 … t - offset``;
``offset=0`` includes frame ``t`` itself. Windows are strided views, never copies of the movie.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import RecordingError

__all__ = ["window_start", "first_valid_bin", "history_windows", "frames_of_windows", "bin_chunks"]


def window_start(t: int | np.ndarray, history: int, offset: int = 1) -> int | np.ndarray:
    """Index of the oldest frame in the window of bin ``t``."""
    return t - history - offset + 1


def first_valid_bin(history: int, offset: int = 1) -> int:
    """The first bin whose whole window lies inside the movie."""
    return history + offset - 1


def history_windows(frames: np.ndarray, history: int) -> np.ndarray:
    """All windows of ``history`` consecutive frames, as a read-only strided view.

    ``frames`` is ``(n, H, W)``; the result is ``(n - history + 1, history, H, W)`` where
    ``out[i] = frames[i : i + history]``. No data is copied.
    """
    if frames.ndim != 3:
        raise RecordingError(f"frames must be (n, H, W); got shape {frames.shape}")
    n = frames.shape[0]
    if n < history:
        return np.empty((0, history) + frames.shape[1:], frames.dtype)
    s0 = frames.strides[0]
    return np.lib.stride_tricks.as_strided(
        frames,
        shape=(n - history + 1, history) + frames.shape[1:],
        strides=(s0, s0) + frames.strides[1:],
        writeable=False,
    )


def frames_of_windows(windows: np.ndarray) -> np.ndarray:
    """The ``B + h - 1`` consecutive frames ``(B+h-1, H, W)`` that a batch of overlapping windows
    ``(B, h, H, W)`` (as made by :func:`history_windows`) was cut from (a copy)."""
    if windows.shape[0] == 0:
        return windows[:0, 0]
    return np.concatenate([windows[:, 0], windows[-1, 1:]], axis=0)


def bin_chunks(bins: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """Ranges ``[c, d)`` of at most ``size`` consecutive bins covering the sorted ``bins``: each run of
    consecutive bins cut into pieces (the batches of :meth:`Recording.iter_windows`)."""
    bins = np.asarray(bins, dtype=np.int64)
    if bins.size == 0:
        return
    breaks = np.flatnonzero(np.diff(bins) != 1) + 1
    for seg in np.split(bins, breaks):
        a, b = int(seg[0]), int(seg[-1]) + 1
        for c in range(a, b, size):
            yield c, min(b, c + size)
