"""HDF5 store of contribution modes, and the reader of the contribution store they are fitted on.

Layout of ``modes.h5`` (every dataset carries a ``description`` attribute)::

    /atoms        (n_modes, d)  float32  alive atoms in contribution units: X ≈ loadings @ atoms + intercept
    /loadings     (n, n_modes)  float32  per-bin mode loadings (codes), chunked along bins
    /bins         (n,)          int64    bin (sample) index of each loadings row, from the contribution store
    /mode_names   (n_modes,)    str      "mode0", "mode1", ...
    /latent_index (n_modes,)    int64    index of each mode among the SAE's K latents
    /intercept, /mean  (d,)     float32  reconstruction offset; per-dimension mean removed before scaling
    /sae/<param>                         the trained SAE's state dict (to encode new data: load_decomposer)

Root attributes: ``kind``, ``settings`` (JSON: decomposer hyper-parameters and SAE settings),
``metrics`` (JSON: held-out explained variance, L0, dead fraction, ...), ``scale``, ``layer``,
``target_index``, ``contributions_path`` (absolute path of the contribution store), ``contributions_attrs``
(JSON: its method, target, reduction, model hash), ``package_version``, ``created``. Files are written
atomically (temporary name, renamed on success).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .._version import __version__
from ..errors import FileFormatError, LayerNotFoundError, ModesError
from ..io_utils import atomic_path, h5_create
from ..recordings.hdf5_files import open_hdf5
from .decomposer import ModeDecomposer, make_sae

__all__ = ["LayerContributions", "ModesFile", "read_layer_contributions", "write_modes", "read_modes",
           "read_loadings", "load_decomposer"]

CHUNK_BYTES = 4 << 20


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# ------------------------------------------------------------------------- contribution store reader
@dataclass
class LayerContributions:
    """One layer of a contribution store: ``X (n, d)`` float32 rows, their ``bins (n,)``, store attributes."""

    X: np.ndarray
    bins: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    layer: str = ""
    target_index: int | None = None


def read_layer_contributions(path: str | os.PathLike, layer: str,
                             target_index: int | None = None) -> LayerContributions:
    """Read ``/contributions/<layer>`` of a contribution store (layout of ``contributions/store.py``).

    The dataset is ``(n, d)`` for a scalar target or ``(n, n_targets, d…)`` for per-cell targets, where
    ``target_index`` picks one target. Trailing feature dimensions are flattened to ``d`` (reduced stores
    have one). Rows come with ``/bins``. Raises :class:`FileFormatError` for a missing, incomplete or
    malformed file and :class:`LayerNotFoundError` for an unknown layer.
    """
    path = Path(path)
    with _open_store(path, "contribution store") as f:
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
        if "complete" in attrs and not bool(attrs["complete"]):
            raise FileFormatError(f"{path}: attribute 'complete' is False (an interrupted contributions run); "
                                  "finish it first")
        if "contributions" not in f or "bins" not in f:
            raise FileFormatError(f"{path}: expected groups/datasets 'contributions/<layer>' and 'bins'; "
                                  f"found {sorted(f)}")
        layers = sorted(f["contributions"])
        if layer not in f["contributions"]:
            raise LayerNotFoundError(f"{path}: layer {layer!r} not in contributions; available: {layers}")
        ds = f["contributions"][layer]
        bins = f["bins"][...].astype(np.int64)
        per_target = _per_target(attrs, ds)
        if per_target:
            n_targets = ds.shape[1]
            if target_index is None:
                raise ModesError(f"{path}: layer {layer!r} holds per-target contributions {ds.shape}; "
                                 f"choose target_index in [0, {n_targets}) (CLI: --target-index)")
            if not 0 <= target_index < n_targets:
                raise ModesError(f"target_index (CLI: --target-index): expected a value in [0, {n_targets}); "
                                 f"found {target_index}")
            x = ds[:, target_index]
        else:
            if target_index not in (None, 0):
                raise ModesError(f"{path}: layer {layer!r} has a single target {ds.shape}; "
                                 f"target_index must be None, found {target_index}")
            x = ds[...]
        if x.shape[0] != bins.shape[0]:
            raise FileFormatError(f"{path}: contributions/{layer} has {x.shape[0]} rows but bins has "
                                  f"{bins.shape[0]}")
        x = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
    return LayerContributions(x, bins, attrs, str(path.resolve()), layer, target_index if per_target else None)


def _per_target(attrs: dict[str, Any], ds: h5py.Dataset) -> bool:
    dims = _decode(ds.attrs.get("dims", ""))
    if isinstance(dims, list):
        return "target" in dims
    target = attrs.get("target")
    return isinstance(target, dict) and bool(target.get("per_cell")) and ds.ndim >= 3


# ------------------------------------------------------------------------------------ modes store
def _rows(d: int, n: int, itemsize: int = 4) -> int:
    return int(max(1, min(n, CHUNK_BYTES // max(1, d * itemsize))))


def write_modes(path: str | os.PathLike, decomposer: ModeDecomposer, loadings: np.ndarray | None = None,
                bins: np.ndarray | None = None, *, X: np.ndarray | None = None,
                contributions_path: str | None = None, layer: str | None = None,
                target_index: int | None = None, contributions_attrs: dict[str, Any] | None = None,
                attrs: dict[str, Any] | None = None) -> Path:
    """Write a fitted ``decomposer`` and the per-bin ``loadings (n, n_modes)`` (or ``transform(X)``) to HDF5.

    ``bins (n,)`` defaults to ``arange(n)``. Written atomically; returns ``Path(path)``.
    """
    decomposer._check_fitted()
    if loadings is None:
        if X is None:
            raise ModesError("write_modes: give loadings (n, n_modes) or X (n, d)")
        loadings = decomposer.transform(X)
    loadings = np.asarray(loadings, dtype=np.float32)
    if loadings.ndim != 2 or loadings.shape[1] != decomposer.n_modes_:
        raise ModesError(f"loadings: expected shape (n, {decomposer.n_modes_}); found {loadings.shape}")
    n = loadings.shape[0]
    bins = np.arange(n, dtype=np.int64) if bins is None else np.asarray(bins, dtype=np.int64)
    if bins.shape != (n,):
        raise ModesError(f"bins: expected shape ({n},) to match loadings; found {bins.shape}")
    k, d = decomposer.atoms_.shape
    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5_create(tmp) as f:
        f.attrs["kind"] = decomposer.kind
        f.attrs["settings"] = _json(decomposer.settings())
        f.attrs["metrics"] = _json(decomposer.metrics())
        f.attrs["scale"] = float(decomposer.scale_)
        f.attrs["n_modes"] = int(k)
        f.attrs["n_features"] = int(d)
        f.attrs["layer"] = layer or ""
        f.attrs["target_index"] = -1 if target_index is None else int(target_index)
        f.attrs["contributions_path"] = str(Path(contributions_path).resolve()) if contributions_path else ""
        f.attrs["contributions_attrs"] = _json(contributions_attrs or {})
        f.attrs["package_version"] = str(__version__)
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        for key, val in (attrs or {}).items():
            f.attrs[key] = val if isinstance(val, (int, float, str, np.number)) else _json(val)
        ds = f.create_dataset("atoms", data=decomposer.atoms_)
        ds.attrs["description"] = "alive SAE atoms (modes) in contribution units; X ≈ loadings @ atoms + intercept"
        ds = f.create_dataset("loadings", data=loadings, chunks=(_rows(max(k, 1), max(n, 1)), max(k, 1))
                              if n and k else None, compression="gzip" if n * k > 1 << 16 else None)
        ds.attrs["description"] = "mode loadings (SAE codes) per bin, (bins, modes)"
        ds = f.create_dataset("bins", data=bins)
        ds.attrs["description"] = "bin index of each loadings row (from the contribution store's /bins)"
        names = [f"mode{i}" for i in range(k)]
        ds = f.create_dataset("mode_names", data=np.array(names, dtype=h5py.string_dtype()))
        ds.attrs["description"] = "name of each mode (row of atoms, column of loadings)"
        ds = f.create_dataset("latent_index", data=np.flatnonzero(decomposer.alive_).astype(np.int64))
        ds.attrs["description"] = "index of each mode among the SAE's latents (the others never fired)"
        f.create_dataset("intercept", data=decomposer.intercept_).attrs["description"] = "reconstruction offset (d,)"
        f.create_dataset("mean", data=decomposer.mean_).attrs["description"] = "mean removed before scaling (d,)"
        g = f.create_group("sae")
        g.attrs["description"] = "state dict of the trained SAE (float32)"
        for name, t in decomposer.sae_.state_dict().items():
            g.create_dataset(name, data=t.detach().cpu().numpy()).attrs["description"] = \
                f"SAE state-dict entry {name!r} (load_decomposer rebuilds the SAE from these)"
    return path


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
        return self.attrs.get("metrics", {})


def _open_store(path: str | os.PathLike, what: str) -> h5py.File:
    """Open a store read-only: ``FileFormatError`` naming ``what`` when it is missing, the shared HDF5 checks
    (:func:`~retina_codec.recordings.hdf5_files.open_hdf5`) for empty, non-HDF5 or corrupt files."""
    if not Path(path).exists():
        raise FileFormatError(f"{path}: {what} not found")
    return open_hdf5(path)


def _open_modes(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    f = _open_store(path, "modes file")
    missing = [k for k in ("atoms", "loadings", "bins") if k not in f]
    if missing:
        f.close()
        raise FileFormatError(f"{path}: not a modes file; missing datasets {missing}")
    return f


def read_modes(path: str | os.PathLike) -> ModesFile:
    """Load a modes store into memory."""
    with _open_modes(path) as f:
        names = [_decode(n) for n in f["mode_names"][...]] if "mode_names" in f else \
            [f"mode{i}" for i in range(f["atoms"].shape[0])]
        return ModesFile(
            atoms=f["atoms"][...], loadings=f["loadings"][...], bins=f["bins"][...], mode_names=names,
            latent_index=f["latent_index"][...], intercept=f["intercept"][...], mean=f["mean"][...],
            attrs={k: _decode(v) for k, v in f.attrs.items()},
        )


def read_loadings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(loadings (n, n_modes) float32, bins (n,) int64, mode names)`` of a modes store."""
    with _open_modes(path) as f:
        names = [_decode(n) for n in f["mode_names"][...]] if "mode_names" in f else \
            [f"mode{i}" for i in range(f["atoms"].shape[0])]
        return f["loadings"][...], f["bins"][...], names


