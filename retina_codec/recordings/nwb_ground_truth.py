"""Simulated-retina ground truth in an NWB file: the processing module ``ground_truth``.

Layout (one set per stimulus series, each name suffixed with ``_<stimulus_name>``):

- TimeSeries ``true_rates`` (Hz), ``bipolar_traces`` and ``amacrine_traces`` (a.u.), on the stimulus
  frame grid (same ``starting_time``/``rate`` or ``timestamps`` as the stimulus series).
- DynamicTables, one row per element, array columns for per-element vectors:
  ``cells`` (cell_types, cell_centers, pooling_weights), ``subunits`` (subunit_positions,
  subunit_polarity, amacrine_weights), ``amacrines`` (amacrine_positions), ``ln_cells`` (ln_cells,
  ln_filters ``(L, h, H, W)``). Tables with no rows are not written (NWB best practice).
- ``layout`` (field, shape, dtype of every field, so empty fields come back with the right shape) and
  ``params`` (the simulator settings as JSON key/value rows, see :func:`dict_to_table`).

Also here: :func:`dict_to_table` / :func:`table_to_dict`, which store a JSON-like dict as key/value rows
(nested dicts flattened), used for provenance too.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, VectorData
from pynwb import NWBFile, TimeSeries

from ..errors import ShapeMismatchError
from ..stores.codec import to_json
from .ground_truth import GroundTruth

__all__ = [
    "GT_MODULE", "write_ground_truth", "read_ground_truth", "has_ground_truth",
    "dict_to_table", "table_to_dict",
]

GT_MODULE = "ground_truth"

# table name -> fields sharing its rows (the leading dimension)
_TABLES: dict[str, tuple[str, ...]] = {
    "cells": ("cell_types", "cell_centers", "pooling_weights"),
    "subunits": ("subunit_positions", "subunit_polarity", "amacrine_weights"),
    "amacrines": ("amacrine_positions",),
    "ln_cells": ("ln_cells", "ln_filters"),
}
_UNITS = {"true_rates": "Hz"}
_DESCRIPTIONS = {
    "true_rates": "ganglion-cell firing rates before Poisson sampling, (T, N) in Hz",
    "bipolar_traces": "bipolar terminal outputs after amacrine inhibition and rectification, (T, S), a.u.",
    "amacrine_traces": "amacrine cell outputs, (T, A), a.u.",
    "cell_types": "ganglion-cell type (ON, OFF, ON-OFF, LN, ...)",
    "cell_centers": "receptive-field centre (y, x) in stimulus pixels",
    "pooling_weights": "weight of each bipolar subunit in this ganglion cell, (S,)",
    "subunit_positions": "bipolar subunit centre (y, x) in stimulus pixels",
    "subunit_polarity": "+1 ON bipolar subunit, -1 OFF",
    "amacrine_weights": "inhibition of this bipolar terminal by each amacrine cell, (A,)",
    "amacrine_positions": "amacrine cell centre (y, x) in stimulus pixels",
    "ln_cells": "index of the LN cell among the ganglion cells",
    "ln_filters": "space-time filter (h, H, W) in window order, oldest frame first (offset=1)",
}


# ---- JSON dicts as key/value tables ----------------------------------------------------------------
def _flatten(value: Any, path: list) -> list[tuple[list, Any]]:
    if isinstance(value, dict) and value:
        out = []
        for k, v in value.items():
            out += _flatten(v, path + [str(k)])
        return out
    if isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value):
        out = []
        for i, v in enumerate(value):
            out += _flatten(v, path + [i])
        return out
    return [(path, value)]


def dict_to_table(name: str, data: dict[str, Any], description: str) -> DynamicTable:
    """A DynamicTable with one row per leaf of ``data``: ``key`` (JSON list of the key path) and
    ``value`` (JSON text). Nested dicts are flattened so that no cell holds a dict (NWB best practice)."""
    rows = _flatten(json.loads(to_json(data, sort_keys=False)), [])
    keys = [json.dumps(p) for p, _ in rows]
    values = [json.dumps(v) for _, v in rows]
    return DynamicTable(
        name=name, description=description,
        columns=[VectorData(name="key", description="key path as a JSON list (str keys, int list indices)",
                            data=keys),
                 VectorData(name="value", description="value as JSON text", data=values)],
    )


def table_to_dict(table: DynamicTable) -> dict[str, Any]:
    """Inverse of :func:`dict_to_table`."""
    out: dict[str, Any] = {}
    for k, v in zip(table["key"].data[:], table["value"].data[:]):
        path = json.loads(_text(k))
        value = json.loads(_text(v))
        if not path:
            return value if isinstance(value, dict) else {"value": value}
        node: Any = out
        for a, b in zip(path[:-1], path[1:]):
            nxt = [] if isinstance(b, int) else {}
            if isinstance(a, int):
                while len(node) <= a:
                    node.append(None)
                if node[a] is None:
                    node[a] = nxt
                node = node[a]
            else:
                node = node.setdefault(a, nxt)
        last = path[-1]
        if isinstance(last, int):
            while len(node) <= last:
                node.append(None)
            node[last] = value
        else:
            node[last] = value
    return out


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# ---- ground truth ----------------------------------------------------------------------------------
def _field_tables(gt: GroundTruth) -> dict[str, tuple[str, ...]]:
    """Group the non-time array fields into tables whose fields share their leading dimension."""
    names = [f.name for f in dataclasses.fields(gt) if f.name not in GroundTruth.TIME_FIELDS + ("params",)]
    tables: dict[str, tuple[str, ...]] = {}
    placed: set[str] = set()
    for table, fields in _TABLES.items():
        present = [f for f in fields if f in names]
        if not present:
            continue
        n = len(np.asarray(getattr(gt, present[0])))
        same = tuple(f for f in present if len(np.asarray(getattr(gt, f))) == n)
        tables[table] = same
        placed.update(same)
    for f in names:
        if f not in placed:
            tables[f] = (f,)
    return tables


def _column_data(values: np.ndarray) -> Any:
    if values.dtype.kind in "UOS":
        return [str(v) for v in values]
    return values


def write_ground_truth(
    nwbfile: NWBFile, gt: GroundTruth, stimulus_name: str, timing: dict[str, Any], n_frames: int
) -> None:
    """Add ``gt`` for one stimulus series to the ``ground_truth`` processing module of ``nwbfile``.

    ``timing`` holds the stimulus series' ``starting_time`` + ``rate`` or ``timestamps``.
    """
    module = nwbfile.processing.get(GT_MODULE) or nwbfile.create_processing_module(
        GT_MODULE, "simulated-retina ground truth (true rates, cell types, pooling weights, LN filters, "
        "subunit layout, interneuron traces) per stimulus series; see retina_codec.recordings.GroundTruth")
    sfx = f"_{stimulus_name}"
    layout: dict[str, tuple[list[int], str]] = {}
    for name in GroundTruth.TIME_FIELDS:
        data = np.asarray(getattr(gt, name), dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[0] != n_frames:
            raise ShapeMismatchError(
                f"ground_truth.{name}: expected {n_frames} rows (one per frame of {stimulus_name!r}), "
                f"found shape {data.shape}"
            )
        layout[name] = (list(data.shape), "float32")
        if data.size == 0:
            continue
        chunks = (min(n_frames, max(1, 2**18 // max(data.shape[1], 1))), data.shape[1])
        module.add(TimeSeries(
            name=name + sfx, data=H5DataIO(data, compression="gzip", compression_opts=4, chunks=chunks),
            unit=_UNITS.get(name, "a.u."), description=_DESCRIPTIONS.get(name, name), **timing,
        ))
    for table, fields in _field_tables(gt).items():
        cols = []
        for f in fields:
            values = np.asarray(getattr(gt, f))
            layout[f] = (list(values.shape), values.dtype.str if values.dtype.kind not in "UOS" else "str")
            if values.size:
                cols.append(VectorData(name=f, description=_DESCRIPTIONS.get(f, f), data=_column_data(values)))
        if cols:
            module.add(DynamicTable(name=table + sfx, description=f"ground truth: {table} of the simulated "
                                    f"retina (stimulus {stimulus_name})", columns=cols))
    module.add(DynamicTable(
        name="layout" + sfx, description="shape and dtype of every ground-truth field",
        columns=[
            VectorData(name="field", description="GroundTruth field name", data=list(layout)),
            VectorData(name="shape", description="array shape as a JSON list",
                       data=[json.dumps(s) for s, _ in layout.values()]),
            VectorData(name="dtype", description="numpy dtype string ('str' for text)",
                       data=[d for _, d in layout.values()]),
        ],
    ))
    if gt.params:
        module.add(dict_to_table("params" + sfx, gt.params,
                                 "simulator settings as JSON key/value rows (retina_codec.sim)"))


def has_ground_truth(nwbfile: NWBFile, stimulus_name: str | None = None) -> bool:
    """Whether the file holds ground truth (for ``stimulus_name``, or for any stimulus when None)."""
    module = nwbfile.processing.get(GT_MODULE)
    if module is None:
        return False
    if stimulus_name is None:
        return any(n.startswith("layout_") for n in module.data_interfaces)
    return f"layout_{stimulus_name}" in module.data_interfaces


def read_ground_truth(nwbfile: NWBFile, stimulus_name: str, n_frames: int) -> GroundTruth | None:
    """The :class:`GroundTruth` stored for ``stimulus_name`` (time series fully loaded), or None."""
    if not has_ground_truth(nwbfile, stimulus_name):
        return None
    module = nwbfile.processing[GT_MODULE]
    sfx = f"_{stimulus_name}"
    objs = module.data_interfaces
    lay = objs["layout" + sfx]
    layout = {
        _text(f): (tuple(json.loads(_text(s))), _text(d))
        for f, s, d in zip(lay["field"].data[:], lay["shape"].data[:], lay["dtype"].data[:])
    }
    columns: dict[str, Any] = {}
    for obj in objs.values():
        if isinstance(obj, DynamicTable) and obj.name.endswith(sfx):
            for col in obj.columns:
                columns[col.name] = col.data
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(GroundTruth):
        name = f.name
        if name == "params":
            kw[name] = table_to_dict(objs["params" + sfx]) if "params" + sfx in objs else {}
            continue
        shape, dtype = layout.get(name, ((0,), "float32"))
        if name in GroundTruth.TIME_FIELDS:
            series = objs.get(name + sfx)
            arr = np.asarray(series.data[:], np.float32) if series is not None else np.zeros(shape, np.float32)
            if arr.shape[0] != n_frames:
                raise ShapeMismatchError(
                    f"processing/{GT_MODULE}/{name + sfx}: expected {n_frames} rows (one per frame), "
                    f"found {arr.shape[0]}"
                )
        elif name in columns:
            raw = columns[name][:]
            arr = np.array([_text(v) for v in raw]) if dtype == "str" else np.asarray(raw, dtype=np.dtype(dtype))
        else:
            arr = np.zeros(shape, dtype=str if dtype == "str" else np.dtype(dtype))
        kw[name] = arr.reshape(shape) if name not in GroundTruth.TIME_FIELDS else arr.reshape((n_frames,) + shape[1:])
    return GroundTruth(**kw)
