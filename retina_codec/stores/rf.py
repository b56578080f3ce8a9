"""The receptive-field store (``rf.h5``, ``rf_conditioned_<layer>.h5``): schema, writer and reader
(self-describing, written atomically).

Layout (every group optional)::

    /                 attrs: content="retina-codec receptive fields", package_version, created, plus the
                      caller's (model hash, recording, stimulus, history, offset, ...)
    /sta              SpikeTriggeredAverage fields (sta (N, h, H, W), n_spikes, cell_ids, lags) + attrs
    /model_sta        mean-gradient / reverse-correlation model STAs
    /rank1            spatial (N, H, W), temporal (N, h), singular_values (N,) of a stored RF stack
    /gaussian         one dataset per GaussianFit field, (N,)
    /conditioned      ConditionedRFs fields; combos as a (M, K) bool membership matrix ``combo_members``
    /sources          DynamicRFSources fields

Arrays are float32 (gzip, chunked) except counts; scalars and strings become attributes; every dataset
carries ``units`` / ``description`` attributes where known. Root attributes that are lists or dicts are
JSON strings (:func:`retina_codec.stores.codec.to_json`); :func:`read_rf` returns the attributes as stored
(decode them with :func:`retina_codec.stores.codec.decode_attrs`).

This module holds no computing: the results are dataclasses or dicts of arrays handed over by ``rf``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..io_utils import atomic_path, h5_create
from .codec import strings, to_json

__all__ = ["CONTENT", "DESCRIPTIONS", "write_rf", "read_rf", "read_rf_header"]

CONTENT = "retina-codec receptive fields"  # the root attribute ``content`` of every RF store
DESCRIPTIONS = {
    "sta": "spike-triggered average, (cells, history, H, W), window oldest frame first",
    "mode_rf": "loading-weighted mean IRF over bins where the mode is active, (modes, cells, h, H, W)",
    "combo_rf": "weighted mean IRF over bins whose exact set of active modes is the combination",
    "mean_rf": "mean IRF over every bin, (cells, h, H, W)",
    "combo_members": "(combinations, modes) bool: which modes make up each exact combination",
    "r2_irf": "fraction of IRF variance across bins explained by the mode loadings, per cell",
}


def _put(group: h5py.Group, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        group.attrs[name] = value
        return
    if isinstance(value, (list, tuple)) and (not value or isinstance(value[0], str)):
        group.create_dataset(name, data=np.array([str(v) for v in value], dtype=h5py.string_dtype()))
        return
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.dtype != np.float32 and name not in ("n_spikes", "mode_weight"):
        arr = arr.astype(np.float32)
    kw: dict[str, Any] = {}
    if arr.size > 4096:
        kw = {"compression": "gzip", "compression_opts": 4, "chunks": True}
    ds = group.create_dataset(name, data=arr, **kw)
    if name in DESCRIPTIONS:
        ds.attrs["description"] = DESCRIPTIONS[name]


def _put_object(group: h5py.Group, obj: Any) -> None:
    if dataclasses.is_dataclass(obj):
        items = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    else:
        items = dict(obj)
    for name, value in items.items():
        if name == "combos":
            k = int(np.asarray(items.get("mode_count", [])).shape[0])
            members = np.zeros((len(value), k), bool)
            for i, combo in enumerate(value):
                members[i, list(combo)] = True
            _put(group, "combo_members", members)
        elif name == "lags" or not (isinstance(value, list) and value and not isinstance(value[0], str)):
            _put(group, name, value)
        else:
            _put(group, name, np.asarray(value))


def write_rf(path: str | os.PathLike, attrs: dict[str, Any] | None = None, **groups: Any) -> None:
    """Write results to ``path`` atomically: ``write_rf("rf.h5", attrs={...}, sta=res, conditioned=c)``.

    Each keyword becomes a group; values are dataclasses (their fields are stored) or dicts of arrays /
    scalars. ``attrs`` go on the root (use them for model hash, recording path, method, steps...); lists
    and dicts are stored as JSON strings.
    """
    with atomic_path(path, suffix=".h5") as tmp, h5_create(tmp) as f:
        f.attrs["content"] = CONTENT
        f.attrs["package_version"] = __version__
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for k, v in (attrs or {}).items():  # lists / dicts as JSON, which the readers (report, figures) decode
            f.attrs[k] = v if isinstance(v, (str, int, float, bool, np.number)) else to_json(v, sort_keys=False)
        for name, obj in groups.items():
            if obj is not None:
                _put_object(f.create_group(name), obj)


def read_rf(path: str | os.PathLike, groups: Sequence[str] | None = None) -> dict[str, Any]:
    """Read a file written by :func:`write_rf` into ``{"attrs": {...}, group: {name: array or attr}}``
    (only the named ``groups`` that the file has, when given); ``combo_members`` is also returned as
    ``combos``, a list of tuples of mode indices."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = dict(f.attrs)
        for name, group in f.items():
            if groups is not None and name not in groups:
                continue
            d: dict[str, Any] = dict(group.attrs)
            for key, ds in group.items():
                val = ds[()]
                if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype) is not None:
                    val = strings(val)
                d[key] = val
            if "combo_members" in d:
                d["combos"] = [tuple(int(i) for i in np.flatnonzero(r)) for r in d["combo_members"]]
            out[name] = d
    return out


def read_rf_header(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a file written by :func:`write_rf`, without its arrays: ``{"attrs": {...}, group:
    {...}}`` (root and group attributes as stored), one entry per group the file has."""
    with h5py.File(path, "r") as f:
        return {"attrs": dict(f.attrs), **{name: dict(group.attrs) for name, group in f.items()}}
