"""Image masks of a mode: the Jacobian chain through the mode's top channels, times the image.

For a layer output ``a(x)`` and a set S of channels (a mode's top channels, ranked by its atom),
``mask(x) = Σ_channels-of-input [ Σ_{u ∈ S} (∂F/∂u) · (∂u/∂x) ] ⊙ x``: every unit of the selected channels
(at every position / token) passes on the target's gradient with respect to it, chained to the image
through the unit's own input gradient; the result is multiplied by the image (gradient × input, against
the baseline 0) and summed over colour channels, then median-filtered (``size`` px) to remove the
checkerboard of strided convolutions. One forward and two backward passes per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import median_filter
from torch import nn

from ..contributions.targets import make_target
from ..modes.interventions import top_channels
from ..torch_utils.hooks import capture_outputs, prepared_model
from .adapters import channel_dim

__all__ = ["channel_chain_masks", "mode_masks"]


def channel_chain_masks(model: nn.Module, x: torch.Tensor, layer: str, channels: Sequence[int],
                        target: Any = "top1_logit", median_size: int = 3, batch_size: int = 64) -> np.ndarray:
    """Masks ``(n, H, W)`` of the images ``x (n, C, H, W)`` through ``channels`` of ``layer`` (see module doc).

    ``target`` is any contribution target (``"top1_logit"``, ``"softmax_prob"``, ``"contrastive"``, ...);
    ``median_size`` ≤ 1 skips the median filter.
    """
    tgt = make_target(target)
    cdim = channel_dim(model, layer)
    idx = torch.as_tensor(np.asarray(channels, dtype=np.int64))
    out_masks = []
    with prepared_model(model), capture_outputs(model, [layer]) as store:
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev).detach().requires_grad_(True)
            with torch.enable_grad():
                out = model(xb)
                f = tgt(out.unsqueeze(0), out.detach())[0]
                a = store[layer]
                (g,) = torch.autograd.grad(f.sum(), a, retain_graph=True)
                sel = torch.zeros(a.shape[cdim], dtype=a.dtype, device=a.device)
                sel[idx.to(a.device)] = 1.0
                shape = [1] * a.ndim
                shape[cdim] = -1
                chain = (g.detach() * sel.view(shape) * a).sum()
                (gx,) = torch.autograd.grad(chain, xb, allow_unused=True)
            if gx is None:
                gx = torch.zeros_like(xb)
            out_masks.append((gx * xb.detach()).sum(1).cpu().numpy())
    masks = np.concatenate(out_masks) if out_masks else np.zeros((0, *x.shape[2:]))
    if median_size and median_size > 1:
        masks = np.stack([median_filter(m, size=median_size, mode="nearest") for m in masks]) if len(masks) else masks
    return masks.astype(np.float32)


def mode_masks(model: nn.Module, x: torch.Tensor, layer: str, atom: np.ndarray, fraction: float = 0.1,
               ei_split: bool = True, target: Any = "top1_logit", median_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(masks (n, H, W), channels)`` through the mode's top ``fraction`` of channels (at least one)."""
    n_ch = len(atom) // 2 if ei_split else len(atom)
    frac = max(float(fraction), 1.0 / n_ch)
    chans = top_channels(atom, n_ch, frac, ei_split)
    return channel_chain_masks(model, x, layer, chans, target, median_size), chans
