"""The figures of ``retina-codec rf``: RF grid, rank-1 panels, STA grid and one mode-conditioned RF
gallery per cell, from the results of :func:`~retina_codec.rf.estimate.compute_rfs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..rf.decompose import space_time_svd
from ..rf.estimate import GAUSSIAN_FIELDS
from ..rf.gaussian_fit import GaussianFit
from ..rf.sta import window_lags
from .rf import plot_conditioned_gallery, plot_rank1, plot_rf_grid

__all__ = ["write_figures"]


def _file_part(name: str) -> str:
    """``name`` safe as part of a file name (an openretina cell id is ``"session/index"``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def write_figures(results: dict[str, Any], fig_dir: Path, mode_names: list[str] | None = None,
                  frame_rate: float | None = None) -> list[Path]:
    """RF grid, rank-1 panels and one conditioned-RF gallery per cell into ``fig_dir``; returns the PNG paths.
    ``frame_rate`` (Hz) puts the temporal axes in seconds."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    names = results.get("cell_names")
    written = []
    r1 = results.get("rank1")
    lags_s = None
    if r1 is not None:
        h = r1["temporal"].shape[-1]
        lags_s = window_lags(h) / frame_rate if frame_rate else None
        g = results.get("gaussian")
        fits = [GaussianFit(*(float(g[f][i]) for f in GAUSSIAN_FIELDS))
                for i in range(len(r1["spatial"]))] if g else None
        plot_rf_grid(r1["spatial"], fig_dir / "rf_grid.png", titles=names, fits=fits,
                     suptitle=f"rank-1 spatial RFs ({r1['source']})")
        plot_rank1(r1["spatial"], r1["temporal"], fig_dir / "rf_rank1.png", lags_s=lags_s, titles=names)
        written += [fig_dir / "rf_grid.png", fig_dir / "rf_rank1.png"]
    sta = results.get("sta")
    if sta is not None:
        dec = space_time_svd(np.nan_to_num(sta.sta))
        plot_rf_grid(dec.spatial[:, 0], fig_dir / "sta_grid.png", titles=names, suptitle="STA, rank-1 space")
        written.append(fig_dir / "sta_grid.png")
    cond = results.get("conditioned")
    if cond is not None:
        for c in range(len(cond.mode_spatial[0]) if len(cond.mode_spatial) else 0):
            name = names[c] if names else str(c)
            path = fig_dir / f"conditioned_{_file_part(name)}.png"
            plot_conditioned_gallery(cond, c, path, mode_names=mode_names, lags_s=lags_s, cell_name=name)
            written.append(path)
    return written
