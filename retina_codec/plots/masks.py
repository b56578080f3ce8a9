"""Mode visualisation on images: each row a mode, each column one of its top-loading images with the
mode's Jacobian-chain mask (:func:`~retina_codec.classifiers.masks.mode_masks`) overlaid.

Masks share a symmetric colour scale per row (red: pushes the target up, blue: down); the image is drawn
as its half-intensity contour over the mask, or blended underneath it (rescaled to [0, 1] per image). Agg backend; written atomically.
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

__all__ = ["plot_mode_masks", "display_image"]


def display_image(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` normalised image → ``(H, W)`` grey or ``(H, W, 3)`` colour in [0, 1] for display."""
    a = np.asarray(img, dtype=np.float64)
    a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def plot_mode_masks(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], path: str | os.PathLike,
                    row_titles: Sequence[str] | None = None, col_titles: Sequence[Sequence[str]] | None = None,
                    alpha: float = 0.65, overlay: str = "contour", title: str = "") -> None:
    """Grid: ``images[r]`` ``(k, C, H, W)`` and ``masks[r]`` ``(k, H, W)`` for each mode r (row).

    ``overlay="contour"``: the mask with the image's half-intensity contour drawn over it (clearest for
    line drawings such as digits); ``"blend"``: the mask blended over the image with ``alpha``.
    """
    if overlay not in ("contour", "blend"):
        raise ValueError(f"overlay: expected 'contour' or 'blend'; found {overlay!r}")
    rows = len(images)
    if rows == 0 or rows != len(masks):
        raise ValueError(f"images/masks: expected the same non-zero number of rows; found {rows} and {len(masks)}")
    cols = max(len(m) for m in masks)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 0.8, 1.55 * rows), squeeze=False)
    for r in range(rows):
        m = np.asarray(masks[r])
        v = float(np.abs(m).max()) if m.size and np.abs(m).max() > 0 else 1.0
        for c in range(cols):
            ax: Any = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(m):
                ax.set_visible(False)
                continue
            img = display_image(images[r][c])
            if overlay == "contour":
                ax.imshow(m[c], cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
                grey = img if img.ndim == 2 else img.mean(-1)
                ax.contour(grey, levels=[0.5], colors="k", linewidths=0.6)
            else:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
                ax.imshow(m[c], cmap="RdBu_r", vmin=-v, vmax=v, alpha=alpha, interpolation="nearest")
            if col_titles is not None:
                ax.set_title(col_titles[r][c], fontsize=6)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)
