"""The classifier statistics store (``stats.h5`` of ``classify-stats``): schema, writer and readers.

Layout::

    /labels, /predictions, /f_x, /f_baseline           (n,)    per image
    /layers/<layer>/contributions, /activations        (n, 2C) E/I split [negative, positive], summed over space
    /layers/<layer>/hoyer_{contrib,act}, ei_{contrib,act}   (n,)  per image; attrs: dimensionalities, alias
    /summary/<stat>                                     (L,)    per layer, in /summary/layer order
    /modes/<source>/atoms, loadings, top_mode, top_mode_r     source = contributions | activations
    /interventions/<source>/<kind>/target, off_target (n_classes, P), fractions (P,), selectivity, ...
    /masks/<source>/masks (m, k, H, W), image_index (m, k), modes (m,), classes (m,)

Root attributes: format (:data:`FORMAT`), format_version, package_version, created, model, model_class,
model_hash, method, rule, steps, target, reduction, affine_stem, layers, aliases, images, n_images,
class_names, accuracy, mode_layer, seconds, mode_images (the images the modes were fitted on; empty: the same
images), description. Those in :data:`JSON_ATTRS` (and the group attributes dim_contrib, dim_act,
completeness, metrics, settings, channels) are JSON strings.

This module holds no computing: :func:`retina_codec.classifiers.write_classify_stats` hands it plain
records (:class:`LayerRecord`, :class:`ModesRecord`, :class:`SweepRecord`, :class:`MasksRecord`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import FileFormatError
from ..io_utils import atomic_path, h5_create
from .codec import decode_attr, decode_attrs, read_attr, to_json

__all__ = ["FORMAT", "FORMAT_VERSION", "SOURCES", "JSON_ATTRS", "DESCRIPTION", "LAYER_DATASETS", "LayerRecord", "ModesRecord",
           "SweepRecord", "MasksRecord", "write_classify_stats_file", "read_classify_summary",
           "read_layer_records", "is_stats_file", "read_interventions"]

FORMAT = "retina-codec-classify-stats"
FORMAT_VERSION = 1
SOURCES = ("contributions", "activations")
JSON_ATTRS = ("target", "reduction", "affine_stem", "layers", "aliases", "class_names", "seconds")
DESCRIPTION = ("CODEC classifier comparison: per-layer contribution vs activation statistics "
               "(Hoyer sparsity, class-mean dimensionality, E/I correlation), contribution vs "
               "activation modes with ablation/preservation sweeps and Jacobian-chain masks")
LAYER_DATASETS = (
    ("contributions", "contributions (n, 2C): E/I split [negative, positive], summed over space/tokens"),
    ("activations", "activations (n, 2C), reduced like the contributions"),
    ("hoyer_contrib", "Hoyer sparsity of the net channel contributions"),
    ("hoyer_act", "Hoyer sparsity of the net channel activations"),
    ("ei_contrib", "E/I correlation −r(C+, C−) of the contributions"),
    ("ei_act", "E/I correlation −r(A+, A−) of the activations (NaN: one-signed)"),
)


def _json(obj: Any) -> str:
    return to_json(obj, sort_keys=False)


@dataclass
class LayerRecord:
    """One ``/layers/<name>`` group: per-layer statistics and the per-image ``arrays`` named in
    :data:`LAYER_DATASETS` (``contributions``/``activations`` ``(n, 2C)``, ``hoyer_*``/``ei_*`` ``(n,)``)."""

    name: str
    alias: str
    n_channels: int
    dim_contrib: dict[str, float]
    dim_act: dict[str, float]
    completeness: dict[str, float]
    arrays: Mapping[str, np.ndarray]


@dataclass
class ModesRecord:
    """One ``/modes/<source>`` group: alive atoms, per-image loadings, each class's top mode and its r."""

    source: str
    metrics: dict[str, Any]
    settings: dict[str, Any]
    atoms: np.ndarray
    loadings: np.ndarray
    classes: np.ndarray
    top_mode: np.ndarray
    top_mode_r: np.ndarray


@dataclass
class SweepRecord:
    """One ``/interventions/<source>/<kind>`` group: accuracy ratios ``(n_classes, P)`` over fractions ``(P,)``."""

    source: str
    kind: str
    fractions: np.ndarray
    classes: list[int]
    modes: list[int]
    target: np.ndarray
    off_target: np.ndarray
    auc_target: list[float]
    auc_off: list[float]
    selectivity: list[float]


@dataclass
class MasksRecord:
    """One ``/masks/<source>`` group: masks ``(m, k, H, W)`` of m modes on their k top-loading images."""

    source: str
    channels: list[list[int]]
    masks: np.ndarray
    image_index: np.ndarray
    modes: np.ndarray
    classes: np.ndarray


def _ds(g: h5py.Group, name: str, data: Any, description: str) -> h5py.Dataset:
    d = g.create_dataset(name, data=np.asarray(data))
    d.attrs["description"] = description
    return d


