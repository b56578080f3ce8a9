"""Spike-triggered average (STA) and covariance (STC) of recorded cells, all cells in one pass.

``STA_i = Σ_t n_i(t) · window(t) / Σ_t n_i(t)`` over the bins ``t`` of a split whose whole history
window lies inside the movie (``window(t)`` = frames ``t-h-offset+1 … t-offset``, oldest first; see
:mod:`retina_codec.recordings.windows`). Every chunk of bins is one (lag-structured) matrix product for all
cells together (:class:`~retina_codec.rf.correlate.WindowCorrelator`); memory does not grow with the
recording, only with ``N·h·H·W``.

Relation to pyret (``pyret.filtertools.sta(time, stimulus, spike_times, nb, na)``), worked out from its
source and checked in ``tests/test_rf_sta.py``:

* pyret bins spikes with ``np.histogram(spike_times, time)``: bin k is ``[time[k], time[k+1])`` — the same
  bin as ours when ``time = recording.frame_times`` (frame start times) — and has only ``T-1`` bins (the
  last frame's spikes are dropped).
* The window of bin k is ``stimulus[k-nb : k+na]``, i.e. ``history = nb + na`` and ``offset = 1 - na``
  (``na = 0``: frames ``k-nb … k-1``, our default ``offset=1`` with ``history = nb``).
* pyret keeps bins with ``k > nb`` and ``k + na < T`` (it drops bin ``nb``, whose window is complete) and
  divides by ``len(spike_times)``, *all* spikes including those in dropped bins; we divide by the spikes
  in the bins we use. With no spikes in bins ``≤ nb`` or ``≥ T-1-na`` the two are equal (to rounding),
  on the raw stimulus (``normalize=False``; by default we z-score with the recording's train statistics).
* pyret's ``tax`` for window index j is ``(j - nb + 1)/rate`` (the end of each frame relative to the bin
  start); our ``lags`` are frame starts in frames relative to bin t: ``j - h - offset + 1``.

STC (:func:`spike_triggered_covariance`) follows pyret's ``stc``: ``Σ n x xᵀ / Σ n − STA·STAᵀ`` (biased,
spike-weighted), over a chosen subset of the window: the full window has ``h·H·W`` dimensions (40×50×50 =
100 000: a 80 GB matrix per cell), so pass a spatial ``crop``, a subset of ``lags``, and/or a low-rank
``basis`` (D', k) to project onto; more than ``max_dim`` dimensions raise. (pyret weights a bin's outer
product by the *squared* count, which equals ours only when every bin holds at most one spike.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ReceptiveFieldError
from ..progress import progress
from ..recordings import Recording
from ..recordings.cells import resolve_cells
from ..recordings.frames import raw_frames
from ..recordings.windows import bin_chunks, window_start
from .correlate import WindowCorrelator, resolve_device

__all__ = ["SpikeTriggeredAverage", "SpikeTriggeredCovariance", "spike_triggered_average",
           "spike_triggered_covariance", "window_lags", "select_cells"]


def window_lags(history: int, offset: int = 1) -> np.ndarray:
    """Frame index of each window position relative to the bin, ``(h,)`` int: ``j - h - offset + 1``."""
    return np.arange(history) - history - offset + 1


def select_cells(recording: Recording, cells: Sequence[int | str] | None) -> np.ndarray:
    """Column indices ``(N,)`` int64 of ``cells`` in the recording's responses (``None`` = all), by the one
    cell rule (:func:`retina_codec.recordings.cells.resolve_cells`: an id match wins, else an integer or a
    digit string is an index); an unknown cell is an :class:`~retina_codec.errors.UnknownCellError`."""
    if cells is None:
        return np.arange(recording.n_cells)
    return np.asarray(resolve_cells(cells, recording.cell_ids, recording.n_cells), dtype=np.int64)


@dataclass
class SpikeTriggeredAverage:
    """STA of several cells.

    sta : (N, h, H, W) float64, in stimulus units (z-scored when ``normalized``); NaN for silent cells.
    n_spikes : (N,) float64, spikes (or total weight) in the bins used.
    cell_ids : N ids. history, offset : the window convention. lags : (h,) frames relative to the bin.
    frame_rate : Hz. normalized : whether the stimulus was z-scored. split : the split used.
    """

    sta: np.ndarray
    n_spikes: np.ndarray
    cell_ids: list[str]
    history: int
    offset: int
    frame_rate: float
    normalized: bool
    split: str | None
    n_bins: int
    lags: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lags = window_lags(self.history, self.offset)

    @property
    def lags_s(self) -> np.ndarray:
        """Frame start of each window position relative to the bin start, seconds."""
        return self.lags / self.frame_rate


def spike_triggered_average(
    recording: Recording,
    split: str | None = None,
    *,
    history: int = 40,
    offset: int = 1,
    cells: Sequence[int | str] | None = None,
    weights: np.ndarray | None = None,
    normalize: bool = True,
    batch_size: int = 4096,
    method: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    quiet: bool | None = None,
) -> SpikeTriggeredAverage:
    """STA of every chosen cell from the recording's spike counts, streamed in chunks of bins.

    Parameters
    ----------
    recording : responses are spike counts per bin (rates work too: that is reverse correlation).
    split : interval name, or ``None`` for every bin.
    history, offset : window convention (frames ``t-history-offset+1 … t-offset``).
    cells : indices or ids (default all).
    weights : optional ``(T, N')`` array used instead of ``recording.responses[:, cells]`` (e.g. model
        rates on the same bins, for reverse correlation).
    normalize : z-score the stimulus with :meth:`Recording.normalization` (``False``: raw values).
    batch_size : bins per chunk; memory is ``O(batch_size·H·W + N·h·H·W)``.
    method, device, dtype : see :class:`~retina_codec.rf.correlate.WindowCorrelator`; ``"auto"`` (default)
        uses exact int8 products for chunks of binary frames with integer counts (CPU), the FFT otherwise.
    """
    idx = select_cells(recording, cells)
    resp = recording.responses[:, idx] if weights is None else np.asarray(weights)
    if resp.ndim != 2 or resp.shape[0] != recording.n_frames:
        raise ReceptiveFieldError(f"weights: expected shape ({recording.n_frames}, N), found {resp.shape}")
    corr = WindowCorrelator(resp.shape[1], history, recording.frame_shape, method=method,
                            device=device, dtype=dtype)
    bins = recording.window_bins(split, history, offset)
    mean, std = recording.normalization() if normalize else (0.0, 1.0)
    for c, d in progress(bin_chunks(bins, batch_size), desc="STA", total=-(-len(bins) // batch_size), quiet=quiet):
        chunk = np.arange(c, d)
        f0 = window_start(c, history, offset)
        raw = raw_frames(recording.stimulus, f0, f0 + (d - c) + history - 1) if method in ("auto", "int8") else None
        # stored integer codes of a binary stimulus (uint8 white noise) go to the exact int8 path directly
        if raw is not None and corr.update_codes(raw[0], resp[chunk], raw[1] / std, (raw[2] - mean) / std):
            continue
        for batch in recording.iter_windows(bins=chunk, history=history, offset=offset,
                                            batch_size=len(chunk), normalize=normalize):
            corr.update_windows(batch.stimulus, resp[batch.bins])
    ids = [recording.cell_ids[i] for i in idx] if weights is None else [str(i) for i in range(resp.shape[1])]
    return SpikeTriggeredAverage(corr.mean(), corr.weight_sum, ids, history, offset, recording.frame_rate,
                                 normalize, split, corr.n_bins)


@dataclass
class SpikeTriggeredCovariance:
    """STC of several cells over a subset of window dimensions.

    stc : (N, D, D) float64, ``Σ n x xᵀ / Σ n − sta staᵀ`` with x the selected (and projected) window.
    sta : (N, D) float64 in the same coordinates. n_spikes : (N,).
    lags : window positions used (indices 0…h-1). crop : ``(y0, y1, x0, x1)`` pixels used.
    basis : (D_window, D) projection or ``None`` (then D = len(lags)·(y1-y0)·(x1-x0), ordered
        ``(lag, y, x)``, C order).
    """

    stc: np.ndarray
    sta: np.ndarray
    n_spikes: np.ndarray
    cell_ids: list[str]
    lags: np.ndarray
    crop: tuple[int, int, int, int]
    basis: np.ndarray | None

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues ``(N, D)`` (descending) and eigenvectors ``(N, D, D)`` (columns) of each STC."""
        vals, vecs = np.linalg.eigh(self.stc)
        return vals[:, ::-1], vecs[:, :, ::-1]


