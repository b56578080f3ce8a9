"""The modes store (``modes.h5``): schema, writer and readers of contribution modes.

Layout (every dataset carries a ``description`` attribute)::

    /atoms        (n_modes, d)  float32  alive atoms in contribution units: X ≈ loadings @ atoms + intercept
    /loadings     (n, n_modes)  float32  per-bin mode loadings (codes), chunked along bins
    /bins         (n,)          int64    bin (sample) index of each loadings row, from the contribution store
    /mode_names   (n_modes,)    str      "mode0", "mode1", ...
    /latent_index (n_modes,)    int64    index of each mode among the SAE's K latents
    /intercept, /mean  (d,)     float32  reconstruction offset; per-dimension mean removed before scaling
    /sae/<param>                         the trained SAE's state dict (``retina_codec.modes.load_decomposer``)

Root attributes: ``kind``, ``settings`` (JSON: decomposer hyper-parameters and SAE settings),
``metrics`` (JSON: held-out explained variance, L0, dead fraction, ...), ``scale``, ``n_modes``,
``n_features``, ``layer``, ``target_index`` (-1: none), ``contributions_path`` (absolute path of the
contribution store), ``contributions_attrs`` (JSON: its method, target, reduction, model hash),
``package_version``, ``created``, plus the caller's. Files are written atomically (temporary name, renamed
on success).

This module holds no computing: :func:`retina_codec.modes.write_modes` hands it a fitted decomposer's arrays
and :func:`retina_codec.modes.load_decomposer` rebuilds the SAE from :func:`read_sae_state`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import FileFormatError
from ..io_utils import atomic_path, h5_create
from .codec import decode_attr, decode_attrs, open_store, to_json

__all__ = ["REQUIRED", "DESCRIPTIONS", "ModesFile", "write_modes_arrays", "read_modes", "read_modes_header",
           "read_loadings", "read_sae_state"]

CHUNK_BYTES = 4 << 20
REQUIRED = ("atoms", "loadings", "bins")  # datasets that make a file a modes store
DESCRIPTIONS = {
    "atoms": "alive SAE atoms (modes) in contribution units; X ≈ loadings @ atoms + intercept",
    "loadings": "mode loadings (SAE codes) per bin, (bins, modes)",
    "bins": "bin index of each loadings row (from the contribution store's /bins)",
    "mode_names": "name of each mode (row of atoms, column of loadings)",
    "latent_index": "index of each mode among the SAE's latents (the others never fired)",
    "intercept": "reconstruction offset (d,)",
    "mean": "mean removed before scaling (d,)",
    "sae": "state dict of the trained SAE (float32)",
}


@dataclass
class ModesFile:
    """Contents of a modes store (see the module docstring for the fields)."""

    atoms: np.ndarray
    loadings: np.ndarray
    bins: np.ndarray
    mode_names: list[str]
    latent_index: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    attrs: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        """The stored fit metrics (held-out explained variance, L0, dead fraction, ...)."""
        return self.attrs.get("metrics", {})


def _rows(d: int, n: int, itemsize: int = 4) -> int:
    return int(max(1, min(n, CHUNK_BYTES // max(1, d * itemsize))))


def write_modes_arrays(path: str | os.PathLike, *, kind: str, settings: Mapping[str, Any],
                       metrics: Mapping[str, Any], scale: float, atoms: np.ndarray, loadings: np.ndarray,
                       bins: np.ndarray, latent_index: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
                       sae_state: Mapping[str, np.ndarray], layer: str | None = None,
                       target_index: int | None = None, contributions_path: str | os.PathLike | None = None,
                       contributions_attrs: Mapping[str, Any] | None = None,
                       attrs: Mapping[str, Any] | None = None) -> Path:
    """Write a modes store from plain arrays: ``atoms (n_modes, d)``, ``loadings (n, n_modes)`` float32,
    ``bins (n,)`` int64, ``latent_index (n_modes,)``, ``intercept``/``mean (d,)`` and the SAE's state dict
    as numpy arrays. Written atomically; returns ``Path(path)``."""
    k, d = np.shape(atoms)
    n = int(np.shape(loadings)[0])
    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5_create(tmp) as f:
        f.attrs["kind"] = kind
        f.attrs["settings"] = to_json(dict(settings))
        f.attrs["metrics"] = to_json(dict(metrics))
        f.attrs["scale"] = float(scale)
        f.attrs["n_modes"] = int(k)
        f.attrs["n_features"] = int(d)
        f.attrs["layer"] = layer or ""
        f.attrs["target_index"] = -1 if target_index is None else int(target_index)
        f.attrs["contributions_path"] = str(Path(contributions_path).resolve()) if contributions_path else ""
        f.attrs["contributions_attrs"] = to_json(dict(contributions_attrs or {}))
        f.attrs["package_version"] = str(__version__)
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        for key, val in (attrs or {}).items():
            f.attrs[key] = val if isinstance(val, (int, float, str, np.number)) else to_json(val)
        f.create_dataset("atoms", data=atoms).attrs["description"] = DESCRIPTIONS["atoms"]
        ds = f.create_dataset("loadings", data=loadings, chunks=(_rows(max(k, 1), max(n, 1)), max(k, 1))
                              if n and k else None, compression="gzip" if n * k > 1 << 16 else None)
        ds.attrs["description"] = DESCRIPTIONS["loadings"]
        f.create_dataset("bins", data=bins).attrs["description"] = DESCRIPTIONS["bins"]
        names = [f"mode{i}" for i in range(k)]
        ds = f.create_dataset("mode_names", data=np.array(names, dtype=h5py.string_dtype()))
        ds.attrs["description"] = DESCRIPTIONS["mode_names"]
        ds = f.create_dataset("latent_index", data=np.asarray(latent_index, dtype=np.int64))
        ds.attrs["description"] = DESCRIPTIONS["latent_index"]
        f.create_dataset("intercept", data=intercept).attrs["description"] = DESCRIPTIONS["intercept"]
        f.create_dataset("mean", data=mean).attrs["description"] = DESCRIPTIONS["mean"]
        g = f.create_group("sae")
        g.attrs["description"] = DESCRIPTIONS["sae"]
        for name, arr in sae_state.items():
            g.create_dataset(name, data=np.asarray(arr)).attrs["description"] = \
                f"SAE state-dict entry {name!r} (load_decomposer rebuilds the SAE from these)"
    return path


def _open_modes(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    f = open_store(path, "modes file")
    missing = [k for k in REQUIRED if k not in f]
    if missing:
        f.close()
        raise FileFormatError(f"{path}: not a modes file; missing datasets {missing}")
    return f


def _names(f: h5py.File) -> list[str]:
    return [decode_attr(n) for n in f["mode_names"][...]] if "mode_names" in f else \
        [f"mode{i}" for i in range(f["atoms"].shape[0])]


def read_modes(path: str | os.PathLike) -> ModesFile:
    """Load a modes store into memory (attributes decoded: JSON ones as dicts). A missing, empty or
    non-modes file is a :class:`~retina_codec.errors.FileFormatError`."""
    with _open_modes(path) as f:
        return ModesFile(
            atoms=f["atoms"][...], loadings=f["loadings"][...], bins=f["bins"][...], mode_names=_names(f),
            latent_index=f["latent_index"][...], intercept=f["intercept"][...], mean=f["mean"][...],
            attrs=decode_attrs(f.attrs),
        )


def read_modes_header(path: str | os.PathLike) -> tuple[dict[str, Any], tuple[int, int]]:
    """``(decoded root attributes, loadings shape (n_bins, n_modes))`` of a modes store, without reading
    its arrays (for summaries of many stores)."""
    with _open_modes(path) as f:
        n, k = f["loadings"].shape
        return decode_attrs(f.attrs), (int(n), int(k))


def read_loadings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(loadings (n, n_modes) float32, bins (n,) int64, mode names)`` of a modes store."""
    with _open_modes(path) as f:
        return f["loadings"][...], f["bins"][...], _names(f)


def read_sae_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The trained SAE's state dict stored under ``/sae``, as numpy arrays keyed by parameter name."""
    with _open_modes(path) as f:
        if "sae" not in f:
            raise FileFormatError(f"{path}: modes file has no 'sae' group (the trained SAE's parameters)")
        return {name: np.asarray(f["sae"][name]) for name in f["sae"]}
