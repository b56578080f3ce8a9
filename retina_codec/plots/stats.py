"""Classifier-comparison figures (CODEC Fig. 3 style): per-layer statistics and mode interventions.

- :func:`plot_layer_stats` — three panels against layer depth: Hoyer sparsity (mean ± s.d. over images),
  dimensionality (PCs for 95 % of the class-mean variance, participation ratio dashed), and E/I
  correlation; contributions in red, activations in grey.
- :func:`plot_intervention_curves` — ablation and preservation curves (accuracy on the class vs on the
  other classes, relative to the intact model, against the fraction p of channels) of each class's top
  mode, contribution modes and activation modes side by side, with the selectivity summary per panel.

Agg backend; files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io_utils import atomic_path  # noqa: E402

__all__ = ["plot_layer_stats", "plot_intervention_curves", "COLORS"]

COLORS = {"contributions": "#c0392b", "activations": "#7f8c8d"}


def _save(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)


def _mean_sd(a: np.ndarray) -> tuple[float, float]:
    f = np.asarray(a, dtype=np.float64)
    f = f[np.isfinite(f)]
    return (float(f.mean()), float(f.std())) if f.size else (float("nan"), float("nan"))


def plot_layer_stats(stats: Sequence[Any], path: str | os.PathLike, labels: Sequence[str] | None = None,
                     title: str = "") -> None:
    """Fig. 3-style panels from a list of :class:`~retina_codec.stats.LayerStats` (one per layer, in order)."""
    n = len(stats)
    xs = np.arange(n)
    labels = list(labels) if labels is not None else [s.layer for s in stats]
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 3.4))
    for src, key_h, key_e, key_d in (("contributions", "hoyer_contrib", "ei_contrib", "dim_contrib"),
                                     ("activations", "hoyer_act", "ei_act", "dim_act")):
        col = COLORS[src]
        h = np.array([_mean_sd(getattr(s, key_h)) for s in stats])
        e = np.array([_mean_sd(getattr(s, key_e)) for s in stats])
        axes[0].errorbar(xs, h[:, 0], yerr=h[:, 1], color=col, marker="o", ms=4, capsize=2, label=src)
        axes[1].plot(xs, [getattr(s, key_d)["n_pcs"] for s in stats], color=col, marker="o", ms=4,
                     label=f"{src}: PCs for 95 %")
        axes[1].plot(xs, [getattr(s, key_d)["participation_ratio"] for s in stats], color=col, ls="--",
                     marker=".", label=f"{src}: participation ratio")
        if np.isfinite(e[:, 0]).any():
            axes[2].errorbar(xs, e[:, 0], yerr=e[:, 1], color=col, marker="o", ms=4, capsize=2, label=src)
        else:
            axes[2].plot([], [], color=col, label=f"{src}: undefined (one-signed)")
    for ax, t in zip(axes, ("Hoyer sparsity", "dimensionality (class means)", "E/I correlation −r(C⁺, C⁻)")):
        ax.set_title(t, fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=60 if n > 6 else 0, fontsize=7)
        ax.set_xlabel("layer")
        ax.legend(fontsize=6, frameon=False)
    axes[0].set_ylim(0, 1)
    axes[2].axhline(0, color="k", lw=0.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_intervention_curves(sweeps: Sequence[Any], path: str | os.PathLike, title: str = "") -> None:
    """Curves of :class:`~retina_codec.classifiers.selectivity.ClassModeSweep` results.

    One panel per (source, kind): thin lines per class (solid: the class, dotted: other classes), thick
    lines the means; the panel title gives the median selectivity (AUC_target − AUC_off)/AUC_off.
    """
    keys = sorted({(s.source, s.kind) for s in sweeps}, key=lambda k: (k[1], k[0] != "contributions"))
    if not keys:
        raise ValueError("sweeps: nothing to plot")
    kinds = sorted({k[1] for k in keys})
    sources = ["contributions", "activations"]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(8.5, 3.2 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        for j, src in enumerate(sources):
            ax = axes[i, j]
            group = [s for s in sweeps if s.kind == kind and s.source == src]
            if not group:
                ax.set_visible(False)
                continue
            col = COLORS[src]
            for s in group:
                ax.plot(s.sweep.fractions, s.sweep.target, color=col, lw=0.6, alpha=0.5)
                ax.plot(s.sweep.fractions, s.sweep.off_target, color="k", lw=0.6, alpha=0.35, ls=":")
            p = group[0].sweep.fractions
            ax.plot(p, np.mean([s.sweep.target for s in group], 0), color=col, lw=2.2, label="target class")
            ax.plot(p, np.mean([s.sweep.off_target for s in group], 0), color="k", lw=2.2, ls=":",
                    label="other classes")
            sel = np.array([s.sweep.selectivity for s in group], dtype=np.float64)
            med = float(np.median(sel[np.isfinite(sel)])) if np.isfinite(sel).any() else float("nan")
            ax.set_title(f"{src} modes — {kind}\nmedian selectivity {med:.2f} ({len(group)} classes)", fontsize=8)
            ax.set_xlabel(f"fraction of channels {'zeroed' if kind == 'ablate' else 'kept'} (p)")
            ax.set_ylabel("accuracy / intact accuracy")
            ax.set_ylim(-0.05, 1.15)
            ax.legend(fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
