"""Reductions of per-unit contribution maps (docs/definitions.md#reductions).

A contribution map has the layer's output shape per sample (and target): ``(..., C, H, W)`` for
convolutional layers, ``(..., T, D)`` for transformer blocks (tokens × channels), ``(..., D)`` for a
vector. ``lead`` leading axes (samples, targets) are left alone.

- ``ei_split``: every element split into its negative and positive parts *before* pooling,
  ``C⁻ = min(C, 0)``, ``C⁺ = max(C, 0)``, concatenated as ``[negative, positive]`` along channels.
- ``spatial_sum``: sum over every axis after channels (H×W), or over tokens for ``(T, D)`` maps.

With both, an 8-channel retina layer gives 16 numbers per bin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ContributionError

__all__ = ["REDUCTIONS", "normalize_reduce", "channel_axis", "reduce_map", "reduced_shape"]

REDUCTIONS = ("ei_split", "spatial_sum")


def normalize_reduce(reduce: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None`` / ``"none"`` → ``()``; a name or names → a validated tuple in application order."""
    if reduce is None:
        return ()
    names = (reduce,) if isinstance(reduce, str) else tuple(reduce)
    names = tuple(n for n in names if n not in ("none", ""))
    for n in names:
        if n not in REDUCTIONS:
            raise ContributionError(f"reduce: unknown reduction {n!r}; expected any of {REDUCTIONS} or None")
    # ei_split must come before pooling: apply it first whatever order was given
    return tuple(sorted(set(names), key=REDUCTIONS.index))


def channel_axis(unit_ndim: int) -> int:
    """Channel axis within one sample's map: 0 for (C, ...) maps of ndim ≠ 2, last for (T, D) token maps."""
    return -1 if unit_ndim == 2 else 0


def reduce_map(c: torch.Tensor, reduce: Sequence[str], lead: int = 1) -> torch.Tensor:
    """Apply the reductions to ``c`` whose first ``lead`` axes are samples/targets."""
    unit_ndim = c.ndim - lead
    ax = channel_axis(unit_ndim)
    ch = lead + ax if ax >= 0 else c.ndim + ax
    pool = "spatial_sum" in reduce and unit_ndim >= 2
    dims = tuple(d for d in range(lead, c.ndim) if d != ch)
    if "ei_split" in reduce:
        neg, pos = c.clamp(max=0), c.clamp(min=0)
        if pool:  # pool each part first: no concatenated copy of the full maps
            neg, pos = neg.sum(dim=dims), pos.sum(dim=dims)
            ch = lead if ax >= 0 else -1
        return torch.cat([neg, pos], dim=ch)
    return c.sum(dim=dims) if pool else c


def reduced_shape(unit_shape: Sequence[int], reduce: Sequence[str]) -> tuple[int, ...]:
    """Per-sample shape after the reductions, for a layer whose per-sample output shape is ``unit_shape``."""
    shape = list(unit_shape)
    if not shape:
        return ()
    ax = channel_axis(len(shape))
    if "ei_split" in reduce:
        shape[ax] *= 2
    if "spatial_sum" in reduce and len(shape) >= 2:
        shape = [shape[ax]]
    return tuple(shape)
