"""Receptive fields against ground truth: STA vs model STA vs the simulator's true filter (LN cells)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..rf.decompose import peak_box, space_time_svd
from .style import DIVERGING, plt, save_figure, symmetric_limit

__all__ = ["plot_sta_model_truth"]


def _box_time_course(rf: np.ndarray) -> np.ndarray:
    """Rank-1 temporal part of one RF ``(h, H, W)`` inside :func:`peak_box` (sign: positive at the peak frame)."""
    box = (slice(None),) + peak_box(rf)
    return space_time_svd(rf[box]).temporal[0]


def plot_sta_model_truth(estimates: dict[str, np.ndarray], path: str | os.PathLike, cell_ids: Sequence[str],
                         lags_ms: np.ndarray | None = None, scores: dict[str, np.ndarray] | None = None) -> str:
    """One row per cell: the rank-1 spatial part of each RF in ``estimates`` (name -> ``(C, h, H, W)``, all
    with the same ``h``), then their rank-1 temporal parts overlaid (each scaled to unit peak; computed inside
    the 9×9 box around each RF's peak pixel, so that the noise of the empty pixels stays out).

    ``scores`` (name -> ``(C,)``) are written under the maps (e.g. r with the true filter).
    """
    names = list(estimates)
    # NaN (a silent cell's STA) stays NaN: blank panels, not the arbitrary singular vectors of a zero RF
    comps = {k: space_time_svd(np.asarray(v, dtype=np.float64)) for k, v in estimates.items()}
    n = len(cell_ids)
    colors = ["#c0392b", "#1f5fa8", "k", "#2e8b57"]
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.9 * len(names) + 3.2, 1.9 * n + 0.3), squeeze=False,
                             gridspec_kw={"width_ratios": [1.0] * len(names) + [1.7]})
    h = next(iter(estimates.values())).shape[1]
    x = np.arange(h) if lags_ms is None else np.asarray(lags_ms)
    for i in range(n):
        for j, name in enumerate(names):
            ax = axes[i, j]
            img = comps[name].spatial[i, 0]
            v = symmetric_limit(img)
            ax.imshow(img, cmap=DIVERGING, vmin=-v, vmax=v, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(cell_ids[i], fontsize=8)
            if scores and name in scores:
                ax.set_xlabel(f"r = {scores[name][i]:.2f}", fontsize=7)
        ax = axes[i, -1]
        for j, name in enumerate(names):
            tc = _box_time_course(np.asarray(estimates[name][i], dtype=np.float64))
            peak = np.nanmax(np.abs(tc)) if np.isfinite(tc).any() else 1.0
            ax.plot(x, tc / (peak or 1.0), color=colors[j % len(colors)], lw=1.0, label=name)
        ax.axhline(0, color="0.7", lw=0.5)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
        if i == 0:
            ax.legend(fontsize=6, frameon=False, loc="upper left")
            ax.set_title("rank-1 time course", fontsize=8)
    axes[-1, -1].set_xlabel("frame time relative to the bin (ms)" if lags_ms is not None else "window frame",
                            fontsize=7)
    return save_figure(fig, path)
