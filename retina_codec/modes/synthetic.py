"""Synthetic data from a planted sparse dictionary, to test that an SAE recovers known atoms."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["PlantedData", "planted_dictionary", "atom_recovery"]


class PlantedData(NamedTuple):
    """``X (n, d) = codes (n, n_atoms) @ atoms (n_atoms, d) + noise``; atoms have unit norm."""

    X: np.ndarray
    atoms: np.ndarray
    codes: np.ndarray


def planted_dictionary(n_samples: int = 8000, n_features: int = 16, n_atoms: int = 24, n_active: int = 2,
                       magnitude: tuple[float, float] = (0.5, 1.5), noise: float = 0.01,
                       seed: int = 0) -> PlantedData:
    """Samples with exactly ``n_active`` planted atoms each, magnitudes uniform in ``magnitude``."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, n_features))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_atoms))
    rows = np.repeat(np.arange(n_samples), n_active)
    cols = np.argsort(rng.random((n_samples, n_atoms)), axis=1)[:, :n_active].ravel()
    codes[rows, cols] = rng.uniform(*magnitude, size=rows.size)
    x = codes @ atoms + noise * rng.standard_normal((n_samples, n_features))
    return PlantedData(x.astype(np.float32), atoms.astype(np.float32), codes.astype(np.float32))


def atom_recovery(planted: np.ndarray, learned: np.ndarray, min_cosine: float = 0.9) -> float:
    """Fraction of ``planted (m, d)`` atoms whose best cosine with any ``learned (k, d)`` atom is ≥ min_cosine."""
    p = planted / np.linalg.norm(planted, axis=1, keepdims=True)
    norms = np.linalg.norm(learned, axis=1, keepdims=True)
    q = learned / np.where(norms > 0, norms, 1.0)
    if q.shape[0] == 0:
        return 0.0
    return float(((p @ q.T).max(axis=1) >= min_cosine).mean())
