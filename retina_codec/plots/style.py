"""Shared figure helpers for the report's plot modules: Agg backend, atomic PNG writes, colour scales."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io_utils import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure", "symmetric_limit", "TYPE_COLORS", "type_color", "DIVERGING"]

DIVERGING = "RdBu_r"
#: one colour per simulated ganglion-cell type (others grey)
TYPE_COLORS = {"OFF": "#1f5fa8", "ON": "#c0392b", "ON-OFF": "#8e44ad", "LN": "#2e8b57"}


def type_color(cell_type: str) -> str:
    """Colour of a cell type (grey when unknown)."""
    return TYPE_COLORS.get(str(cell_type), "#555555")


def symmetric_limit(values: Any, quantile: float = 1.0) -> float:
    """``max |values|`` (or that quantile of ``|values|``) for a symmetric colour scale; 1 when all zero/NaN."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    a = a[np.isfinite(a)]
    if not a.size:
        return 1.0
    v = float(np.quantile(a, quantile)) if quantile < 1 else float(a.max())
    return v if v > 0 else 1.0


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> str:
    """Write ``fig`` as PNG atomically, close it, and return the path as a string."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return str(path)
