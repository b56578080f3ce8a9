"""The whole classifier comparison in one call, and its self-describing HDF5 file.

:func:`classify_stats` runs, for a classifier and a labelled image set: contributions and activations of
every layer (:func:`~retina_codec.stats.layer_vectors`), the §8 statistics, contribution and activation
modes of one layer with each class's top mode ablated / preserved (:mod:`.selectivity`), and the
Jacobian-chain masks of those modes on their top-loading images (:mod:`.masks`).
:func:`write_classify_stats` stores it atomically; :func:`read_classify_summary` reads the per-layer table.

Layout of ``stats.h5``::

    /labels, /predictions, /f_x, /f_baseline           (n,)    per image
    /layers/<layer>/contributions, /activations        (n, 2C) E/I split [negative, positive], summed over space
    /layers/<layer>/hoyer_{contrib,act}, ei_{contrib,act}   (n,)  per image; attrs: dimensionalities, alias
    /summary/<stat>                                     (L,)    per layer, in /summary/layer order
    /modes/<source>/atoms, loadings, top_mode, top_mode_r     source = contributions | activations
    /interventions/<source>/<kind>/target, off_target (n_classes, P), fractions (P,), selectivity, ...
    /masks/<source>/masks (m, k, H, W), image_index (m, k), modes (m,), classes (m,)

Root attributes: format, package_version, created, model, model_class, model_hash, method, steps, target,
reduction, layers, aliases, images, n_images, class_names, accuracy, mode_layer, mode_images (the images
the modes were fitted on; empty: the same images), seconds, description.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..hashing import model_hash
from ..io_utils import atomic_path, h5_create
from ..modes import ModeDecomposer
from ..stats import LayerStats, LayerVectors, layer_vectors, net_channels, statistics_table
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
           "FORMAT"]

FORMAT = "retina-codec-classify-stats"
SOURCES = ("contributions", "activations")


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
        raise ValueError(f"mode_layer: expected one of the analysed layers {layers}; found {layer!r}")
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


def _json(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def _ds(g: h5py.Group, name: str, data: Any, description: str) -> h5py.Dataset:
    d = g.create_dataset(name, data=np.asarray(data))
    d.attrs["description"] = description
    return d


def write_classify_stats(path: str | os.PathLike, res: ClassifyStats, model: nn.Module, images: ImageSet,
                         model_spec: str = "", mode_images_source: str = "") -> Path:
    """Write ``res`` to ``path`` (HDF5, atomically; layout in the module docstring)."""
    vec = res.vectors
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp, h5_create(tmp) as f:
        s = vec.settings
        f.attrs.update({
            "format": FORMAT, "format_version": 1, "package_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": model_spec or type(model).__name__,
            "model_class": type(model).__name__, "model_hash": model_hash(model),
            "method": s.get("method", ""), "rule": s.get("rule", ""), "steps": int(s.get("steps", 0)),
            "target": _json(s.get("target", {})), "reduction": _json(s.get("reduction", [])),
            "affine_stem": _json(s.get("affine_stem", [])), "layers": _json(vec.layers),
            "aliases": _json(res.aliases), "images": images.source, "n_images": len(images),
            "class_names": _json(images.class_names), "accuracy": res.accuracy,
            "mode_layer": res.mode_layer or "", "seconds": _json(res.seconds),
            "mode_images": mode_images_source,
            "description": "CODEC classifier comparison: per-layer contribution vs activation statistics "
                           "(Hoyer sparsity, class-mean dimensionality, E/I correlation), contribution vs "
                           "activation modes with ablation/preservation sweeps and Jacobian-chain masks",
        })
        _ds(f, "labels", vec.labels.astype(np.int64), "true class of each image")
        _ds(f, "predictions", vec.predictions.astype(np.int64), "top-1 predicted class of each image")
        _ds(f, "f_x", vec.f_x, "target value at the image")
        _ds(f, "f_baseline", vec.f_baseline, "target value at the baseline (zero image)")
        lg = f.create_group("layers")
        for st, name, alias in zip(res.stats, vec.layers, res.aliases):
            g = lg.create_group(name)
            g.attrs.update({"alias": alias, "n_channels": st.n_channels, "dim_contrib": _json(st.dim_contrib),
                            "dim_act": _json(st.dim_act), "completeness": _json(vec.completeness.get(name, {}))})
            for k, v, desc in (
                    ("contributions", vec.contributions[name], "contributions (n, 2C): E/I split [negative, positive], "
                                                               "summed over space/tokens"),
                    ("activations", vec.activations[name], "activations (n, 2C), reduced like the contributions"),
                    ("hoyer_contrib", st.hoyer_contrib, "Hoyer sparsity of the net channel contributions"),
                    ("hoyer_act", st.hoyer_act, "Hoyer sparsity of the net channel activations"),
                    ("ei_contrib", st.ei_contrib, "E/I correlation −r(C+, C−) of the contributions"),
                    ("ei_act", st.ei_act, "E/I correlation −r(A+, A−) of the activations (NaN: one-signed)")):
                _ds(g, k, np.asarray(v, dtype=np.float32), desc)
        sg = f.create_group("summary")
        _ds(sg, "layer", np.array(vec.layers, dtype=h5py.string_dtype()), "module name of each layer")
        _ds(sg, "alias", np.array(res.aliases, dtype=h5py.string_dtype()), "friendly name of each layer")
        table = [st.summary() for st in res.stats]
        for key in table[0] if table else []:
            _ds(sg, key, np.array([t[key] for t in table], dtype=np.float64), f"{key} per layer (means over images)")
        if res.mode_layer:
            mg = f.create_group("modes")
            mg.attrs["layer"] = res.mode_layer
            for src, dec in res.decomposers.items():
                g = mg.create_group(src)
                g.attrs.update({"metrics": _json(dec.metrics()), "settings": _json(dec.settings())})
                _ds(g, "atoms", dec.atoms_, f"alive atoms ({'2C, E/I split' if src == 'contributions' else 'C'})")
                _ds(g, "loadings", res.loadings[src], "mode loadings per image")
                classes, best, r = res.top_modes[src]
                _ds(g, "classes", classes, "class index")
                _ds(g, "top_mode", best, "mode most correlated with each class indicator")
                _ds(g, "top_mode_r", r, "Pearson r of that mode's loadings with the class indicator")
            ig = f.create_group("interventions")
            for src in SOURCES:
                for kind in sorted({sw.kind for sw in res.sweeps}):
                    group = [sw for sw in res.sweeps if sw.source == src and sw.kind == kind]
                    if not group:
                        continue
                    g = ig.create_group(f"{src}/{kind}")
                    g.attrs["description"] = (f"{kind} the top-p channels of each class's top {src} mode; accuracy "
                                              "on the class (target) and on the others (off_target) / intact")
                    _ds(g, "fractions", group[0].sweep.fractions, "fraction p of channels")
                    _ds(g, "classes", [sw.cls for sw in group], "class")
                    _ds(g, "modes", [sw.mode for sw in group], "mode index")
                    _ds(g, "target", np.stack([sw.sweep.target for sw in group]), "class accuracy / intact")
                    _ds(g, "off_target", np.stack([sw.sweep.off_target for sw in group]),
                        "accuracy on the other classes / intact")
                    for k in ("auc_target", "auc_off", "selectivity"):
                        _ds(g, k, [getattr(sw.sweep, k) for sw in group], k.replace("_", " "))
            if res.masks:
                kg = f.create_group("masks")
                for src, mm in res.masks.items():
                    g = kg.create_group(src)
                    g.attrs["channels"] = _json(mm.channels)
                    _ds(g, "masks", mm.masks, "Jacobian-chain masks (modes, images, H, W), median-filtered")
                    _ds(g, "image_index", mm.image_index, "row of each image in /labels")
                    _ds(g, "modes", mm.modes, "mode index of each row")
                    _ds(g, "classes", mm.classes, "class whose top mode each row is")
    return path


def read_classify_summary(path: str | os.PathLike) -> dict[str, Any]:
    """``{"layer": [...], "<stat>": array (L,), "attrs": {...}}`` from a ``stats.h5``."""
    from ..errors import FileFormatError

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise FileFormatError(f"{path}: attribute 'format': expected {FORMAT!r}, found {f.attrs.get('format')!r}")
            out: dict[str, Any] = {k: f["summary"][k][()] for k in f["summary"]}
            out["layer"] = [v.decode() if isinstance(v, bytes) else v for v in out["layer"]]
            out["alias"] = [v.decode() if isinstance(v, bytes) else v for v in out["alias"]]
            out["attrs"] = dict(f.attrs)
            return out
    except OSError as err:
        raise FileFormatError(f"{path}: not a readable HDF5 file ({err})") from err
