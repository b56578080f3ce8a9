"""Contribution-mode figures: atoms (dictionary), loadings over time, cell × mode correlations with clusters."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .style import DIVERGING, plt, save_figure, symmetric_limit, type_color

__all__ = ["plot_atoms", "plot_loadings", "plot_cell_mode_correlations"]


def plot_atoms(atoms: np.ndarray, path: str | os.PathLike, mode_names: Sequence[str],
               feature_labels: Sequence[str], counts: np.ndarray | None = None, title: str = "") -> str:
    """Heat map of mode atoms ``(K, F)`` (modes × features, symmetric scale); ``counts (K,)`` active bins."""
    a = np.asarray(atoms, dtype=np.float64)
    k, f = a.shape
    fig, ax = plt.subplots(figsize=(0.32 * f + 2.2, 0.24 * k + 1.2))
    v = symmetric_limit(a)
    im = ax.imshow(a, cmap=DIVERGING, vmin=-v, vmax=v, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(f))
    ax.set_xticklabels(feature_labels, rotation=90, fontsize=6)
    names = [f"{n} ({int(c)})" for n, c in zip(mode_names, counts)] if counts is not None else list(mode_names)
    ax.set_yticks(np.arange(k))
    ax.set_yticklabels(names, fontsize=6)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return save_figure(fig, path)


def plot_loadings(times: np.ndarray, loadings: np.ndarray, path: str | os.PathLike, mode_names: Sequence[str],
                  title: str = "") -> str:
    """Mode loadings ``(T, K)`` over time ``(T,)`` s as a heat map (modes × time; white = inactive)."""
    a = np.asarray(loadings, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(10, 0.2 * a.shape[1] + 1.2))
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    vmax = float(np.nanmax(a)) if a.size and np.nanmax(a) > 0 else 1.0
    im = ax.imshow(a.T, aspect="auto", cmap="Greys", vmin=0, vmax=vmax, interpolation="nearest",
                   extent=(t[0], t[-1] + dt, a.shape[1] - 0.5, -0.5))
    ax.set_yticks(np.arange(a.shape[1]))
    ax.set_yticklabels(mode_names, fontsize=6)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.tick_params(labelsize=7)
    cb = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    cb.ax.tick_params(labelsize=6)
    cb.set_label("loading", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return save_figure(fig, path)


def plot_cell_mode_correlations(r: np.ndarray, path: str | os.PathLike, cell_ids: Sequence[str],
                                mode_names: Sequence[str], clusters: np.ndarray | None = None,
                                cell_types: Sequence[str] | None = None, title: str = "") -> str:
    """Heat map of ``r (K, N)`` (modes × cells) as cells × modes, cells grouped by k-means ``clusters (N,)``
    (separated by lines, cluster number on the right) and their labels coloured by type."""
    r = np.asarray(r, dtype=np.float64)
    k, n = r.shape
    order = np.argsort(clusters, kind="stable") if clusters is not None else np.arange(n)
    fig, ax = plt.subplots(figsize=(0.28 * k + 2.6, 0.22 * n + 1.4))
    im = ax.imshow(r[:, order].T, cmap=DIVERGING, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels(mode_names, rotation=90, fontsize=6)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels([cell_ids[i] for i in order], fontsize=6)
    if cell_types is not None:
        for lab, i in zip(ax.get_yticklabels(), order):
            lab.set_color(type_color(cell_types[i]))
    if clusters is not None:
        cl = np.asarray(clusters)[order]
        for j in np.flatnonzero(np.diff(cl)) + 0.5:
            ax.axhline(j, color="k", lw=1.2)
        for c in np.unique(cl):
            rows = np.flatnonzero(cl == c)
            ax.text(k - 0.3, rows.mean(), f" cluster {int(c)}", va="center", ha="left", fontsize=7,
                    clip_on=False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.12 if clusters is not None else 0.02)
    cb.ax.tick_params(labelsize=6)
    cb.set_label("r(loading, predicted rate)", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return save_figure(fig, path)