def write_classify_stats_file(path: str | os.PathLike, *, attrs: Mapping[str, Any], labels: np.ndarray,
                              predictions: np.ndarray, f_x: np.ndarray, f_baseline: np.ndarray,
                              layers: Sequence[LayerRecord], summary: Sequence[Mapping[str, float]],
                              mode_layer: str | None = None, modes: Sequence[ModesRecord] = (),
                              sweeps: Sequence[SweepRecord] = (), masks: Sequence[MasksRecord] = ()) -> Path:
    """Write a ``stats.h5`` atomically (layout in the module docstring). ``attrs`` are the root attributes
    beyond format, format_version, package_version, created and description; those named in
    :data:`JSON_ATTRS` are stored as JSON. ``summary`` holds one ``{stat: value}`` per layer."""
    path = Path(path)
    root = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    root.update({k: _json(v) if k in JSON_ATTRS else v for k, v in attrs.items()})
    root["description"] = DESCRIPTION
    with atomic_path(path, suffix=".h5") as tmp, h5_create(tmp) as f:
        f.attrs.update(root)
        _ds(f, "labels", np.asarray(labels).astype(np.int64), "true class of each image")
        _ds(f, "predictions", np.asarray(predictions).astype(np.int64), "top-1 predicted class of each image")
        _ds(f, "f_x", f_x, "target value at the image")
        _ds(f, "f_baseline", f_baseline, "target value at the baseline (zero image)")
        lg = f.create_group("layers")
        for rec in layers:
            g = lg.create_group(rec.name)
            g.attrs.update({"alias": rec.alias, "n_channels": rec.n_channels, "dim_contrib": _json(rec.dim_contrib),
                            "dim_act": _json(rec.dim_act), "completeness": _json(rec.completeness)})
            for k, desc in LAYER_DATASETS:
                _ds(g, k, np.asarray(rec.arrays[k], dtype=np.float32), desc)
        sg = f.create_group("summary")
        _ds(sg, "layer", np.array([r.name for r in layers], dtype=h5py.string_dtype()), "module name of each layer")
        _ds(sg, "alias", np.array([r.alias for r in layers], dtype=h5py.string_dtype()),
            "friendly name of each layer")
        for key in summary[0] if summary else []:
            _ds(sg, key, np.array([t[key] for t in summary], dtype=np.float64), f"{key} per layer (means over images)")
        if mode_layer:
            mg = f.create_group("modes")
            mg.attrs["layer"] = mode_layer
            for m in modes:
                g = mg.create_group(m.source)
                g.attrs.update({"metrics": _json(m.metrics), "settings": _json(m.settings)})
                _ds(g, "atoms", m.atoms, f"alive atoms ({'2C, E/I split' if m.source == 'contributions' else 'C'})")
                _ds(g, "loadings", m.loadings, "mode loadings per image")
                _ds(g, "classes", m.classes, "class index")
                _ds(g, "top_mode", m.top_mode, "mode most correlated with each class indicator")
                _ds(g, "top_mode_r", m.top_mode_r, "Pearson r of that mode's loadings with the class indicator")
            ig = f.create_group("interventions")
            for sw in sweeps:
                g = ig.create_group(f"{sw.source}/{sw.kind}")
                g.attrs["description"] = (f"{sw.kind} the top-p channels of each class's top {sw.source} mode; "
                                          "accuracy on the class (target) and on the others (off_target) / intact")
                _ds(g, "fractions", sw.fractions, "fraction p of channels")
                _ds(g, "classes", sw.classes, "class")
                _ds(g, "modes", sw.modes, "mode index")
                _ds(g, "target", sw.target, "class accuracy / intact")
                _ds(g, "off_target", sw.off_target, "accuracy on the other classes / intact")
                for k in ("auc_target", "auc_off", "selectivity"):
                    _ds(g, k, getattr(sw, k), k.replace("_", " "))
            if masks:
                kg = f.create_group("masks")
                for mm in masks:
                    g = kg.create_group(mm.source)
                    g.attrs["channels"] = _json(mm.channels)
                    _ds(g, "masks", mm.masks, "Jacobian-chain masks (modes, images, H, W), median-filtered")
                    _ds(g, "image_index", mm.image_index, "row of each image in /labels")
                    _ds(g, "modes", mm.modes, "mode index of each row")
                    _ds(g, "classes", mm.classes, "class whose top mode each row is")
    return path


def read_classify_summary(path: str | os.PathLike) -> dict[str, Any]:
    """``{"layer": [...], "alias": [...], "<stat>": array (L,), "attrs": {...}}`` from a ``stats.h5``
    (attributes as stored). A file of another format, or not readable as HDF5, is a
    :class:`~retina_codec.errors.FileFormatError`."""
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


def read_layer_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(one dict per layer, decoded root attributes)`` of a ``stats.h5``; each dict has ``name`` and the
    decoded group attributes (alias, n_channels, dim_contrib, dim_act, completeness) and the per-image arrays
    ``hoyer_{contrib,act}``, ``ei_{contrib,act}`` ``(n,)``, in the order of the root attribute ``layers``."""
    out = []
    with h5py.File(path, "r") as f:
        attrs = decode_attrs(f.attrs)
        for name in attrs.get("layers") or list(f["layers"]):
            g = f["layers"][name]
            rec: dict[str, Any] = {"name": name, **decode_attrs(g.attrs)}
            for k in ("hoyer_contrib", "hoyer_act", "ei_contrib", "ei_act"):
                rec[k] = g[k][...]
            out.append(rec)
    return out, attrs



def is_stats_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a readable HDF5 file with a ``format`` attribute (a written ``stats.h5``; a
    missing or unreadable file: False)."""
    return bool(read_attr(path, "format"))


def read_interventions(path: str | os.PathLike) -> tuple[str, list[dict[str, Any]]] | None:
    """``(mode layer, one dict per intervention sweep)`` of a ``stats.h5``, or ``None`` when it has no
    ``/interventions``; each dict has ``source``, ``kind`` and the arrays ``selectivity``, ``auc_target``,
    ``auc_off``, in file order."""
    with h5py.File(path, "r") as f:
        if "interventions" not in f:
            return None
        sweeps = []
        for src in f["interventions"]:
            for kind in f["interventions"][src]:
                g = f["interventions"][src][kind]
                sweeps.append({"source": src, "kind": kind, **{k: g[k][...] for k in
                                                               ("selectivity", "auc_target", "auc_off")}})
        layer = decode_attr(f["modes"].attrs.get("layer", "")) if "modes" in f else ""
        return layer, sweeps
