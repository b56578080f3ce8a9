"""The whole classifier comparison in one call, and its self-describing HDF5 file.

:func:`classify_stats` runs, for a classifier and a labelled image set: contributions and activations of
every layer (:func:`~retina_codec.stats.layer_vectors`), the §8 statistics, contribution and activation
modes of one layer with each class's top mode ablated / preserved (:mod:`.selectivity`), and the
Jacobian-chain masks of those modes on their top-loading images (:mod:`.masks`).
:func:`write_classify_stats` stores it atomically; :func:`read_classify_summary` reads the per-layer table and
:func:`read_layer_stats` the per-layer statistics (the store: :mod:`retina_codec.stores.classifier_stats`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ClassifierError
from ..hashing import model_hash
from ..modes import ModeDecomposer
from ..stats import LayerStats, LayerVectors, layer_vectors, net_channels, statistics_table
from ..stores.classifier_stats import (
    FORMAT,
    SOURCES,
    LayerRecord,
    MasksRecord,
    ModesRecord,
    SweepRecord,
    read_classify_summary,
    read_layer_records,
    write_classify_stats_file,
)
from .adapters import layer_alias
from .data import ImageSet
from .masks import mode_masks
from .selectivity import (
    DEFAULT_FRACTIONS,
    ClassModeSweep,
    class_mode_sweeps,
    fit_layer_modes,
    top_class_modes,
)

__all__ = ["ModeMasks", "ClassifyStats", "classify_stats", "write_classify_stats", "read_classify_summary",
           "read_layer_stats", "FORMAT"]


@dataclass
class ModeMasks:
    """Masks ``(m, k, H, W)`` of m modes on their k top-loading images (``image_index (m, k)``)."""

    modes: np.ndarray
    classes: np.ndarray
    image_index: np.ndarray
    masks: np.ndarray
    channels: list[list[int]]


@dataclass
class ClassifyStats:
    """Everything :func:`classify_stats` computed (modes, sweeps and masks empty when ``modes=False``)."""

    vectors: LayerVectors
    stats: list[LayerStats]
    aliases: list[str]
    mode_layer: str | None = None
    decomposers: dict[str, ModeDecomposer] = field(default_factory=dict)
    loadings: dict[str, np.ndarray] = field(default_factory=dict)
    top_modes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    sweeps: list[ClassModeSweep] = field(default_factory=list)
    masks: dict[str, ModeMasks] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.vectors.predictions == self.vectors.labels))


def _masks_for(model: nn.Module, images: ImageSet, layer: str, dec: ModeDecomposer, loadings: np.ndarray,
               top: tuple[np.ndarray, np.ndarray, np.ndarray], source: str, k: int, fraction: float,
               target: Any) -> ModeMasks:
    classes, modes, _ = top
    idx = np.stack([np.argsort(-loadings[:, m], kind="stable")[:k] for m in modes])
    masks, chans = [], []
    for m, rows in zip(modes, idx):
        mk, ch = mode_masks(model, images.x[torch.from_numpy(rows)], layer, dec.atoms_[m], fraction,
                            ei_split=source == "contributions", target=target)
        masks.append(mk)
        chans.append([int(c) for c in ch])
    return ModeMasks(np.asarray(modes), np.asarray(classes), idx, np.stack(masks), chans)


def classify_stats(model: nn.Module, images: ImageSet, layers: list[str], *, target: Any = "top1_logit",
                   method: str = "conductance", steps: int = 10, batch_size: int | str = "auto",
                   modes: bool = True, mode_layer: str | None = None, n_modes: int | None = None,
                   fractions: tuple[float, ...] = DEFAULT_FRACTIONS, kinds: tuple[str, ...] = ("ablate", "preserve"),
                   mask_images: int = 6, mask_fraction: float = 0.1, seed: int = 0,
                   mode_images: ImageSet | None = None, quiet: bool | None = None) -> ClassifyStats:
    """Statistics of ``layers`` over ``images``; with ``modes``, modes / sweeps / masks at ``mode_layer``
    (default the last layer). See the module docstring.

    ``mode_images`` (optional, e.g. a train split) are the images the modes are fitted on and each class's
    top mode is chosen from; the sweeps and masks always use ``images``. Default: ``images`` themselves.
    """
    t0 = time.perf_counter()
    vec = layer_vectors(model, images.x, images.y.numpy(), layers, target=target, method=method, steps=steps,
                        batch_size=batch_size, quiet=quiet)
    t1 = time.perf_counter()
    res = ClassifyStats(vec, statistics_table(vec), [layer_alias(model, n) for n in layers])
    res.seconds = {"contributions_and_activations": t1 - t0, "statistics": time.perf_counter() - t1}
    if not modes:
        return res
    layer = mode_layer or layers[-1]
    if layer not in layers:
        raise ClassifierError(f"mode_layer: expected one of the analysed layers {layers}; found {layer!r}")
    res.mode_layer = layer
    y = images.y.numpy()
    t2 = time.perf_counter()
    fit_vec, fit_y = vec, y
    if mode_images is not None:
        fit_vec = layer_vectors(model, mode_images.x, mode_images.y.numpy(), [layer], target=target,
                                method=method, steps=steps, batch_size=batch_size, quiet=quiet)
        fit_y = mode_images.y.numpy()
    for src in SOURCES:
        def pick(v: LayerVectors, src: str = src) -> np.ndarray:
            raw = v.contributions[layer] if src == "contributions" else v.activations[layer]
            return raw if src == "contributions" else net_channels(raw)

        raw = fit_vec.contributions[layer] if src == "contributions" else fit_vec.activations[layer]
        dec = fit_layer_modes(raw, src, n_modes=n_modes, seed=seed, quiet=quiet)
        fit_loadings = dec.transform(pick(fit_vec))
        res.decomposers[src] = dec
        res.loadings[src] = dec.transform(pick(vec))
        res.top_modes[src] = top_class_modes(fit_loadings, fit_y)
        res.sweeps += class_mode_sweeps(model, layer, images.x, y, dec, fit_loadings, fit_y, src, kinds=kinds,
                                        fractions=fractions)
        if mask_images > 0:
            res.masks[src] = _masks_for(model, images, layer, dec, res.loadings[src], res.top_modes[src], src,
                                        mask_images, mask_fraction, target)
    res.seconds["modes_sweeps_masks"] = time.perf_counter() - t2
    return res


def write_classify_stats(path: str | os.PathLike, res: ClassifyStats, model: nn.Module, images: ImageSet,
                         model_spec: str = "", mode_images_source: str = "") -> Path:
    """Write ``res`` to ``path`` (HDF5, atomically; layout: :mod:`retina_codec.stores.classifier_stats`)."""
    vec = res.vectors
    s = vec.settings
    attrs = {
        "model": model_spec or type(model).__name__, "model_class": type(model).__name__,
        "model_hash": model_hash(model), "method": s.get("method", ""), "rule": s.get("rule", ""),
        "steps": int(s.get("steps", 0)), "target": s.get("target", {}), "reduction": s.get("reduction", []),
        "affine_stem": s.get("affine_stem", []), "layers": vec.layers, "aliases": res.aliases,
        "images": images.source, "n_images": len(images), "class_names": images.class_names,
        "accuracy": res.accuracy, "mode_layer": res.mode_layer or "", "seconds": res.seconds,
        "mode_images": mode_images_source,
    }
    layers = [LayerRecord(name, alias, st.n_channels, st.dim_contrib, st.dim_act, vec.completeness.get(name, {}),
                          {"contributions": vec.contributions[name], "activations": vec.activations[name],
                           "hoyer_contrib": st.hoyer_contrib, "hoyer_act": st.hoyer_act,
                           "ei_contrib": st.ei_contrib, "ei_act": st.ei_act})
              for st, name, alias in zip(res.stats, vec.layers, res.aliases)]
    modes, sweeps, masks = [], [], []
    if res.mode_layer:
        for src, dec in res.decomposers.items():
            classes, best, r = res.top_modes[src]
            modes.append(ModesRecord(src, dec.metrics(), dec.settings(), dec.atoms_, res.loadings[src], classes,
                                     best, r))
        for src in SOURCES:
            for kind in sorted({sw.kind for sw in res.sweeps}):
                group = [sw for sw in res.sweeps if sw.source == src and sw.kind == kind]
                if group:
                    sweeps.append(SweepRecord(
                        src, kind, group[0].sweep.fractions, [sw.cls for sw in group], [sw.mode for sw in group],
                        np.stack([sw.sweep.target for sw in group]), np.stack([sw.sweep.off_target for sw in group]),
                        *([getattr(sw.sweep, k) for sw in group] for k in ("auc_target", "auc_off", "selectivity"))))
        masks = [MasksRecord(src, mm.channels, mm.masks, mm.image_index, mm.modes, mm.classes)
                 for src, mm in res.masks.items()]
    return write_classify_stats_file(path, attrs=attrs, labels=vec.labels, predictions=vec.predictions, f_x=vec.f_x,
                                     f_baseline=vec.f_baseline, layers=layers,
                                     summary=[st.summary() for st in res.stats], mode_layer=res.mode_layer,
                                     modes=modes, sweeps=sweeps, masks=masks)


def read_layer_stats(path: str | os.PathLike) -> tuple[list[LayerStats], list[str], dict[str, Any]]:
    """``(LayerStats per layer, layer aliases, decoded root attributes)`` from a ``classify-stats``
    ``stats.h5`` (read by :func:`retina_codec.stores.classifier_stats.read_layer_records`)."""
    records, attrs = read_layer_records(path)
    stats = [LayerStats(r["name"], int(r["n_channels"]), r["hoyer_contrib"], r["hoyer_act"], r["ei_contrib"],
                        r["ei_act"], r["dim_contrib"], r["dim_act"]) for r in records]
    return stats, [str(r.get("alias", r["name"])) for r in records], attrs
