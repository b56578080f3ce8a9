"""The :class:`Recording`: a stimulus movie on a frame grid, responses per frame bin, named intervals."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import (
    NonFiniteFramesError,
    NonFiniteResponsesError,
    RecordingError,
    ShapeMismatchError,
    TimestampError,
    UnknownIntervalError,
)
from .cells import resolve_cells
from .frames import ArrayFrames, as_frame_source
from .ground_truth import GroundTruth
from .windows import bin_chunks, first_valid_bin, history_windows, window_start

__all__ = ["Recording", "WindowBatch", "SPLITS", "RESPONSE_UNITS"]

SPLITS = ("train", "validation", "test")
RESPONSE_UNITS = ("count", "Hz")


def _check_history(history: int) -> None:
    if history < 1:
        raise RecordingError(f"history: expected at least 1 frame, found {history}")


def _checked_segment_starts(starts: Any, n_frames: int) -> np.ndarray:
    """``segment_starts`` as a (k,) int64 array: integers, first 0, strictly increasing, all < ``n_frames``."""
    a = np.asarray(starts)
    if a.ndim != 1 or a.size == 0:
        raise RecordingError(f"segment_starts: expected a non-empty list of frame indices, found shape {a.shape}")
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise RecordingError(f"segment_starts: expected integer frame indices, found {a.tolist()!r}")
    a = a.astype(np.int64)
    if a[0] != 0:
        raise RecordingError(f"segment_starts: the first segment must start at frame 0, found {int(a[0])}")
    if np.any(np.diff(a) <= 0):
        raise RecordingError(f"segment_starts: must be strictly increasing, found {a.tolist()}")
    if a[-1] >= max(n_frames, 1):
        raise RecordingError(f"segment_starts: frame {int(a[-1])} is past the movie's last frame "
                             f"{n_frames - 1} (every segment needs at least one frame)")
    return a


class WindowBatch(NamedTuple):
    """A batch of history windows: ``bins (B,)``, ``stimulus (B, h, H, W)`` float32, ``responses (B, N)``."""

    bins: np.ndarray
    stimulus: np.ndarray
    responses: np.ndarray


@dataclass(eq=False)
class Recording:
    """Stimulus and responses on one frame grid, with times in seconds (pynwb-style, nothing hidden).

    Attributes
    ----------
    stimulus : frame source ``(T, H, W)`` float32 (a numpy array is wrapped; HDF5 datasets stay lazy).
    frame_times : (T,) float64, start time of each frame in seconds; strictly increasing.
    frame_rate : frames per second (Hz); frame t lasts until ``frame_times[t + 1]`` (the last one
        ``1 / frame_rate``).
    responses : (T, N) float32, per frame bin: spike counts (``response_unit="count"``) or rates
        (``"Hz"``, e.g. imaging data).
    cell_ids : (N,) str identifiers of the cells.
    intervals : name -> (k, 2) float64 array of ``[start, stop)`` times in seconds; the splits
        ``train`` / ``validation`` / ``test`` by convention.
    response_unit : ``"count"`` (spikes per bin) or ``"Hz"``.
    stimulus_name : name of the stimulus series (e.g. ``"naturalscene"``).
    norm_mean, norm_std : stimulus normalisation (scalars); :meth:`normalization` computes them from
        the train split when not given.
    provenance : free-form dict (source file, series names, software versions).
    ground_truth : :class:`GroundTruth` for simulated recordings, else ``None``.
    resources : open files behind lazy data (e.g. the ``NWBHDF5IO`` of :func:`read_nwb`); kept alive
        with the recording and released by :meth:`close` (or leaving a ``with`` block).
    segment_starts : (k,) int64, sorted frame indices where a separately presented movie starts (e.g. the
        lab's train and test movies joined into one frame source); ``[0]`` (default) is one continuous
        movie. A history window never spans two segments: :meth:`window_bins` keeps a bin only when its
        whole window lies in the segment holding the bin, so the first bins of every segment are dropped.
    """

    stimulus: Any
    frame_times: np.ndarray
    frame_rate: float
    responses: np.ndarray
    cell_ids: Sequence[str] = ()
    intervals: dict[str, np.ndarray] = field(default_factory=dict)
    response_unit: str = "count"
    stimulus_name: str = "stimulus"
    norm_mean: float | None = None
    norm_std: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    ground_truth: GroundTruth | None = None
    resources: list[Any] = field(default_factory=list, repr=False)
    segment_starts: Sequence[int] | np.ndarray = (0,)

    def __post_init__(self) -> None:
        self.stimulus = as_frame_source(self.stimulus)
        self.frame_times = np.asarray(self.frame_times, dtype=np.float64)
        self.responses = np.asarray(self.responses, dtype=np.float32)
        if self.responses.ndim == 1:
            self.responses = self.responses[:, None]
        t = len(self.stimulus)
        if self.frame_times.shape != (t,):
            raise ShapeMismatchError(
                f"frame_times: expected shape ({t},) to match the stimulus's {t} frames, "
                f"found {self.frame_times.shape}"
            )
        if self.responses.ndim != 2 or self.responses.shape[0] != t:
            raise ShapeMismatchError(
                f"responses: expected shape ({t}, N) to match the stimulus's {t} frames, "
                f"found {self.responses.shape}"
            )
        if not np.all(np.isfinite(self.frame_times)):
            bad = int(np.flatnonzero(~np.isfinite(self.frame_times))[0])
            raise TimestampError(f"frame_times: frame {bad} has a NaN or infinite time ({self.frame_times[bad]!r})")
        if t > 1 and not np.all(np.diff(self.frame_times) > 0):
            bad = int(np.flatnonzero(np.diff(self.frame_times) <= 0)[0]) + 1
            raise TimestampError(
                f"frame_times: must be strictly increasing; frame {bad} at {self.frame_times[bad]!r} s "
                f"follows {self.frame_times[bad - 1]!r} s"
            )
        if not np.all(np.isfinite(self.responses)):
            b, c = (int(i) for i in np.argwhere(~np.isfinite(self.responses))[0])
            raise NonFiniteResponsesError(f"responses: bin {b}, cell {c} is {self.responses[b, c]!r}; responses "
                                          f"must be finite ({int((~np.isfinite(self.responses)).sum())} are not)")
        if self.response_unit not in RESPONSE_UNITS:
            raise RecordingError(f"response_unit: expected 'count' or 'Hz', found {self.response_unit!r}")
        if not (np.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise TimestampError(f"frame_rate: expected a positive number of Hz, found {self.frame_rate!r}")
        self.frame_rate = float(self.frame_rate)
        n = self.responses.shape[1]
        if len(self.cell_ids) == 0:
            self.cell_ids = [str(i) for i in range(n)]
        self.cell_ids = [str(c) for c in self.cell_ids]
        if len(self.cell_ids) != n:
            raise ShapeMismatchError(
                f"cell_ids: expected {n} ids (one per response column), found {len(self.cell_ids)}"
            )
        if len(set(self.cell_ids)) != n:  # cells are selected by id: a repeated id would select the wrong one
            seen: set[str] = set()
            dup = sorted({c for c in self.cell_ids if c in seen or seen.add(c)})
            raise RecordingError(f"cell_ids: expected {n} distinct ids, found repeated {', '.join(map(repr, dup[:5]))}")
        ints = {}
        for name, iv in self.intervals.items():
            iv = np.asarray(iv, dtype=np.float64).reshape(-1, 2)
            if not np.all(np.isfinite(iv)):
                raise TimestampError(f"intervals[{name!r}]: every start and stop must be a finite time in seconds")
            if np.any(iv[:, 1] < iv[:, 0]):
                raise TimestampError(f"intervals[{name!r}]: every stop must be >= its start")
            ints[str(name)] = iv
        self.intervals = ints
        self.segment_starts = _checked_segment_starts(self.segment_starts, t)
        if isinstance(self.stimulus, ArrayFrames) and self.stimulus.data.dtype.kind == "f":
            if not np.all(np.isfinite(self.stimulus.data)):
                bad = int(np.flatnonzero(~np.isfinite(self.stimulus.data).reshape(t, -1).all(1))[0])
                raise NonFiniteFramesError(f"stimulus: frame {bad} contains NaN or infinite values")

    # ---- open files ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the files behind lazy data (the stimulus can no longer be read afterwards)."""
        while self.resources:
            self.resources.pop().close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- shape and time -------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """Number of frame bins T."""
        return len(self.stimulus)

    @property
    def n_cells(self) -> int:
        """Number of cells N."""
        return self.responses.shape[1]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one frame in pixels."""
        return tuple(self.stimulus.shape[1:])

    @property
    def segments(self) -> np.ndarray:
        """``(k, 2)`` int64 frame ranges ``[start, stop)`` of the separately presented movies."""
        return np.stack([self.segment_starts, np.append(self.segment_starts[1:], self.n_frames)], axis=1)

    def segment_of(self, bins: np.ndarray) -> np.ndarray:
        """Index of the segment holding each bin (bins ``(B,)`` in ``[0, T)``)."""
        return np.searchsorted(self.segment_starts, np.asarray(bins, dtype=np.int64), side="right") - 1

    def _window_inside(self, bins: np.ndarray, history: int, offset: int) -> np.ndarray:
        """Mask ``(B,)``: bin t exists and its window (frames ``t-h-offset+1 … t-offset``) lies inside the
        segment holding bin t (with one segment: inside the movie)."""
        bins = np.asarray(bins, dtype=np.int64)
        seg = self.segments
        k = np.clip(self.segment_of(bins), 0, len(seg) - 1)
        return ((bins >= 0) & (bins < self.n_frames) & (window_start(bins, history, offset) >= seg[k, 0])
                & (bins - offset < seg[k, 1]))

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end."""
        return float(self.frame_times[-1] - self.frame_times[0] + 1.0 / self.frame_rate) if self.n_frames else 0.0

    def __repr__(self) -> str:
        return (
            f"Recording({self.stimulus_name!r}: {self.n_frames} frames of {self.frame_shape[0]}x"
            f"{self.frame_shape[1]} at {self.frame_rate:g} Hz ({self.duration:.1f} s), {self.n_cells} cells, "
            f"intervals={sorted(self.intervals)})"
        )

    # ---- intervals ------------------------------------------------------------------------------
    def split_bins(self, name: str | None) -> np.ndarray:
        """Bin indices whose frame start lies in the named interval(s); ``None`` means every bin."""
        if name is None:
            return np.arange(self.n_frames)
        if name not in self.intervals:
            raise UnknownIntervalError(
                f"interval {name!r} not in the recording ({self.stimulus_name!r}); "
                f"available: {sorted(self.intervals) or 'none'}"
            )
        mask = np.zeros(self.n_frames, bool)
        tol = 1e-3 / self.frame_rate  # frame starts within a thousandth of a frame count as equal
        for start, stop in self.intervals[name]:
            a, b = np.searchsorted(self.frame_times, [start - tol, stop - tol], side="left")
            mask[a:b] = True
        return np.flatnonzero(mask)

    def head_interval(self, split: str | None, n: int, history: int = 40, offset: int = 1,
                      name: str | None = None) -> str:
        """Register an interval holding exactly the first ``n`` window bins of ``split`` (all when fewer);
        returns its name (default ``"<split>[:n]"``). One ``[start, stop)`` per run of consecutive bins, so
        bins between runs of the split stay out."""
        if n < 1:
            raise RecordingError(f"n: expected at least 1 bin, found {n}")
        bins = self.window_bins(split, history, offset)[:n]
        if bins.size == 0:
            raise RecordingError(f"split {split!r} has no bins with a full {history}-frame window")
        name = name or f"{split or 'all'}[:{n}]"
        step = 1.0 / self.frame_rate
        self.intervals[name] = np.array([[self.frame_times[a], self.frame_times[b - 1] + step]
                                         for a, b in bin_chunks(bins, len(bins))])  # one per run
        return name

    def window_bins(self, split: str | None = None, history: int = 40, offset: int = 1) -> np.ndarray:
        """Bins of a split whose whole history window lies inside the movie segment holding the bin
        (:attr:`segment_starts`): the first ``history + offset - 1`` bins of each segment are dropped, and
        with a negative offset (look-ahead) also the last ``-offset`` bins of each."""
        _check_history(history)
        bins = self.split_bins(split)
        return bins[self._window_inside(bins, history, offset)]

    # ---- normalisation --------------------------------------------------------------------------
    def normalization(self, split: str | None = "train", chunk: int = 4096) -> tuple[float, float]:
        """Scalar stimulus mean and std (cached in ``norm_mean`` / ``norm_std``), streamed over ``split``.

        Falls back to every frame when the recording has no such split.
        """
        if self.norm_mean is not None and self.norm_std is not None:
            return float(self.norm_mean), float(self.norm_std)
        bins = self.split_bins(split if split in self.intervals else None)
        if len(bins) == 0:
            warnings.warn(f"normalization: split {split!r} has no frames; the stimulus statistics come from every "
                          "frame", RuntimeWarning, stacklevel=2)
            bins = self.split_bins(None)
        # per-chunk mean and centred sum of squares (float32 work, float64 totals), combined exactly
        ns, means, m2s = [], [], []
        for c, e in bin_chunks(bins, chunk):
            x = self.stimulus[c:e]
            m = float(x.mean(dtype=np.float64))
            d = (x - np.float32(m)).ravel()
            ns.append(d.size)
            means.append(m)
            m2s.append(float(np.dot(d, d)))
        n = np.asarray(ns, np.float64)
        mean = float((n * means).sum() / max(n.sum(), 1))
        var = (sum(m2s) + float((n * (np.asarray(means) - mean) ** 2).sum())) / max(n.sum(), 1)
        std = float(np.sqrt(max(var, 0.0)))
        self.norm_mean, self.norm_std = float(mean), (std if std > 0 else 1.0)
        return self.norm_mean, self.norm_std

    # ---- windows --------------------------------------------------------------------------------
    def iter_windows(
        self,
        split: str | None = None,
        history: int = 40,
        offset: int = 1,
        batch_size: int = 1024,
        normalize: bool = True,
        bins: np.ndarray | None = None,
    ) -> Iterator[WindowBatch]:
        """Iterate over history windows in batches, reading only the frames each batch needs.

        Yields :class:`WindowBatch` with ``stimulus`` a strided view ``(B, history, H, W)`` float32 over
        the ``B + history - 1`` frames loaded for the batch (z-scored with :meth:`normalization` when
        ``normalize``). ``bins`` overrides ``split`` with explicit (sorted) bin indices; each bin's window must lie
        in its movie segment (as :meth:`window_bins` gives them), else a ``ValueError``.
        """
        _check_history(history)
        if bins is None:
            bins = self.window_bins(split, history, offset)
        else:
            bins = np.asarray(bins, dtype=np.int64)
            if bins.size and bins.min() < first_valid_bin(history, offset):
                raise RecordingError(
                    f"bins: bin {int(bins.min())} has no full {history}-frame history "
                    f"(first valid bin is {first_valid_bin(history, offset)})"
                )
            # the bin must exist (responses) and its window must end inside the movie (offset < 0 looks ahead)
            last = self.n_frames - 1 + min(offset, 0)
            if bins.size and bins.max() > last:
                raise RecordingError(f"bins: bin {int(bins.max())} has no full {history}-frame window inside the "
                                 f"{self.n_frames}-frame movie with offset {offset} (last valid bin is {last})")
            inside = self._window_inside(bins, history, offset)
            if not inside.all():
                b = int(bins[~inside][0])
                a, e = (int(x) for x in self.segments[self.segment_of([b])[0]])
                raise RecordingError(f"bins: the {history}-frame window of bin {b} (frames "
                                 f"{window_start(b, history, offset)}..{b - offset}, offset {offset}) leaves its "
                                 f"movie segment (frames {a}..{e - 1}); window_bins() gives the valid bins")
        mean, std = self.normalization() if normalize else (0.0, 1.0)
        for c, d in bin_chunks(bins, batch_size):
            f0 = window_start(c, history, offset)
            frames = self.stimulus[f0 : f0 + (d - c) + history - 1]
            if normalize:
                frames = (frames - np.float32(mean)) * np.float32(1.0 / std)
            yield WindowBatch(np.arange(c, d), history_windows(frames, history), self.responses[c:d])

    def windows(
        self, split: str | None = None, history: int = 40, offset: int = 1, normalize: bool = True
    ) -> WindowBatch:
        """All windows of a contiguous split at once, as one strided view (in-memory stimulus only).

        The split must be one run of consecutive bins; use :meth:`iter_windows` otherwise or for lazy
        recordings that do not fit in memory.
        """
        bins = self.window_bins(split, history, offset)
        runs = list(bin_chunks(bins, max(len(bins), 1)))  # chunks as long as the split: its runs
        if len(runs) > 1:
            seg = f", {len(self.segment_starts)} movie segments" if len(self.segment_starts) > 1 else ""
            raise RecordingError(f"split {split!r} is not contiguous ({len(runs)} runs{seg}); use iter_windows()")
        batches = list(self.iter_windows(bins=bins, history=history, offset=offset,
                                         batch_size=max(len(bins), 1), normalize=normalize))
        if not batches:
            h, w = self.frame_shape
            return WindowBatch(bins, np.zeros((0, history, h, w), np.float32), self.responses[:0])
        return batches[0]

    # ---- selection ------------------------------------------------------------------------------
    def select_cells(self, cells: Sequence[int | str]) -> Recording:
        """A recording with only some cells (ids or indices, the rule of :mod:`.cells`; an unknown one is an
        :class:`~retina_codec.errors.UnknownCellError`); stimulus, intervals and segments are shared, the
        ground truth's per-cell fields follow the selection."""
        idx = resolve_cells(cells, self.cell_ids, self.n_cells)
        gt = self.ground_truth.select_cells(idx) if self.ground_truth is not None else None
        return Recording(
            stimulus=self.stimulus, frame_times=self.frame_times, frame_rate=self.frame_rate,
            responses=self.responses[:, idx], cell_ids=[self.cell_ids[i] for i in idx],
            intervals=self.intervals, response_unit=self.response_unit, stimulus_name=self.stimulus_name,
            norm_mean=self.norm_mean, norm_std=self.norm_std, provenance=dict(self.provenance),
            ground_truth=gt, resources=self.resources, segment_starts=self.segment_starts.copy(),
        )

    def summary(self) -> dict[str, Any]:
        """Plain-dict description: shapes, frame rate, duration, cells, mean rates (Hz), splits (s), segment
        starts (frames)."""
        per_bin = self.responses.mean(axis=0) if self.n_frames else np.zeros(self.n_cells)
        rates = per_bin * self.frame_rate if self.response_unit == "count" else per_bin
        return {
            "stimulus_name": self.stimulus_name,
            "stimulus_shape": tuple(self.stimulus.shape),
            "frame_rate_hz": self.frame_rate,
            "duration_s": self.duration,
            "start_s": float(self.frame_times[0]) if self.n_frames else 0.0,
            "n_cells": self.n_cells,
            "cell_ids": list(self.cell_ids),
            "response_unit": self.response_unit,
            "mean_rate_hz": [float(r) for r in rates],
            "intervals": {
                k: {"n_intervals": len(v), "duration_s": float((v[:, 1] - v[:, 0]).sum()),
                    "n_bins": int(len(self.split_bins(k)))}
                for k, v in self.intervals.items()
            },
            "segment_starts": [int(s) for s in self.segment_starts],
            "has_ground_truth": self.ground_truth is not None,
        }
