"""The ``fit.h5`` store: a model's predicted rates and per-cell Pearson r on held-out bins, per stimulus.

Layout::

    /                       attrs: content = "retina-codec demo: model fit", model_hash, model_path,
                            model_source, model (JSON: the model's description), training (JSON),
                            created, uid, inputs (JSON: signatures of the input stores), output_unit,
                            hidden_layers (JSON list)
    /cell_ids (N,) str      /cell_types (N,) str (when the recording has ground truth)
    /<stimulus>/            attrs: split, frame_rate, mean_r_response, [mean_r_true_rate]
        bins (T,) int       bins of the split (window end frames)
        times (T,) s        their frame times
        predicted (T, N)    the model's predictions
        responses (T, N)    the recorded responses at those bins
        r_response (N,)     Pearson r of predicted with responses, per cell
        true_rates (T, N), r_true_rate (N,)   the simulation's true rates and r with them (ground truth only)
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..io_utils import atomic_path, h5_create
from .codec import decode_attrs, open_h5, strings, to_json

__all__ = ["CONTENT", "FitStimulus", "FitStore", "write_fit", "read_fit"]

#: the ``content`` attribute of a fit store
CONTENT = "retina-codec demo: model fit"


@dataclass
class FitStimulus:
    """One stimulus' group of ``fit.h5`` (T bins, N cells); r's are per cell (NaN for a constant cell)."""

    name: str
    bins: np.ndarray
    times: np.ndarray
    predicted: np.ndarray
    responses: np.ndarray
    r_response: np.ndarray
    frame_rate: float
    split: str = "test"
    true_rates: np.ndarray | None = None
    r_true_rate: np.ndarray | None = None


@dataclass
class FitStore:
    """Contents of ``fit.h5``: per stimulus ``{bins, times, predicted, responses, r_response, [true_rates,
    r_true_rate], attrs}``, plus cell ids / types and the file's attributes."""

    stimuli: dict[str, dict[str, Any]]
    cell_ids: list[str]
    cell_types: list[str]
    attrs: dict[str, Any]

    @property
    def output_unit(self) -> str:
        return str(self.attrs.get("output_unit", ""))


def write_fit(path: str | os.PathLike, stimuli: Iterable[FitStimulus], *, cell_ids: Sequence[str],
              cell_types: Sequence[str] | None = None, model_hash: str, model_path: str, model_source: str,
              model: Mapping[str, Any], training: Mapping[str, Any], inputs: Mapping[str, str],
              output_unit: str, hidden_layers: Sequence[str]) -> Path:
    """Write ``fit.h5`` atomically; returns its path.

    ``stimuli`` may be a generator: each stimulus is computed while the (temporary) file is open, so an
    interrupted write leaves only a hidden temporary file. ``model`` is the model's description and
    ``training`` its training metadata (both stored as JSON), ``inputs`` the signatures of the input stores.
    """
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp, h5_create(tmp) as f:
        f.attrs["model_hash"] = model_hash
        f.attrs["model_path"] = str(model_path)
        f.attrs["model_source"] = model_source
        f.attrs["model"] = to_json(model, sort_keys=False)
        f.attrs["training"] = to_json(training, sort_keys=False)
        f.attrs["content"] = CONTENT
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        f.attrs["uid"] = uuid.uuid4().hex
        f.attrs["inputs"] = to_json(inputs, sort_keys=False)
        f.attrs["output_unit"] = str(output_unit)
        f.attrs["hidden_layers"] = to_json(list(hidden_layers), sort_keys=False)
        for st in stimuli:
            g = f.create_group(st.name)
            g.attrs["split"] = st.split
            g.attrs["frame_rate"] = float(st.frame_rate)
            g.create_dataset("bins", data=st.bins)
            g.create_dataset("times", data=st.times)
            g.create_dataset("predicted", data=st.predicted, compression="gzip")
            g.create_dataset("responses", data=st.responses, compression="gzip")
            g.create_dataset("r_response", data=st.r_response)
            g.attrs["mean_r_response"] = float(np.nanmean(st.r_response))
            if st.true_rates is not None:
                g.create_dataset("true_rates", data=st.true_rates, compression="gzip")
                g.create_dataset("r_true_rate", data=st.r_true_rate)
                g.attrs["mean_r_true_rate"] = float(np.nanmean(st.r_true_rate))
        f.create_dataset("cell_ids", data=np.array(list(cell_ids), dtype=h5py.string_dtype()))
        if cell_types is not None:
            f.create_dataset("cell_types", data=np.array([str(t) for t in cell_types], dtype=h5py.string_dtype()))
    return path


def read_fit(path: str | os.PathLike) -> FitStore:
    """Read a ``fit.h5`` store (read errors are :class:`~retina_codec.errors.StoreReadError` naming it)."""
    with open_h5(path) as f:
        stimuli = {}
        for name, g in f.items():
            if not isinstance(g, h5py.Group):
                continue
            stimuli[name] = {k: g[k][...] for k in g} | {"attrs": decode_attrs(g.attrs)}
        ids = strings(f["cell_ids"])
        types = strings(f["cell_types"]) if "cell_types" in f else [""] * len(ids)
        return FitStore(stimuli, ids, types, decode_attrs(f.attrs))
