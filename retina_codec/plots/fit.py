"""Model-fit figures: per-cell Pearson r (with the responses and with the true rates) and rate traces."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .style import plt, save_figure, type_color

__all__ = ["plot_fit_per_cell", "plot_rate_traces"]


def plot_fit_per_cell(panels: Mapping[str, tuple[np.ndarray, np.ndarray | None]], cell_ids: Sequence[str],
                      path: str | os.PathLike, cell_types: Sequence[str] | None = None) -> str:
    """One bar panel per stimulus: ``panels[name] = (r_response (N,), r_true_rate (N,) or None)``.

    Light bars: r with the recorded responses (bounded by spiking noise); dark bars: r with the simulator's
    true rate. Cell labels are coloured by type.
    """
    n = len(cell_ids)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.38 * n + 1.5), 2.4 * len(panels)),
                             squeeze=False, sharex=True)
    x = np.arange(n)
    for ax, (name, (r_resp, r_true)) in zip(axes[:, 0], panels.items()):
        w = 0.4 if r_true is not None else 0.8
        ax.bar(x - (w / 2 if r_true is not None else 0), np.nan_to_num(r_resp), w, color="#9aa7b8",
               label="r with responses")
        if r_true is not None:
            ax.bar(x + w / 2, np.nan_to_num(r_true), w, color="#243447", label="r with true rate")
        low = np.r_[r_resp, 0.0] if r_true is None else np.r_[r_resp, r_true, 0.0]
        ax.set_ylim(min(0.0, float(np.nanmin(low)) - 0.05), 1.0)  # both bars' negative r stay in view
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_ylabel("Pearson r")
        means = f"mean {np.nanmean(r_resp):.2f}" + ("" if r_true is None else f" / {np.nanmean(r_true):.2f}")
        ax.set_title(f"{name} (test split): {means}", fontsize=9, loc="left")
        ax.grid(axis="y", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax = axes[-1, 0]
    ax.set_xticks(x)
    ax.set_xticklabels(cell_ids, rotation=60, fontsize=7)
    if cell_types is not None:
        for lab, t in zip(ax.get_xticklabels(), cell_types):
            lab.set_color(type_color(t))
    return save_figure(fig, path)


def plot_rate_traces(times: np.ndarray, predicted_hz: np.ndarray, cells: Sequence[int], cell_ids: Sequence[str],
                     path: str | os.PathLike, true_hz: np.ndarray | None = None,
                     spikes: np.ndarray | None = None, cell_types: Sequence[str] | None = None) -> str:
    """Predicted rate (Hz) over time for some cells, with the true rate and spike times when known.

    ``times (T,)`` s; ``predicted_hz``, ``true_hz``, ``spikes`` are ``(T, N)`` (spikes: counts per bin).
    """
    fig, axes = plt.subplots(len(cells), 1, figsize=(9, 1.35 * len(cells) + 0.4), squeeze=False, sharex=True)
    t = np.asarray(times) - float(times[0])
    for ax, c in zip(axes[:, 0], cells):
        if true_hz is not None:
            ax.plot(t, true_hz[:, c], color="0.55", lw=1.0, label="true rate")
        ax.plot(t, predicted_hz[:, c], color=type_color(cell_types[c]) if cell_types is not None else "k",
                lw=1.0, label="model")
        top = float(np.nanmax(predicted_hz[:, c]) if true_hz is None else
                    max(np.nanmax(predicted_hz[:, c]), np.nanmax(true_hz[:, c])))
        if spikes is not None:
            st = t[np.asarray(spikes[:, c]) > 0]
            ax.vlines(st, 1.04 * top, 1.14 * top, color="k", lw=0.5)
        ax.set_ylabel(f"{cell_ids[c]}\nHz", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper right", frameon=False)
    axes[-1, 0].set_xlabel("time from the start of the test split (s)", fontsize=8)
    return save_figure(fig, path)
