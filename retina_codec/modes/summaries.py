"""Mode summaries: loading correlations with classes or cell rates, k-means of cells, activation baseline.

- :func:`loading_correlations` — Pearson r of every mode's loadings with every column of a target
  matrix (each cell's predicted rate, or class indicators via :func:`class_correlations`).
- :func:`cluster_cells` — k-means of cells by their mode-correlation profiles, k chosen by silhouette.
- :func:`activation_modes` — the same SAE trained on layer activations instead of contributions
  (CODEC's comparison); the activations come from elsewhere (any engine that records a layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from ..errors import ModesError
from .decomposer import ModeDecomposer, check_matrix

__all__ = ["loading_correlations", "class_correlations", "CellClusters", "cluster_cells", "activation_modes"]


def loading_correlations(loadings: Any, targets: Any) -> np.ndarray:
    """Pearson r ``(n_modes, M)`` between each mode's loadings ``(n, n_modes)`` and each target column ``(n, M)``.

    A constant column (a mode that never varies, a silent cell) has no correlation: NaN.
    """
    a = np.asarray(loadings, dtype=np.float64)
    if a.ndim != 2:
        raise ModesError(f"loadings: expected a 2-D array (n, n_modes); found shape {a.shape}")
    t = np.asarray(targets, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] != a.shape[0]:
        raise ModesError(f"targets: expected shape ({a.shape[0]}, M) to match loadings; found {t.shape}")
    a = a - a.mean(0)
    t = t - t.mean(0)
    na = np.sqrt((a * a).sum(0))
    nt = np.sqrt((t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a.T @ t) / np.outer(na, nt)
    r[~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def class_correlations(loadings: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(r (n_modes, n_classes), classes (n_classes,))``: correlation of loadings with class indicators."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ModesError(f"labels: expected a 1-D array (n,); found shape {labels.shape}")
    classes, idx = np.unique(labels, return_inverse=True)
    indicators = np.zeros((labels.size, classes.size))
    indicators[np.arange(labels.size), idx] = 1.0
    return loading_correlations(loadings, indicators), classes


@dataclass
class CellClusters:
    """k-means grouping of cells: ``labels (n_cells,)``, chosen ``k``, ``silhouette`` per tried k, centres."""

    labels: np.ndarray
    k: int
    silhouette: dict[int, float]
    centers: np.ndarray


def cluster_cells(profiles: Any, k_range: tuple[int, int] | None = None, random_state: int = 0) -> CellClusters:
    """k-means of cells by their mode profiles ``(n_cells, n_modes)`` (e.g. ``loading_correlations(...).T``).

    Tries every k in ``k_range = (k_min, k_max)`` (default ``(2, min(10, n_cells − 1))``) and keeps the one
    with the largest mean silhouette. NaN entries (constant modes or cells) count as 0.
    """
    p = np.nan_to_num(np.asarray(check_matrix(np.nan_to_num(np.asarray(profiles, dtype=np.float64)),
                                              "profiles", min_samples=3), dtype=np.float64))
    n = p.shape[0]
    lo, hi = k_range if k_range is not None else (2, min(10, n - 1))
    hi = min(hi, n - 1)
    if lo < 2 or hi < lo:
        raise ModesError(f"k_range: expected 2 <= k_min <= k_max <= n_cells - 1 = {n - 1}; found ({lo}, {hi})")
    scores: dict[int, float] = {}
    fits: dict[int, KMeans] = {}
    for k in range(lo, hi + 1):
        km = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit(p)
        if len(np.unique(km.labels_)) < 2:
            continue
        scores[k] = float(silhouette_score(p, km.labels_))
        fits[k] = km
    if not scores:
        raise ModesError("profiles: every cell has the same profile; no grouping into >= 2 clusters exists")
    best = max(scores, key=scores.get)
    return CellClusters(fits[best].labels_.astype(np.int64), best, scores, fits[best].cluster_centers_)


def activation_modes(activations: Any, reduce: str | None = "spatial_sum", **decomposer_kwargs: Any) -> ModeDecomposer:
    """The activation-SAE baseline: a :class:`ModeDecomposer` trained the same way on layer activations.

    ``activations`` is ``(n, d)`` or ``(n, C, *spatial)``; with ``reduce="spatial_sum"`` the spatial
    dimensions are summed (as the contributions' ``spatial_sum``), with ``None`` they are flattened.
    ``decomposer_kwargs`` go to :class:`ModeDecomposer`. Returns the fitted decomposer.
    """
    a = activations.detach().cpu().numpy() if hasattr(activations, "detach") else np.asarray(activations)
    if a.ndim < 2:
        raise ModesError(f"activations: expected shape (n, d) or (n, C, *spatial); found {a.shape}")
    if a.ndim > 2:
        if reduce == "spatial_sum":
            a = a.reshape(a.shape[0], a.shape[1], -1).sum(-1)
        elif reduce is None:
            a = a.reshape(a.shape[0], -1)
        else:
            raise ModesError(f"reduce: expected 'spatial_sum' or None; found {reduce!r}")
    return ModeDecomposer(**decomposer_kwargs).fit(a)
