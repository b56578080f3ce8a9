"""Receptive-field figures: RF grids, rank-1 space and time panels, mode-conditioned RF gallery.

The gallery follows CODEC Fig. 8: for one cell, the unconditioned mean RF, then the RF conditioned on each
single mode, then on each frequent exact combination of modes (with its frequency), as rank-1 spatial maps
on a shared symmetric colour scale (red = ON / positive, blue = OFF / negative) with the temporal parts
underneath. Everything renders with the Agg backend and is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from ..io_utils import atomic_path  # noqa: E402

__all__ = ["plot_rf_grid", "plot_rank1", "plot_conditioned_gallery"]

CMAP = "RdBu_r"


def _save(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)


def _vlim(maps: np.ndarray) -> float:
    v = float(np.nanmax(np.abs(maps))) if np.isfinite(maps).any() else 1.0
    return v if v > 0 else 1.0


def _show(ax: Any, img: np.ndarray, vlim: float, title: str = "") -> None:
    ax.imshow(img, cmap=CMAP, vmin=-vlim, vmax=vlim, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_rf_grid(spatial: np.ndarray, path: str | os.PathLike, titles: Sequence[str] | None = None,
                 fits: Sequence[Any] | None = None, ncols: int = 6, shared_scale: bool = False,
                 suptitle: str = "") -> None:
    """Grid of spatial RFs ``(N, H, W)`` (each on its own symmetric scale unless ``shared_scale``), with the
    2σ ellipse of each :class:`~retina_codec.rf.gaussian_fit.GaussianFit` in ``fits`` overlaid."""
    spatial = np.asarray(spatial)
    n = len(spatial)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.6 * nrows), squeeze=False)
    vshared = _vlim(spatial)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, spatial[i], vshared if shared_scale else _vlim(spatial[i]), titles[i] if titles else str(i))
        fit = fits[i] if fits else None
        if fit is not None and np.isfinite(getattr(fit, "center_x", np.nan)):
            ax.add_patch(Ellipse((fit.center_x, fit.center_y), 4 * fit.sigma_major, 4 * fit.sigma_minor,
                                 angle=np.degrees(fit.angle), fill=False, color="k", lw=0.8))
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    _save(fig, path)


def plot_rank1(spatial: np.ndarray, temporal: np.ndarray, path: str | os.PathLike,
               lags_s: np.ndarray | None = None, titles: Sequence[str] | None = None, ncols: int = 6) -> None:
    """Rank-1 space (top) and time (bottom) panels per cell: ``spatial (N, H, W)``, ``temporal (N, h)``;
    ``lags_s`` is each window position's time relative to the bin (seconds)."""
    spatial, temporal = np.asarray(spatial), np.asarray(temporal)
    n = len(spatial)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(1.7 * ncols, 3.0 * nrows), squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1.0] * nrows})
    x = np.arange(temporal.shape[-1]) if lags_s is None else np.asarray(lags_s) * 1e3
    for i in range(nrows * ncols):
        r, c = divmod(i, ncols)
        ax_s, ax_t = axes[2 * r, c], axes[2 * r + 1, c]
        if i >= n:
            ax_s.axis("off")
            ax_t.axis("off")
            continue
        _show(ax_s, spatial[i], _vlim(spatial[i]), titles[i] if titles else str(i))
        ax_t.plot(x, temporal[i], color="k", lw=1)
        ax_t.axhline(0, color="0.7", lw=0.5)
        ax_t.tick_params(labelsize=6)
        if r == nrows - 1:
            ax_t.set_xlabel("ms" if lags_s is not None else "frame", fontsize=7)
    _save(fig, path)


def plot_conditioned_gallery(conditioned: Any, cell: int, path: str | os.PathLike,
                             mode_names: Sequence[str] | None = None, max_combos: int = 8,
                             lags_s: np.ndarray | None = None, cell_name: str | None = None) -> None:
    """CODEC Fig. 8-style gallery for one cell (index into the conditioned cells).

    ``conditioned`` is a :class:`~retina_codec.rf.conditioned.ConditionedRFs` or the ``conditioned``
    group read back by :func:`~retina_codec.stores.rf.read_rf`.
    """
    def get(name: str) -> Any:
        return conditioned[name] if isinstance(conditioned, dict) else getattr(conditioned, name)

    ms, mt = np.asarray(get("mode_spatial"))[:, cell], np.asarray(get("mode_temporal"))[:, cell]
    cs, ct = np.asarray(get("combo_spatial"))[:, cell], np.asarray(get("combo_temporal"))[:, cell]
    combos, freq = list(get("combos"))[:max_combos], np.asarray(get("combo_frequency"))
    counts = np.asarray(get("mode_count"))
    k = len(ms)
    names = list(mode_names) if mode_names else [f"m{i}" for i in range(k)]
    panels = [("all bins", get("mean_spatial")[cell], get("mean_temporal")[cell])]
    panels += [(f"{names[i]} (n={int(counts[i])})", ms[i], mt[i]) for i in range(k)]
    panels += [("+".join(names[j] for j in combo) if combo else "none", cs[m], ct[m], freq[m])
               for m, combo in enumerate(combos)]
    ncols = min(len(panels), 8)
    nrows = -(-len(panels) // ncols)
    # room between a time-course row and the two-line titles of the spatial maps below it
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(1.5 * ncols, 3.2 * nrows), squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1.0] * nrows, "hspace": 0.55})
    vlim = _vlim(np.stack([p[1] for p in panels]))
    x = np.arange(len(panels[0][2])) if lags_s is None else np.asarray(lags_s) * 1e3
    for i in range(nrows * ncols):
        r, c = divmod(i, ncols)
        ax_s, ax_t = axes[2 * r, c], axes[2 * r + 1, c]
        if i >= len(panels):
            ax_s.axis("off")
            ax_t.axis("off")
            continue
        title = panels[i][0] + (f"\n{100 * panels[i][3]:.1f}% of bins" if len(panels[i]) > 3 else "")
        _show(ax_s, panels[i][1], vlim, title)
        ax_t.plot(x, panels[i][2], color="k", lw=1)
        ax_t.axhline(0, color="0.7", lw=0.5)
        ax_t.set_yticks([])
        ax_t.tick_params(labelsize=5)
        if r == nrows - 1 or i + ncols >= len(panels):  # the lowest time axis of each column
            ax_t.set_xlabel("ms" if lags_s is not None else "frame", fontsize=6)
    fig.suptitle(f"mode-conditioned RFs, cell {cell_name if cell_name is not None else cell}", fontsize=9)
    _save(fig, path)
