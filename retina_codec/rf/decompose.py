"""Rank-k space–time SVD of receptive fields, with a fixed sign convention.

A receptive field ``(h, H, W)`` (oldest frame first) is written as ``Σ_k s_k · t_k(τ) ⊗ x_k(y, x)`` with
orthonormal temporal components ``t_k (h,)`` and spatial components ``x_k (H, W)``. SVD leaves each pair's
sign free; we fix it (docs/definitions.md#rank-1-decomposition) so that **the spatial component correlates positively with the RF's
peak frame** (the frame with the largest energy ``Σ_yx rf²``). The polarity therefore lives in the
spatial map: an OFF cell's rank-1 spatial RF has a negative centre, an ON cell's a positive one, and the
temporal component is positive at the peak lag. (pyret's ``lowranksta`` instead fixes the sign of the
temporal component and subtracts the mean first; we do not subtract it unless ``center=True``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ReceptiveFieldError

__all__ = ["SpaceTimeComponents", "space_time_svd", "peak_frame", "batched_rank1", "peak_box", "denoise_rank1"]


@dataclass
class SpaceTimeComponents:
    """Rank-k decomposition of RFs with leading shape ``L`` (e.g. ``(N,)`` cells or ``()``).

    spatial : (*L, k, H, W) unit-norm spatial components.
    temporal : (*L, k, h) unit-norm temporal components (oldest frame first).
    singular_values : (*L, k), descending.
    explained : (*L, k) fraction of the RF's total energy (sum of squares) in each component.
    peak : (*L,) int, index of the peak frame used for the sign.
    """

    spatial: np.ndarray
    temporal: np.ndarray
    singular_values: np.ndarray
    explained: np.ndarray
    peak: np.ndarray

    def reconstruct(self, rank: int | None = None) -> np.ndarray:
        """The rank-``rank`` approximation ``(*L, h, H, W)`` (default: every kept component)."""
        k = self.singular_values.shape[-1] if rank is None else rank
        return np.einsum("...k,...kt,...kyx->...tyx", self.singular_values[..., :k], self.temporal[..., :k, :],
                         self.spatial[..., :k, :, :])


def peak_frame(rf: np.ndarray) -> np.ndarray:
    """Index of the frame with the largest energy, for RFs ``(*L, h, H, W)`` -> ``(*L,)`` int."""
    return np.argmax(np.square(rf).sum(axis=(-1, -2)), axis=-1)


def space_time_svd(rf: np.ndarray, rank: int = 1, center: bool = False) -> SpaceTimeComponents:
    """Rank-``rank`` SVD of one RF ``(h, H, W)`` or a stack ``(*L, h, H, W)`` (vectorised over ``L``).

    ``center=True`` subtracts each RF's mean value first. NaN RFs (silent cells) give NaN components.
    """
    rf = np.asarray(rf, dtype=np.float64)
    if rf.ndim < 3:
        raise ReceptiveFieldError(f"rf: expected shape (*L, h, H, W) with at least 3 dims, found {rf.shape}")
    *lead, h, hh, ww = rf.shape
    if center:
        rf = rf - rf.mean(axis=(-3, -2, -1), keepdims=True)
    k = max(1, min(int(rank), h, hh * ww))
    flat = rf.reshape(-1, h, hh * ww)
    bad = ~np.isfinite(flat).all(axis=(1, 2))
    u, s, vt = np.linalg.svd(np.where(bad[:, None, None], 0.0, flat), full_matrices=False)
    u, s, vt = u[:, :, :k], s[:, :k], vt[:, :k, :]
    peak = peak_frame(flat.reshape(-1, h, hh, ww))
    peak_img = flat[np.arange(len(flat)), peak]  # (M, H·W)
    sign = np.sign(np.einsum("mkp,mp->mk", vt, peak_img))
    sign[sign == 0] = 1.0
    u = u * sign[:, None, :]
    vt = vt * sign[:, :, None]
    total = np.square(flat).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        explained = np.square(s) / total[:, None]
    spatial = vt.reshape(-1, k, hh, ww)
    temporal = np.swapaxes(u, 1, 2)
    for arr in (spatial, temporal, s, explained):
        arr[bad] = np.nan
    shape = tuple(lead)
    return SpaceTimeComponents(spatial.reshape(shape + (k, hh, ww)), temporal.reshape(shape + (k, h)),
                               s.reshape(shape + (k,)), explained.reshape(shape + (k,)),
                               peak.reshape(shape))


def working_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when float32 or float64, else as float64: large per-batch products of IRFs run in
    their own precision (running totals and small eigenproblems stay float64)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.double()


def batched_rank1(rf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-1 parts of many RFs at once (for streaming; torch, any device).

    ``rf`` is ``(M, h, P)`` (P = H·W). Returns ``(spatial (M, P), temporal (M, h), singular value (M,))``
    with unit-norm parts and the sign convention of :func:`space_time_svd` (spatial part correlates
    positively with the peak frame). Exact: the top eigenvector of the small ``h × h`` Gram matrix
    ``rf rfᵀ`` gives the temporal part, ``rfᵀ u / s`` the spatial part.
    """
    rf = working_precision(rf)  # the small eigenproblems and the returned parts are float64
    gram = rf @ rf.transpose(1, 2)  # (M, h, h)
    vals, vecs = torch.linalg.eigh(gram.double())
    u = vecs[..., -1]  # (M, h)
    s = vals[..., -1].clamp_min(0).sqrt()
    v = (u.to(rf.dtype).unsqueeze(1) @ rf).squeeze(1).double() / s[:, None].clamp_min(1e-300)
    idx = torch.diagonal(gram, dim1=1, dim2=2).argmax(-1)  # the frame with the most energy
    peak = rf[torch.arange(rf.shape[0], device=rf.device), idx]  # (M, P)
    sign = torch.sign((v * peak).sum(-1))
    sign[sign == 0] = 1
    return v * sign[:, None], u * sign[:, None], s


def peak_box(rf: np.ndarray, radius: int = 4) -> tuple[slice, slice]:
    """``(rows, cols)`` slices of the ``(2·radius+1)²`` box (clipped to the frame) around the pixel with
    the most energy over time, ``argmax_yx Σ_t rf[t, y, x]²``, of one RF ``(h, H, W)``."""
    energy = np.square(np.nan_to_num(np.asarray(rf, dtype=np.float64))).sum(0)
    y, x = np.unravel_index(np.argmax(energy), energy.shape)
    return (slice(max(y - radius, 0), y + radius + 1), slice(max(x - radius, 0), x + radius + 1))


def denoise_rank1(rf: np.ndarray, radius: int | None = 4) -> np.ndarray:
    """Rank-1 space–time approximation of one RF ``(h, H, W)`` inside :func:`peak_box`, zero outside.

    Restricting the SVD to the box keeps noise from the many empty pixels out of the components, so a
    noisy STA is denoised towards its separable core; ``radius=None`` uses the whole frame.
    """
    rf = np.asarray(rf, dtype=np.float64)
    out = np.zeros_like(rf)
    box = (slice(None), slice(None)) if radius is None else peak_box(rf, radius)
    out[(slice(None),) + box] = space_time_svd(rf[(slice(None),) + box]).reconstruct()
    return out
