"""The contribution store: schema, writer (resumable partial files, shards) and the readers of its layout.

Layout of ``contributions.h5``::

    /bins                     (n,)            int64   sample indices (time bins of the recording split)
    /f_x, /f_baseline         (n, [K])        target at the input and at the baseline
    /contributions/<layer>    (n, [K,] ...)   per-layer contributions, chunked along time; attribute ``dims``
    /completeness/<layer>     (n, [K])        signed error Σ C − (F(x) − F(x₀))
    /progress/chunk_done      (n_chunks,)     uint8, 1 once a chunk's rows are written
    /target/{mu,cov,precision}                surprisal statistics (surprisal target only)

Root attributes record method, rule, steps, target, layers, reduction, baseline (the spec:
:meth:`retina_codec.contributions.spec.ContributionSpec.to_attrs`), affine stem, model hash, package and
torch versions, source, sample count, dtype, the input's content hashes, ``run_signature``, ``chunk_size``,
``complete``, ``started`` and (at the end) ``completeness`` (JSON summary) and ``finished``.

The file is written under ``<out>.partial`` (or one ``<out>.shard<r>-of-<K>.partial`` per rank) and renamed
onto ``out`` when complete. A killed run finds its partial file, checks that the settings match (the run
signature), and resumes after the last complete chunk with the same chunk boundaries. Rows are written chunk
by chunk and never accumulated in memory. Every free-space check happens before the HDF5 write it guards.

This module holds no computing: the contributions package hands it numpy rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DiskFullError, FileFormatError, LayerNotFoundError, ModesError
from ..io_utils import abandon_hdf5, ensure_free_space, h5_create
from .codec import decode_attr, decode_attrs, open_store, read_attr, to_json

__all__ = ["CHUNK_TARGET_BYTES", "SPACE_MARGIN", "partial_path", "shard_path", "completeness_summary",
           "run_signature", "partial_chunk_size", "ContributionWriter", "finalize", "merge_shards",
           "read_contributions", "read_completeness", "is_complete", "StoreInfo", "read_store_info", "LayerContributions", "read_layer_contributions"]

log = logging.getLogger(__name__)

CHUNK_TARGET_BYTES = 4 << 20  # HDF5 chunks of about 4 MiB along time
SPACE_MARGIN = 1 << 20  # free bytes kept beyond a chunk's rows for HDF5 metadata
UNSIGNED_ATTRS = ("started",)  # attributes that may differ between a run and its resume


# ------------------------------------------------------------------------------------------ names
def partial_path(out: str | os.PathLike) -> Path:
    """The name a single-process run writes to before the final rename."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def shard_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """The partial file rank ``rank`` of ``world`` writes."""
    out = Path(out)
    return out.with_name(f"{out.name}.shard{rank}-of-{world}.partial")


# ---------------------------------------------------------------------------------------- summary
def completeness_summary(error: np.ndarray, delta: np.ndarray) -> dict[str, float]:
    """Summary of completeness errors ``Σ C − ΔF`` against ``ΔF = F(x) − F(x₀)`` (same shapes).

    ``total_rel`` = Σ|error| / Σ|ΔF|; ``median_rel`` / ``max_rel`` over samples of |error| / |ΔF|
    (samples with ΔF = 0 left out); ``max_abs`` the largest |error|.
    """
    err = np.abs(np.asarray(error, dtype=np.float64)).ravel()
    d = np.abs(np.asarray(delta, dtype=np.float64)).ravel()
    ok = d > 0
    rel = err[ok] / d[ok]
    return {
        "total_rel": float(err.sum() / d.sum()) if d.sum() > 0 else float("nan"),
        "median_rel": float(np.median(rel)) if rel.size else float("nan"),
        "max_rel": float(rel.max()) if rel.size else float("nan"),
        "max_abs": float(err.max()) if err.size else 0.0,
        "n": int(err.size),
    }


# ------------------------------------------------------------------------------------ resume keys
def run_signature(attrs: Mapping[str, Any], extra: Mapping[str, np.ndarray]) -> str:
    """The resume key of a run: a hash of its attributes (but ``started``) and of the ``extra`` datasets
    (surprisal moments)."""
    doc = {k: v for k, v in attrs.items() if k not in UNSIGNED_ATTRS}
    doc["target_moments"] = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes()
                                                    for v in extra.values())).hexdigest()
    return hashlib.sha256(to_json(doc).encode()).hexdigest()


def partial_chunk_size(path: Path, signature: str) -> int | None:
    """The chunk size of a partial file written with the same settings (``None`` when there is none)."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("run_signature") == signature:
                return int(f.attrs["chunk_size"])
    except (OSError, KeyError, ValueError):
        pass
    return None


