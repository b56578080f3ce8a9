"""Contribution figures: per-bin reduced contributions of a layer as a heat map over time, with the target."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .style import DIVERGING, plt, save_figure, symmetric_limit

__all__ = ["feature_labels", "plot_contribution_heatmap"]


def feature_labels(n_features: int, reduction: Any) -> list[str]:
    """Names of the reduced features: ``ch3−`` / ``ch3+`` for ``ei_split`` (negative half first), else ``ch3``."""
    red = reduction if isinstance(reduction, (list, tuple)) else [str(reduction)] if reduction else []
    if "ei_split" in [str(r) for r in red] and n_features % 2 == 0:
        c = n_features // 2
        return [f"ch{i}\u2212" for i in range(c)] + [f"ch{i}+" for i in range(c)]
    return [f"ch{i}" for i in range(n_features)]


def plot_contribution_heatmap(times: np.ndarray, contributions: np.ndarray, path: str | os.PathLike,
                              labels: Sequence[str] | None = None, target: np.ndarray | None = None,
                              target_name: str = "target", title: str = "") -> str:
    """Heat map of ``contributions (T, F)`` (features × time, symmetric colour scale, 99.5 % clipped),
    with ``target (T,)`` — the explained output F(x) — plotted above on the same time axis (s)."""
    c = np.asarray(contributions, dtype=np.float64).reshape(len(times), -1)
    t = np.asarray(times, dtype=np.float64)
    rows = 2 if target is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.2 + 0.17 * c.shape[1] + (1.1 if target is not None else 0)),
                             squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": ([1.0] if target is not None else []) +
                                          [max(1.5, 0.17 * c.shape[1])]})
    if target is not None:
        ax = axes[0, 0]
        ax.plot(t, target, color="k", lw=0.8)
        ax.set_ylabel(target_name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    ax = axes[-1, 0]
    v = symmetric_limit(c, 0.995)
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    im = ax.imshow(c.T, aspect="auto", cmap=DIVERGING, vmin=-v, vmax=v, interpolation="nearest",
                   extent=(t[0], t[-1] + dt, c.shape[1] - 0.5, -0.5))
    labels = list(labels) if labels is not None else [str(i) for i in range(c.shape[1])]
    ax.set_yticks(np.arange(c.shape[1]))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.tick_params(labelsize=7)
    cb = fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.025, pad=0.01)
    cb.ax.tick_params(labelsize=6)
    cb.set_label("contribution", fontsize=7)
    if title:
        axes[0, 0].set_title(title, fontsize=9, loc="left")
    return save_figure(fig, path)
