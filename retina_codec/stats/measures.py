"""Sparsity, dimensionality and E/I correlation of per-sample channel vectors (docs/definitions.md#classifier-statistics).

- :func:`hoyer_sparsity` — per sample over channels, ``(√d − ‖v‖₁/‖v‖₂)/(√d − 1)``: 0 for a vector with
  equal magnitudes everywhere, 1 for a vector with one non-zero entry (NaN for an all-zero vector).
- :func:`class_mean_dimensionality` — principal components needed for 95 % of the variance of the
  class-mean vectors (class means centred on their grand mean), and :func:`participation_ratio`
  ``(Σλ)²/Σλ²`` of the same eigenvalues.
- :func:`ei_correlation` — per sample, −Pearson r across channels between C⁺ and C⁻ of an E/I-split vector
  ``[C⁻, C⁺]`` (+1: each channel pushes both ways in proportion; 0: channels are either excitatory or
  inhibitory). NaN where either half is constant (e.g. activations after a ReLU have C⁻ ≡ 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import StatisticsError

__all__ = ["hoyer_sparsity", "class_means", "pca_spectrum", "n_components", "participation_ratio",
           "class_mean_dimensionality", "ei_correlation", "split_halves", "net_channels"]


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise StatisticsError(f"{name}: expected a 2-D array (n_samples, n_channels); found shape {a.shape}")
    return a


def hoyer_sparsity(v: Any) -> np.ndarray:
    """Hoyer sparsity ``(n,)`` of each row of ``v (n, d)`` (NaN for all-zero rows or d < 2)."""
    a = np.abs(_matrix(v, "v"))
    d = a.shape[1]
    if d < 2:
        return np.full(a.shape[0], np.nan)
    l1 = a.sum(1)
    l2 = np.sqrt((a * a).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        h = (np.sqrt(d) - l1 / l2) / (np.sqrt(d) - 1.0)
    h[l2 == 0] = np.nan
    return np.clip(h, 0.0, 1.0, out=h, where=np.isfinite(h))


def class_means(x: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(means (n_classes, d), classes (n_classes,))`` of the rows of ``x (n, d)`` per label."""
    a = _matrix(x, "x")
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != a.shape[0]:
        raise StatisticsError(f"labels: expected {a.shape[0]} labels to match x; found {y.shape[0]}")
    classes, inv = np.unique(y, return_inverse=True)
    sums = np.zeros((classes.size, a.shape[1]))
    np.add.at(sums, inv, a)
    return sums / np.bincount(inv)[:, None], classes


def pca_spectrum(x: Any) -> np.ndarray:
    """Variances ``(k,)`` (descending) of the principal components of the rows of ``x`` (centred)."""
    a = _matrix(x, "x")
    a = a - a.mean(0)
    if a.shape[0] < 2:
        return np.zeros(0)
    s = np.linalg.svd(a, compute_uv=False)
    return s * s / (a.shape[0] - 1)


def n_components(spectrum: np.ndarray, fraction: float = 0.95) -> int:
    """Smallest number of leading components whose variance reaches ``fraction`` of the total (0 if none)."""
    lam = np.asarray(spectrum, dtype=np.float64)
    total = lam.sum()
    if lam.size == 0 or total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(lam) / total, fraction - 1e-12) + 1)


def participation_ratio(spectrum: np.ndarray) -> float:
    """``(Σλ)² / Σλ²`` of eigenvalues ``λ`` (NaN when all are zero)."""
    lam = np.asarray(spectrum, dtype=np.float64)
    q = float((lam * lam).sum())
    return float(lam.sum() ** 2 / q) if q > 0 else float("nan")


def class_mean_dimensionality(x: Any, labels: Any, fraction: float = 0.95) -> dict[str, float]:
    """``{"n_pcs": …, "participation_ratio": …, "n_classes": …}`` of the class-mean vectors of ``x (n, d)``."""
    means, classes = class_means(x, labels)
    lam = pca_spectrum(means)
    return {"n_pcs": float(n_components(lam, fraction)), "participation_ratio": participation_ratio(lam),
            "n_classes": float(classes.size), "fraction": float(fraction)}


def split_halves(split: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(C⁻ (n, C), C⁺ (n, C))`` of E/I-split vectors ``[C⁻, C⁺] (n, 2C)``."""
    a = _matrix(split, "split")
    if a.shape[1] % 2:
        raise StatisticsError(f"split: expected an even number of columns [negative, positive]; found {a.shape[1]}")
    c = a.shape[1] // 2
    return a[:, :c], a[:, c:]


def net_channels(split: Any) -> np.ndarray:
    """Net per-channel values ``C⁻ + C⁺ (n, C)`` of E/I-split vectors ``(n, 2C)``."""
    neg, pos = split_halves(split)
    return neg + pos


def ei_correlation(split: Any) -> np.ndarray:
    """Per-sample ``−r(C⁺, C⁻)`` across channels ``(n,)`` of E/I-split vectors ``(n, 2C)``."""
    neg, pos = split_halves(split)
    n_ = neg - neg.mean(1, keepdims=True)
    p_ = pos - pos.mean(1, keepdims=True)
    den = np.sqrt((n_ * n_).sum(1) * (p_ * p_).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (n_ * p_).sum(1) / den
    r[~(den > 1e-300)] = np.nan
    return -np.clip(r, -1.0, 1.0)