def _changed(stored: Any, attrs: Mapping[str, Any]) -> list[str]:
    """Names of the attributes (inputs, settings) whose stored value differs from the new run's."""
    out = []
    for k, v in attrs.items():
        if k in UNSIGNED_ATTRS:
            continue
        old = stored.get(k)
        old = old.decode() if isinstance(old, bytes) else old
        if old is None or str(old) != str(v):
            out.append(k)
    return out


# ----------------------------------------------------------------------------------------- writer
class ContributionWriter:
    """One partial HDF5 file: creates or reopens it (``resume``), writes chunks of rows, marks them done.

    ``shapes[layer]``: per-sample shape of the stored contributions ``([K,] *features)``; ``value_shape``:
    ``(K,)`` for per-cell targets, else ``()``; ``extra``: datasets written once (surprisal moments).
    """

    def __init__(self, path: Path, signature: str, attrs: dict[str, Any], n: int, chunk: int,
                 shapes: dict[str, tuple[int, ...]], value_shape: tuple[int, ...], dtype: np.dtype,
                 extra: dict[str, np.ndarray], resume: bool) -> None:
        self.path = path
        self.n, self.chunk = n, chunk
        self.n_chunks = -(-n // chunk)
        self.file: h5py.File | None = None
        self.resumed = False
        self.writing = False  # True while HDF5 writes are under way: a failure then leaves the file suspect
        self.flushing = False  # True inside H5Fflush: after a failed flush HDF5 cannot close the file safely
        self.row_bytes = (8 + 2 * 8 * int(np.prod(value_shape))
                          + sum((int(np.prod(s)) + int(np.prod(value_shape))) * dtype.itemsize
                                for s in shapes.values()))
        if resume and path.exists():
            try:
                f = h5_create(path, "r+")
            except OSError as err:
                log.warning("%s: cannot reopen the partial file (%s); starting over", path, err)
            else:
                if f.attrs.get("run_signature") == signature and int(f.attrs.get("chunk_size", -1)) == chunk:
                    self.file = f
                    self.resumed = True
                else:
                    changed = _changed(f.attrs, attrs)
                    f.close()
                    log.warning("%s: partial file from %s; starting over", path,
                                f"other inputs or settings ({', '.join(changed)} differ)" if changed else
                                "different settings")
        if self.file is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.writing = True
            try:
                self._create(signature, attrs, shapes, value_shape, dtype, extra)
            except BaseException as err:
                self.abort(err)
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
            self.writing = False

    def _create(self, signature, attrs, shapes, value_shape, dtype, extra) -> None:
        ensure_free_space(self.path, SPACE_MARGIN + sum(np.asarray(v).nbytes for v in extra.values()),
                          "a new partial file")
        f = self.file = h5_create(self.path, "w")
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["run_signature"] = signature
        f.attrs["chunk_size"] = self.chunk
        f.attrs["complete"] = False

        def rows(feature_shape: tuple[int, ...], itemsize: int) -> int:
            per = max(1, int(np.prod(feature_shape)) * itemsize)
            return int(max(1, min(self.chunk, self.n, CHUNK_TARGET_BYTES // per)))

        n = self.n
        f.create_dataset("bins", (n,), dtype=np.int64, chunks=(rows((), 8),))
        for name in ("f_x", "f_baseline"):
            f.create_dataset(name, (n, *value_shape), dtype=dtype, chunks=(rows(value_shape, 8), *value_shape))
        g = f.create_group("contributions")
        c = f.create_group("completeness")
        for layer, shp in shapes.items():
            d = g.create_dataset(layer, (n, *shp), dtype=dtype, chunks=(rows(shp, dtype.itemsize), *shp))
            d.attrs["dims"] = to_json(["bin"] + (["target"] if value_shape else []) +
                                      [f"feature{i}" for i in range(len(shp) - len(value_shape))])
            c.create_dataset(layer, (n, *value_shape), dtype=dtype, chunks=(rows(value_shape, 8), *value_shape))
        f.create_dataset("progress/chunk_done", (self.n_chunks,), dtype=np.uint8)
        for k, v in extra.items():
            f.create_dataset(k, data=v)
        self._flush()

    def _flush(self) -> None:
        self.flushing = True
        self.file.flush()
        self.flushing = False

    def n_done(self) -> int:
        return int(self.file["progress/chunk_done"][:].sum())

    def done_mask(self) -> np.ndarray:
        """``(n_chunks,)`` bool: chunks already written."""
        return self.file["progress/chunk_done"][:].astype(bool)

    def write(self, k: int, bins: np.ndarray, f_x: np.ndarray, f_baseline: np.ndarray,
              contributions: Mapping[str, np.ndarray], completeness: Mapping[str, np.ndarray]) -> None:
        """Rows of chunk ``k`` (``len(bins)`` samples from row ``k · chunk``), then its done mark."""
        # checked before any HDF5 write: a file that runs out of space mid-write cannot be closed cleanly
        ensure_free_space(self.path, SPACE_MARGIN + len(bins) * self.row_bytes, f"chunk {k}")
        f = self.file
        a = k * self.chunk
        b = a + len(bins)
        self.writing = True
        f["bins"][a:b] = bins
        f["f_x"][a:b] = f_x
        f["f_baseline"][a:b] = f_baseline
        for layer, v in contributions.items():
            f["contributions"][layer][a:b] = v
            f["completeness"][layer][a:b] = completeness[layer]
        self._flush()
        f["progress/chunk_done"][k] = 1
        self._flush()
        self.writing = False

    def close(self) -> None:
        """Close the file (never one whose flush failed: HDF5 would crash; it is abandoned instead)."""
        if self.file is None:
            return
        f, self.file = self.file, None
        if self.flushing:
            abandon_hdf5(f)
            return
        f.close()

    def abort(self, err: BaseException) -> None:
        """After ``err``: keep a resumable partial file, or remove one whose last write failed."""
        if self.file is None:
            return
        suspect = self.writing
        keep = False
        if not suspect:
            try:
                keep = self.n_done() > 0  # nothing to resume otherwise (e.g. a bad cell found on chunk 0)
            except (OSError, RuntimeError, KeyError):
                keep = False
        try:
            self.close()
        except (OSError, RuntimeError):
            keep = False
        if not keep:
            with contextlib.suppress(OSError):
                self.path.unlink()
        elif isinstance(err, (DiskFullError, OSError, RuntimeError)):
            log.warning("%s: kept with its complete chunks; run the same command again to resume", self.path)


def finalize(path: Path, layers: list[str]) -> None:
    """Write the completeness summary and mark the file complete."""
    ensure_free_space(path, SPACE_MARGIN, "the completeness summary")
    with h5_create(path, "r+") as f:
        delta = f["f_x"][...] - f["f_baseline"][...]
        summary = {n: completeness_summary(f["completeness"][n][...], delta) for n in layers}
        f.attrs["completeness"] = to_json(summary)
        f.attrs["complete"] = True
        f.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")


def merge_shards(shards: list[Path], out_partial: Path, layers: list[str]) -> None:
    """Copy every shard's done chunks into the first shard's file (chunk by chunk), written as ``out_partial``."""
    ensure_free_space(shards[0], SPACE_MARGIN + sum(s.stat().st_size for s in shards[1:]), "merging the shards")
    os.replace(shards[0], out_partial)
    with h5_create(out_partial, "r+") as dst:
        chunk = int(dst.attrs["chunk_size"])
        n = dst["bins"].shape[0]
        names = ["bins", "f_x", "f_baseline"] + [f"contributions/{n_}" for n_ in layers] + \
                [f"completeness/{n_}" for n_ in layers]
        for shard in shards[1:]:
            with h5py.File(shard, "r") as src:
                if src.attrs["run_signature"] != dst.attrs["run_signature"]:
                    raise RuntimeError(f"{shard}: shard written with different settings")
                done = np.flatnonzero(src["progress/chunk_done"][:])
                for k in done:
                    a, b = k * chunk, min(n, (k + 1) * chunk)
                    for name in names:
                        dst[name][a:b] = src[name][a:b]
                    dst["progress/chunk_done"][k] = 1
            dst.flush()
        missing = np.flatnonzero(dst["progress/chunk_done"][:] == 0)
        if missing.size:
            raise RuntimeError(f"{out_partial}: chunks {missing[:10].tolist()} missing after merging the shards")
    for shard in shards[1:]:
        shard.unlink()


# ---------------------------------------------------------------------------------------- readers
def read_contributions(path: str | os.PathLike, layers: list[str] | None = None,
                       stop: int | None = None) -> dict[str, Any]:
    """Load a (small enough) store into memory: ``{"attrs", "bins", "f_x", "f_baseline", "contributions",
    "completeness"}`` — decoded root attributes and the arrays (per layer for the last two) of ``layers``
    (default all), rows ``0 … stop − 1`` (default all)."""
    rows = slice(None, stop)
    with h5py.File(path, "r") as f:
        attrs = {k: _decode_json_text(v) for k, v in f.attrs.items()}
        names = layers if layers is not None else list(f["contributions"])
        return {
            "attrs": attrs, "bins": f["bins"][rows], "f_x": f["f_x"][rows], "f_baseline": f["f_baseline"][rows],
            "contributions": {n: f["contributions"][n][rows] for n in names},
            "completeness": {n: f["completeness"][n][rows] for n in names},
        }


@dataclass
class StoreInfo:
    """What a contribution store holds, without its rows: decoded root ``attrs``, ``n_samples``, the
    ``layers`` in store order and each layer's per-sample shape ``([K,] *features)``."""

    attrs: dict[str, Any]
    n_samples: int
    layers: list[str]
    shapes: dict[str, tuple[int, ...]]


def read_store_info(path: str | os.PathLike) -> StoreInfo:
    """:class:`StoreInfo` of the store ``path`` (a missing or unreadable file is a
    :class:`~retina_codec.errors.FileFormatError`)."""
    with open_store(path, "contribution store") as f:
        layers = list(f["contributions"]) if "contributions" in f else []
        return StoreInfo(decode_attrs(f.attrs), int(f["bins"].shape[0]) if "bins" in f else 0, layers,
                         {k: tuple(f["contributions"][k].shape[1:]) for k in layers})


def _decode_json_text(v: Any) -> Any:
    """:func:`~.codec.decode_attr` for a string (bytes → str, JSON parsed); other values kept as h5py gives
    them (numpy scalars stay numpy: ``read_contributions`` has always returned them so)."""
    return decode_attr(v) if isinstance(v, (bytes, str)) else v


def read_completeness(path: str | os.PathLike) -> tuple[dict[str, dict[str, float]], int]:
    """``(completeness summary per layer, number of samples)`` of a complete store."""
    with open_store(path, "contribution store") as f:
        return decode_attr(f.attrs["completeness"]), int(f["bins"].shape[0])


def is_complete(path: str | os.PathLike) -> bool:
    """True when the store ``path`` is marked complete (a missing, partial or unreadable file: False)."""
    return bool(read_attr(path, "complete", False))


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
    """Read ``/contributions/<layer>`` of a contribution store.

    The dataset is ``(n, d)`` for a scalar target or ``(n, n_targets, d…)`` for per-cell targets, where
    ``target_index`` picks one target. Trailing feature dimensions are flattened to ``d`` (reduced stores
    have one). Rows come with ``/bins``. Raises :class:`FileFormatError` for a missing, incomplete or
    malformed file and :class:`LayerNotFoundError` for an unknown layer.
    """
    path = Path(path)
    with open_store(path, "contribution store") as f:
        attrs = decode_attrs(f.attrs)
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
    dims = decode_attr(ds.attrs.get("dims", ""))
    if isinstance(dims, list):
        return "target" in dims
    target = attrs.get("target")
    return isinstance(target, dict) and bool(target.get("per_cell")) and ds.ndim >= 3
