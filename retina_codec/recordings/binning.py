"""Putting responses on the stimulus frame grid: spike binning and rate resampling."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeMismatchError, TimestampError

__all__ = ["frame_edges", "bin_spikes", "resample_rates", "checked_times"]


def frame_edges(frame_times: np.ndarray, rate_hz: float) -> np.ndarray:
    """Bin edges ``(T + 1,)`` in seconds: frame t is shown during ``[edges[t], edges[t + 1])``.

    The last frame lasts one nominal frame period ``1 / rate_hz``.
    """
    frame_times = np.asarray(frame_times, dtype=np.float64)
    return np.concatenate([frame_times, [frame_times[-1] + 1.0 / rate_hz]])


def bin_spikes(
    spike_times: np.ndarray,
    spike_index: np.ndarray,
    edges: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Count every unit's spikes in every frame bin, in one pass over the flat spike array.

    Parameters
    ----------
    spike_times : (S,) float seconds, all units' spikes concatenated (NWB ``spike_times``).
    spike_index : (N,) int, end offset of each unit's spikes in ``spike_times`` (NWB
        ``spike_times_index``): unit i owns ``spike_times[index[i-1]:index[i]]``.
    edges : (T + 1,) float seconds, increasing bin edges (see :func:`frame_edges`).

    Returns
    -------
    counts : (T, N) float32 spike counts per bin.
    n_outside : number of spikes that fell outside ``[edges[0], edges[-1])`` (not counted).
    """
    spike_times = np.asarray(spike_times, dtype=np.float64)
    spike_index = np.asarray(spike_index, dtype=np.int64)
    n_units, n_bins = len(spike_index), len(edges) - 1
    lengths = np.diff(np.concatenate([[0], spike_index]))
    unit = np.repeat(np.arange(n_units), lengths)
    b = np.searchsorted(edges, spike_times, side="right") - 1
    inside = (b >= 0) & (b < n_bins)
    flat = b[inside] * n_units + unit[inside]
    counts = np.bincount(flat, minlength=n_bins * n_units).reshape(n_bins, n_units)
    return counts.astype(np.float32), int((~inside).sum())


def resample_rates(
    sample_times: np.ndarray, values: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a sampled signal ``(S, N)`` onto frame bins ``(T, N)``.

    Each bin takes the mean of the samples that fall inside it; bins with no sample take the linear
    interpolation at the bin centre (so slow imaging data are upsampled smoothly and fast data are
    averaged). Bins outside the sampled time range are NaN.

    Returns ``(rates (T, N) float32, covered (T,) bool)``.
    """
    sample_times = np.asarray(sample_times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n_bins = len(edges) - 1
    b = np.searchsorted(edges, sample_times, side="right") - 1
    inside = (b >= 0) & (b < n_bins)
    sums = np.zeros((n_bins, values.shape[1]))
    np.add.at(sums, b[inside], values[inside])
    n = np.bincount(b[inside], minlength=n_bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    out = np.empty_like(sums)
    has = n > 0
    out[has] = sums[has] / n[has, None]
    for j in range(values.shape[1]):
        out[~has, j] = np.interp(centres[~has], sample_times, values[:, j], left=np.nan, right=np.nan)
    covered = (centres >= sample_times[0]) & (centres <= sample_times[-1]) | has
    out[~covered] = np.nan
    return out.astype(np.float32), covered


def checked_times(times: np.ndarray, n: int, where: str, what: str = "times", item: str = "frame") -> np.ndarray:
    """``times`` as ``(n,)`` float64 seconds, finite and strictly increasing, else a clear error.

    ``where`` names the file and field (``"rec.h5: train/time"``); ``what`` the values in the messages
    (``"times"``, ``"timestamps"``) and ``item`` what each one belongs to (``"frame"``, ``"sample"``).
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.shape != (n,):
        per = "stimulus frame" if item == "frame" else f"{item} of data"
        raise ShapeMismatchError(f"{where}: expected {n} {what} (one per {per}), found {times.shape[0]}")
    if not np.all(np.isfinite(times)):
        raise TimestampError(f"{where}: contains NaN or infinite values")
    d = np.diff(times)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0]) + 1
        raise TimestampError(f"{where}: must be strictly increasing; {item} {i} at {times[i]!r} s "
                             f"follows {times[i - 1]!r} s")
    return times
