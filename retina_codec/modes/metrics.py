"""Quality of a mode decomposition: explained variance (per-dimension mean), mean L0, dead fraction."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModesError

__all__ = ["explained_variance", "mean_l0", "firing_counts", "dead_fraction"]


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        a = (a.float() if a.dtype in (torch.bfloat16, torch.float16) else a).numpy()
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def explained_variance(x: np.ndarray | torch.Tensor, x_hat: np.ndarray | torch.Tensor) -> float:
    """``1 − Σ‖x − x̂‖² / Σ‖x − μ‖²`` over samples, with ``μ (d,)`` the per-dimension mean of ``x``.

    ``x`` and ``x_hat`` are ``(n, d)`` (``x_hat`` may broadcast, e.g. ``(d,)``). Predicting μ scores
    exactly 0 (μ is computed in ``x``'s own precision, so ``x.mean(axis=0)`` is μ bit for bit), a perfect
    reconstruction 1; worse than the mean is negative. Sums are taken in float64.
    """
    x = _np(x)
    if x.ndim != 2:
        raise ModesError(f"x must be a 2-D array (n_samples, n_features); got shape {x.shape}")
    mu = x.mean(axis=0).astype(np.float64)
    x = x.astype(np.float64)
    x_hat = _np(x_hat).astype(np.float64)
    try:
        x_hat = np.broadcast_to(x_hat, x.shape)
    except ValueError:
        raise ModesError(f"x_hat: expected shape {x.shape} (or broadcastable, e.g. ({x.shape[1]},)) to match x; "
                         f"found {x_hat.shape}") from None
    residual = np.square(x - x_hat).sum()
    total = np.square(x - np.broadcast_to(mu, x.shape)).sum()
    if total == 0.0:
        return 1.0 if residual == 0.0 else float("-inf")
    return float(1.0 - residual / total)


def mean_l0(codes: np.ndarray | torch.Tensor) -> float:
    """Mean number of non-zero codes per sample; ``codes`` is ``(n, K)``."""
    if isinstance(codes, torch.Tensor):
        return float((codes != 0).sum(dim=1).double().mean()) if codes.shape[0] else 0.0
    codes = np.asarray(codes)
    return float((codes != 0).sum(axis=1).mean()) if codes.shape[0] else 0.0


def firing_counts(codes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Number of samples in which each latent is non-zero: ``(K,)`` int64 from ``codes (n, K)``."""
    if isinstance(codes, torch.Tensor):
        return (codes != 0).sum(dim=0).cpu().numpy().astype(np.int64)
    return (np.asarray(codes) != 0).sum(axis=0).astype(np.int64)


def dead_fraction(codes: np.ndarray | torch.Tensor) -> float:
    """Fraction of latents that are zero on every sample of ``codes (n, K)``."""
    counts = firing_counts(codes)
    return float((counts == 0).mean()) if counts.size else 0.0
