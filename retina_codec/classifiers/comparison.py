"""The CODEC classifier comparison in one call: what ``retina-codec classify-stats`` and the demo's
classifier stage run.

:func:`compare_classifier` loads the classifier and the images, computes per-layer contribution vs
activation statistics, modes, ablation / preservation sweeps and masks (:func:`classify_stats`) and
writes ``OUT/stats.h5``; the figures are drawn from its result by
:func:`retina_codec.plots.classifier_figures.write_comparison_figures`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, OutputExistsError, RetinaCodecError
from ..models import resolve_model_path
from .adapters import load_classifier, resolve_layers
from .analysis import ClassifyStats, classify_stats, write_classify_stats
from .data import ImageSet, load_images

__all__ = ["ClassifierComparison", "compare_classifier"]


@dataclass
class ClassifierComparison:
    """The result of :func:`compare_classifier`: the statistics, the model and images they were computed on,
    the store written (``stats.h5``) and the model's short name (for figure titles)."""

    result: ClassifyStats
    model: nn.Module
    images: ImageSet
    path: Path
    name: str

    def summary_lines(self) -> list[str]:
        """The accuracy and, per layer, Hoyer sparsity, PCs and E/I correlation of contributions vs
        activations: one line each (what ``classify-stats`` logs)."""
        res = self.result
        lines = [f"accuracy {res.accuracy:.3f} on {len(self.images)} images; wrote {self.path}"]
        for st, alias in zip(res.stats, res.aliases):
            s = st.summary()
            lines.append(f"{alias:<10s} Hoyer contrib {s['hoyer_contrib']:.3f} act {s['hoyer_act']:.3f} | PCs "
                         f"{int(s['n_pcs_contrib'])}/{int(s['n_pcs_act'])} | E/I {s['ei_correlation_contrib']:.3f}")
        return lines


def compare_classifier(model: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike, *,
                       weights: str | None = None, random_weights: bool = False, num_classes: int | None = None,
                       layers: str | None = None, target: str = "top1_logit", method: str = "conductance",
                       steps: int = 10, batch_size: int | str = "auto", max_per_class: int | None = None,
                       modes: bool = True, mode_images: str | None = None, mode_layer: str | None = None,
                       n_modes: int | None = None, n_fractions: int = 9, mask_images: int = 6,
                       mask_fraction: float = 0.1, seed: int = 0, threads: int | None = None,
                       overwrite: bool = False) -> ClassifierComparison:
    """Run the classifier comparison of ``model`` (``digits-cnn``, a digits-CNN folder, or an architecture with
    local ``weights`` / ``random_weights``) on ``images`` (``digits``, ``digits:train`` or an ImageFolder) and
    write ``out/stats.h5``.

    ``layers``: comma-separated layers, aliases or groups (default: the model's blocks); ``steps`` path
    steps of ``method`` towards ``target``; ``batch_size`` images per chunk (``"auto"``: from the memory
    budget); with ``modes``, modes of ``mode_layer`` (default: the last) fitted on ``mode_images`` (default:
    ``images``), ``n_fractions`` sweep fractions in [0, 1] and masks of ``mask_images`` images per mode
    and the top ``mask_fraction`` of channels; ``threads`` CPU threads for torch (default: torch's choice).
    """
    out = Path(out)
    h5 = out / "stats.h5"
    if h5.exists() and not overwrite:
        raise OutputExistsError(f"{h5}: exists already (pass --overwrite to replace it)")
    is_arch = str(model) != "digits-cnn" and not resolve_model_path(model).exists()
    if is_arch and weights is None and not random_weights:
        raise CheckpointError(f"model {model!r}: pass --weights FILE (a local state dict) or --random-weights")
    if steps < 1 or n_fractions < 2:
        raise RetinaCodecError(f"--steps must be >= 1 and --n-fractions >= 2; found {steps}, {n_fractions}")
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(max(1, threads))
    net = load_classifier(model, weights=weights, num_classes=num_classes)
    names = resolve_layers(net, layers)
    imgs = load_images(images, net, max_per_class=max_per_class, seed=seed)
    if len(np.unique(imgs.y.numpy())) < 2:
        raise RetinaCodecError(f"{images}: expected images of at least two classes")
    fit_imgs = load_images(mode_images, net, max_per_class=max_per_class, seed=seed) if mode_images else None
    chosen = resolve_layers(net, mode_layer)[0] if mode_layer else None
    if chosen is not None and chosen not in names:
        names.append(chosen)
    try:
        res = classify_stats(net, imgs, names, target=target, method=method, steps=steps, batch_size=batch_size,
                             modes=modes, mode_layer=chosen, n_modes=n_modes,
                             fractions=tuple(np.linspace(0.0, 1.0, n_fractions)), mask_images=mask_images,
                             mask_fraction=mask_fraction, seed=seed, mode_images=fit_imgs)
    except ValueError as err:
        if isinstance(err, RetinaCodecError):
            raise
        raise RetinaCodecError(str(err)) from err
    write_classify_stats(h5, res, net, imgs, model_spec=str(model),
                         mode_images_source=fit_imgs.source if fit_imgs else "")
    return ClassifierComparison(res, net, imgs, h5, Path(str(model)).name)