def load_decomposer(path: str | os.PathLike) -> ModeDecomposer:
    """Rebuild the fitted :class:`ModeDecomposer` of a modes store (to ``transform`` new contributions)."""
    m = read_modes(path)
    settings = dict(m.attrs["settings"])
    sae_settings = settings.pop("sae")
    dec = ModeDecomposer(**settings)
    d = int(sae_settings["n_features"])
    k_latents = int(sae_settings["n_latents"])
    with h5py.File(path, "r") as f:
        state = {name: torch.from_numpy(np.asarray(f["sae"][name])) for name in f["sae"]}
    with torch.random.fork_rng(devices=[]):
        sae = make_sae(dec.kind, d, k_latents, k=dec.k, threshold=dec.threshold, l1=dec.l1,
                       hidden_size=dec.hidden_size, **(dec.sae_options or {}))
    sae.load_state_dict(state)
    dec.sae_ = sae.eval()
    dec.n_features_in_ = d
    dec.mean_ = m.mean.astype(np.float32)
    dec.scale_ = np.float32(m.attrs["scale"])
    alive = np.zeros(k_latents, dtype=bool)
    alive[m.latent_index] = True
    dec.alive_ = alive
    dec.n_modes_ = int(alive.sum())
    dec.atoms_ = m.atoms
    dec.intercept_ = m.intercept
    metrics = m.metrics
    dec.explained_variance_ = float(metrics.get("explained_variance", float("nan")))
    dec.l0_ = float(metrics.get("l0", float("nan")))
    dec.dead_fraction_ = float(metrics.get("dead_fraction", float("nan")))
    dec.n_iter_ = int(metrics.get("n_iter", 0))
    return dec

