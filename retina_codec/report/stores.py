"""Readers of the demo folder's stores for the report and the figure scripts (nothing is computed here
that is not in a store, except rank-1 parts and orderings of stored arrays)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreReadError

__all__ = ["FitStore", "read_fit", "read_json", "decode_attrs", "mode_order", "DemoFolder", "store_errors",
           "open_h5"]


@contextlib.contextmanager
def store_errors(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a failure to read ``path`` inside the block (truncated HDF5, malformed JSON, a missing
    dataset) as :class:`~retina_codec.errors.StoreReadError` naming the file."""
    try:
        yield
    except (OSError, ValueError, KeyError) as err:
        if isinstance(err, StoreReadError):
            raise
        raise StoreReadError(f"{Path(path).name}: {type(err).__name__}: {err}") from err


@contextlib.contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """``h5py.File(path, "r")`` whose read errors (opening it or inside the block) name the file."""
    with store_errors(path), h5py.File(path, "r") as f:
        yield f


def decode_attrs(attrs: Any) -> dict[str, Any]:
    """HDF5 attributes as plain Python values (JSON strings decoded)."""
    out: dict[str, Any] = {}
    for k, v in dict(attrs).items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v[:1] in "[{":
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _strings(ds: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in ds[...]]


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


def read_fit(path: str | os.PathLike) -> FitStore:
    """Read ``fit.h5`` written by the demo's fit stage."""
    with open_h5(path) as f:
        stimuli = {}
        for name, g in f.items():
            if not isinstance(g, h5py.Group):
                continue
            stimuli[name] = {k: g[k][...] for k in g} | {"attrs": decode_attrs(g.attrs)}
        ids = _strings(f["cell_ids"])
        types = _strings(f["cell_types"]) if "cell_types" in f else [""] * len(ids)
        return FitStore(stimuli, ids, types, decode_attrs(f.attrs))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON store as a dict."""
    with store_errors(path):
        return json.loads(Path(path).read_text())


def mode_order(loadings: np.ndarray, top: int | None = None) -> np.ndarray:
    """Mode indices sorted by how many bins they are active in (most first), at most ``top``; modes that are
    never active are left out."""
    count = (np.asarray(loadings) > 0).sum(0)
    order = np.argsort(-count, kind="stable")
    order = order[count[order] > 0]
    return order[:top] if top else order


@dataclass
class DemoFolder:
    """The stores of one demo folder (any may be missing)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def manifest(self) -> Path:
        return self.root / "demo.json"

    @property
    def fit(self) -> Path:
        return self.root / "fit.h5"

    @property
    def contributions(self) -> Path:
        return self.root / "contributions.h5"

    @property
    def rf(self) -> Path:
        return self.root / "rf.h5"

    @property
    def classifiers(self) -> Path:
        return self.root / "classifiers" / "stats.h5"

    def layers(self) -> list[str]:
        """Layers with a modes store, in the contribution store's order when it exists."""
        found = sorted(p.stem[len("modes_"):] for p in self.root.glob("modes_*.h5"))
        if self.contributions.exists():
            with open_h5(self.contributions) as f:
                attrs = decode_attrs(f.attrs)
            order = attrs.get("layers") or []
            if isinstance(order, list):
                return [x for x in order if x in found] + [x for x in found if x not in order]
        return found

    def modes(self, layer: str) -> Path:
        return self.root / f"modes_{layer}.h5"

    def modes_summary(self, layer: str) -> Path:
        return self.root / f"modes_{layer}_summary.json"

    def conditioned(self, layer: str) -> Path:
        return self.root / f"rf_conditioned_{layer}.h5"

    def conditioned_layers(self) -> list[str]:
        """Layers with a mode-conditioned RF store (``rf_conditioned_<layer>.h5``): those with a modes store
        first, in :meth:`layers` order, then the others (the RF store does not need its modes store)."""
        found = sorted(p.stem[len("rf_conditioned_"):] for p in self.root.glob("rf_conditioned_*.h5"))
        order = self.layers()
        return [x for x in order if x in found] + [x for x in found if x not in order]