def spike_triggered_covariance(
    recording: Recording,
    split: str | None = None,
    *,
    history: int = 40,
    offset: int = 1,
    cells: Sequence[int | str] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    lags: Sequence[int] | None = None,
    basis: np.ndarray | None = None,
    normalize: bool = True,
    batch_size: int = 1024,
    max_dim: int = 4096,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    quiet: bool | None = None,
) -> SpikeTriggeredCovariance:
    """STC of the chosen cells over ``lags`` × ``crop`` of the window (optionally projected on ``basis``).

    Memory is ``N·D²`` for the running sums plus ``batch_size·D`` per chunk; raises ``ValueError`` when the
    number of dimensions D exceeds ``max_dim`` (crop, subsample lags, or give a basis).
    """
    idx = select_cells(recording, cells)
    hh, ww = recording.frame_shape
    y0, y1, x0, x1 = crop if crop is not None else (0, hh, 0, ww)
    if not (0 <= y0 < y1 <= hh and 0 <= x0 < x1 <= ww):
        raise ReceptiveFieldError(f"crop: expected 0 <= y0 < y1 <= {hh} and 0 <= x0 < x1 <= {ww}, found {crop}")
    lag_idx = np.arange(history) if lags is None else np.asarray(lags, dtype=np.int64)
    if lag_idx.size == 0 or lag_idx.min() < 0 or lag_idx.max() >= history:
        raise ReceptiveFieldError(f"lags: expected window positions in [0, {history}), found {lags}")
    d_win = len(lag_idx) * (y1 - y0) * (x1 - x0)
    dev = resolve_device(device)
    proj = None
    if basis is not None:
        basis = np.asarray(basis, dtype=np.float64)
        if basis.ndim != 2 or basis.shape[0] != d_win:
            raise ReceptiveFieldError(f"basis: expected shape ({d_win}, k) for the selected window, found {basis.shape}")
        proj = torch.as_tensor(basis, dtype=dtype, device=dev)
    d = d_win if proj is None else proj.shape[1]
    if d > max_dim:
        raise ReceptiveFieldError(f"STC over {d} dimensions needs {len(idx) * d * d * 8 / 1e9:.1f} GB; "
                         f"max_dim is {max_dim}: crop, subsample lags or pass a low-rank basis")
    sxx = torch.zeros((len(idx), d, d), dtype=torch.float64, device=dev)
    sx = torch.zeros((len(idx), d), dtype=torch.float64, device=dev)
    tot = torch.zeros(len(idx), dtype=torch.float64, device=dev)
    bins = recording.window_bins(split, history, offset)
    batches = recording.iter_windows(bins=bins, history=history, offset=offset, batch_size=batch_size,
                                     normalize=normalize)
    lag_t = torch.as_tensor(lag_idx)
    for batch in progress(batches, desc="STC", total=-(-len(bins) // batch_size), quiet=quiet):
        x = torch.as_tensor(np.ascontiguousarray(batch.stimulus[:, :, y0:y1, x0:x1]))[:, lag_t]
        x = x.reshape(len(x), -1).to(dev, dtype)
        if proj is not None:
            x = x @ proj
        n = torch.as_tensor(batch.responses[:, idx]).to(dev, dtype)
        tot += n.sum(0).double()
        sx += (n.T @ x).double()
        for c in range(len(idx)):
            sxx[c] += ((x * n[:, c : c + 1]).T @ x).double()
    totn = tot.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = sx.cpu().numpy() / totn[:, None]
        stc = sxx.cpu().numpy() / totn[:, None, None] - mu[:, :, None] * mu[:, None, :]
    return SpikeTriggeredCovariance(stc, mu, totn, [recording.cell_ids[i] for i in idx], lag_idx,
                                    (y0, y1, x0, x1), basis)
