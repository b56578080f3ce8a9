"""Per-layer contribution and activation statistics of a classifier over a set of labelled images.

:func:`layer_vectors` computes, for every hooked layer, the E/I-split, spatially (token-) summed
contributions ``(n, 2C)`` with the contribution engine and the activations reduced the same way
``(n, 2C)`` (split per element before summing, so post-ReLU activations have an all-zero negative half).
:func:`layer_statistics` turns them into the §8 statistics:

- sparsity: Hoyer per sample over the C *net* channel values (C⁻ + C⁺, i.e. the signed spatial sum) — the
  same d for contributions and activations;
- dimensionality: PCs for 95 % of the class-mean variance and the participation ratio, of the same net
  channel vectors;
- E/I correlation: −r(C⁺, C⁻) across channels per sample, of the split vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..contributions import contributions
from ..contributions.reductions import reduce_map
from ..progress import progress
from ..torch_utils.hooks import capture_outputs, prepared_model
from .measures import class_mean_dimensionality, ei_correlation, hoyer_sparsity, net_channels

__all__ = ["LayerVectors", "LayerStats", "layer_vectors", "layer_activations", "layer_statistics",
           "statistics_table", "STAT_KEYS"]

SPLIT = ("ei_split", "spatial_sum")
STAT_KEYS = ("hoyer", "n_pcs", "participation_ratio", "ei_correlation")


@dataclass
class LayerVectors:
    """Reduced vectors of each layer: ``contributions[layer]``, ``activations[layer]`` both ``(n, 2C)``
    ([negative, positive] halves), ``labels (n,)``, ``predictions (n,)``, target values, settings."""

    layers: list[str]
    contributions: dict[str, np.ndarray]
    activations: dict[str, np.ndarray]
    labels: np.ndarray
    predictions: np.ndarray
    f_x: np.ndarray
    f_baseline: np.ndarray
    completeness: dict[str, dict[str, float]]
    settings: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def layer_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str], batch_size: int = 64,
                      reduce: Sequence[str] = SPLIT, quiet: bool | None = None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Reduced activations ``{layer: (n, ...)}`` and the logits ``(n, n_classes)`` of ``x (n, ...)``."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in layers}
    logits = []
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with prepared_model(model), capture_outputs(model, layers) as store:
        for i in progress(range(0, x.shape[0], batch_size), desc="activations", quiet=quiet, unit="batch"):
            logits.append(model(x[i:i + batch_size].to(dev)).float().cpu())
            for n in layers:
                parts[n].append(reduce_map(store[n].float(), tuple(reduce), lead=1).cpu().numpy())
    return {n: np.concatenate(v) for n, v in parts.items()}, torch.cat(logits).numpy()


def layer_vectors(model: nn.Module, x: torch.Tensor, labels: Any, layers: Sequence[str],
                  target: Any = "top1_logit", method: str = "conductance", steps: int = 10,
                  batch_size: int | str = "auto", quiet: bool | None = None) -> LayerVectors:
    """Contributions (engine, E/I split + spatial sum) and activations (same reduction) of every layer."""
    layers = list(layers)
    res = contributions(model, x, layers, target=target, method=method, steps=steps, reduce=SPLIT,
                        batch_size=batch_size, quiet=quiet)
    acts, logits = layer_activations(model, x, layers, quiet=quiet)
    return LayerVectors(layers, {n: res.layers[n].astype(np.float32) for n in layers},
                        {n: acts[n].astype(np.float32) for n in layers}, np.asarray(labels).reshape(-1),
                        logits.argmax(1), res.f_x, res.f_baseline, res.summary(), res.settings)


@dataclass
class LayerStats:
    """Statistics of one layer for contributions (``*_contrib``) and activations (``*_act``).

    Per sample ``(n,)``: ``hoyer_*``, ``ei_*``. Per layer: ``dim_*`` dicts (``n_pcs``,
    ``participation_ratio``), ``n_channels``.
    """

    layer: str
    n_channels: int
    hoyer_contrib: np.ndarray
    hoyer_act: np.ndarray
    ei_contrib: np.ndarray
    ei_act: np.ndarray
    dim_contrib: dict[str, float]
    dim_act: dict[str, float]

    def summary(self) -> dict[str, float]:
        """Means over samples (NaN-aware) and the dimensionalities, keyed ``<stat>_<contrib|act>``."""
        def m(a: np.ndarray) -> float:
            return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

        return {"hoyer_contrib": m(self.hoyer_contrib), "hoyer_act": m(self.hoyer_act),
                "ei_correlation_contrib": m(self.ei_contrib), "ei_correlation_act": m(self.ei_act),
                "n_pcs_contrib": self.dim_contrib["n_pcs"], "n_pcs_act": self.dim_act["n_pcs"],
                "participation_ratio_contrib": self.dim_contrib["participation_ratio"],
                "participation_ratio_act": self.dim_act["participation_ratio"],
                "n_channels": float(self.n_channels)}


def layer_statistics(contrib_split: np.ndarray, act_split: np.ndarray, labels: Any, layer: str = "",
                     fraction: float = 0.95) -> LayerStats:
    """§8 statistics of one layer from E/I-split contributions and activations ``(n, 2C)`` and labels ``(n,)``."""
    c_net, a_net = net_channels(contrib_split), net_channels(act_split)
    return LayerStats(layer, int(c_net.shape[1]), hoyer_sparsity(c_net), hoyer_sparsity(a_net),
                      ei_correlation(contrib_split), ei_correlation(act_split),
                      class_mean_dimensionality(c_net, labels, fraction),
                      class_mean_dimensionality(a_net, labels, fraction))


def statistics_table(vectors: LayerVectors, fraction: float = 0.95) -> list[LayerStats]:
    """:class:`LayerStats` of every layer of ``vectors``, in layer order."""
    return [layer_statistics(vectors.contributions[n], vectors.activations[n], vectors.labels, n, fraction)
            for n in vectors.layers]


def sparsity_verdict(stats: Sequence[LayerStats], labels: Sequence[str] | None = None, margin: float = 0.02) -> str:
    """One plain sentence: at which layers contributions are sparser than activations (mean Hoyer higher
    by more than ``margin``) and at which they are not — the paper's claim, checked rather than assumed."""
    labels = list(labels) if labels is not None else [s.layer for s in stats]
    sparser, not_sparser = [], []
    for s, name in zip(stats, labels):
        d = s.summary()
        item = f"{name} ({d['hoyer_contrib']:.2f} vs {d['hoyer_act']:.2f})"
        (sparser if d["hoyer_contrib"] > d["hoyer_act"] + margin else not_sparser).append(item)
    text = f"Contributions are sparser than activations (mean Hoyer, contributions vs activations) at " \
           f"{len(sparser)} of {len(stats)} layers"
    text += ": " + ", ".join(sparser) if sparser else ""
    if not_sparser:
        text += f"; they are NOT sparser at: {', '.join(not_sparser)}"
    return text + "."
