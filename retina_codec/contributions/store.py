"""Streamed, resumable HDF5 store of contributions (DESIGN.md §9).

Layout of ``contrib.h5``::

    /bins                     (n,)            int64   sample indices (time bins of the recording split)
    /f_x, /f_baseline         (n, [K])        target at the input and at the baseline
    /contributions/<layer>    (n, [K,] ...)   per-layer contributions, chunked along time
    /completeness/<layer>     (n, [K])        signed error Σ C − (F(x) − F(x₀))
    /progress/chunk_done      (n_chunks,)     uint8, 1 once a chunk's rows are written
    /target/{mu,cov,precision}                surprisal statistics (surprisal target only)

Root attributes record method, rule, steps, target, layers, reduction, baseline, model hash, package
version, chunk size, source and (at the end) the completeness summary. The file is written under
``<out>.partial`` (or one ``<out>.shard<r>-of-<K>.partial`` per rank) and renamed onto ``out`` when
complete. A killed run finds its partial file, checks that the settings match, and resumes after the last
complete chunk with the same chunk boundaries, so the numbers are identical. Rows are written chunk by
chunk and never accumulated in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..hashing import model_hash, tensor_hash
from ..progress import progress
from ..recordings.windows import bin_chunks
from .api import completeness_summary, fit_reference, per_sample_baseline, resolve_batch_size
from .engine import ContributionEngine
from .sources import InputSource, TensorSource, as_source
from .targets import make_target

__all__ = ["write_contributions", "read_contributions", "model_hash", "partial_path", "shard_path"]

log = logging.getLogger(__name__)

CHUNK_TARGET_BYTES = 4 << 20  # HDF5 chunks of about 4 MiB along time


def _partial_chunk(path: Path, signature: str) -> int | None:
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


def partial_path(out: str | os.PathLike) -> Path:
    """The name a single-process run writes to before the final rename."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def shard_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """The partial file rank ``rank`` of ``world`` writes."""
    out = Path(out)
    return out.with_name(f"{out.name}.shard{rank}-of-{world}.partial")


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class _Writer:
    """One partial HDF5 file: creates or reopens it, writes chunks, marks them done."""

    def __init__(self, path: Path, signature: str, attrs: dict[str, Any], n: int, chunk: int,
                 shapes: dict[str, tuple[int, ...]], value_shape: tuple[int, ...], dtype: np.dtype,
                 extra: dict[str, np.ndarray], resume: bool) -> None:
        self.path = path
        self.n, self.chunk = n, chunk
        self.n_chunks = -(-n // chunk)
        self.file: h5py.File | None = None
        self.resumed = False
        if resume and path.exists():
            try:
                f = h5py.File(path, "r+")
            except OSError as err:
                log.warning("%s: cannot reopen the partial file (%s); starting over", path, err)
            else:
                if f.attrs.get("run_signature") == signature and int(f.attrs.get("chunk_size", -1)) == chunk:
                    self.file = f
                    self.resumed = True
                else:
                    f.close()
                    log.warning("%s: partial file from different settings; starting over", path)
        if self.file is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._create(signature, attrs, shapes, value_shape, dtype, extra)

    def _create(self, signature, attrs, shapes, value_shape, dtype, extra) -> None:
        f = h5py.File(self.path, "w")
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
            d.attrs["dims"] = _json(["bin"] + (["target"] if value_shape else []) +
                                    [f"feature{i}" for i in range(len(shp) - len(value_shape))])
            c.create_dataset(layer, (n, *value_shape), dtype=dtype, chunks=(rows(value_shape, 8), *value_shape))
        f.create_dataset("progress/chunk_done", (self.n_chunks,), dtype=np.uint8)
        for k, v in extra.items():
            f.create_dataset(k, data=v)
        f.flush()
        self.file = f

    def n_done(self) -> int:
        return int(self.file["progress/chunk_done"][:].sum())

    def done_mask(self) -> np.ndarray:
        return self.file["progress/chunk_done"][:].astype(bool)

    def write(self, k: int, bins: np.ndarray, result: Any) -> None:
        f = self.file
        a = k * self.chunk
        b = a + len(bins)
        f["bins"][a:b] = bins
        f["f_x"][a:b] = result.f_x.cpu().numpy()
        f["f_baseline"][a:b] = result.f_baseline.cpu().numpy()
        for layer, v in result.contributions.items():
            f["contributions"][layer][a:b] = v.cpu().numpy()
            f["completeness"][layer][a:b] = result.error[layer].cpu().numpy()
        f.flush()
        f["progress/chunk_done"][k] = 1
        f.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _finalize(path: Path, layers: list[str]) -> None:
    """Write the completeness summary and mark the file complete."""
    with h5py.File(path, "r+") as f:
        delta = f["f_x"][...] - f["f_baseline"][...]
        summary = {n: completeness_summary(f["completeness"][n][...], delta) for n in layers}
        f.attrs["completeness"] = _json(summary)
        f.attrs["complete"] = True
        f.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")


def _merge_shards(shards: list[Path], out_partial: Path, layers: list[str]) -> None:
    """Copy every shard's done chunks into the first shard's file (chunk by chunk), written as ``out_partial``."""
    os.replace(shards[0], out_partial)
    with h5py.File(out_partial, "r+") as dst:
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


def write_contributions(model: nn.Module, inputs: Any, out: str | os.PathLike, layers: list[str] | str,
                        target: Any = "sum", method: str = "conductance", steps: int = 20,
                        rule: str = "trapezoid", baseline: float | torch.Tensor = 0.0, reduce: Any = ("ei_split", "spatial_sum"),
                        batch_size: int | str = "auto", device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, quiet: bool | None = None, split: str | None = "test",
                        history: int | None = None, reference: Any = None, resume: bool = True,
                        attrs: dict[str, Any] | None = None, max_chunks: int | None = None,
                        fast_conv: str = "auto", channels_last: bool | None = None, autocast: bool = False,
                        **engine_options: Any) -> Path:
    """Stream contributions of ``inputs`` to the HDF5 file ``out`` (arguments as :func:`contributions`).

    Resumable: a partial file from an interrupted run with the same settings is continued after its last
    complete chunk. Under ``torchrun`` (``WORLD_SIZE > 1``) the chunks are split across ranks, each rank
    writes its shard and rank 0 merges them into ``out``. ``max_chunks`` stops after that many new chunks
    (leaving the partial file, for tests). Returns ``Path(out)`` (on every rank).
    """
    from . import distributed

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx = distributed.context(device)
    device = ctx.device if device is None or ctx.world > 1 else device
    source: InputSource = as_source(inputs, model, split=split, history=history)
    if source.n is None:
        raise ValueError("inputs: the HDF5 store needs an input of known length (a tensor, a Recording or a "
                         "DataLoader over a sized dataset)")
    tgt = make_target(target)
    engine = ContributionEngine(model, layers, tgt, method, steps, rule, baseline, reduce, device, dtype,
                                fast_conv=fast_conv, channels_last=channels_last,
                                autocast=autocast, **engine_options)
    extra: dict[str, np.ndarray] = {}
    if tgt.needs_reference and not getattr(tgt, "fitted", True):
        if ctx.rank == 0:
            ref = source if reference is None else as_source(reference, model, split=split, history=history)
            fit_reference(model, tgt, ref, device=engine.device, dtype=dtype, quiet=quiet)
        moments = ctx.broadcast((tgt.mu, tgt.cov) if ctx.rank == 0 else None)
        if ctx.rank != 0:
            tgt.set_moments(*moments)
    if getattr(tgt, "mu", None) is not None and getattr(tgt, "precision", None) is not None:
        extra = {"target/mu": tgt.mu, "target/cov": tgt.cov, "target/precision": tgt.precision}
    mhash = model_hash(model)
    rows = per_sample_baseline(baseline, source)
    with engine:
        chunk = ctx.broadcast(resolve_batch_size(engine, source, batch_size) if ctx.rank == 0 else None)
        shapes = engine.output_shapes(source.sample_shape())
        settings = engine.describe()
        value_shape = (tgt.n_targets,) if tgt.per_cell else ()
        np_dtype = np.dtype(np.float64 if engine.run_dtype == torch.float64 else np.float32)
        file_attrs = {
            "method": settings["method"], "rule": settings["rule"], "steps": settings["steps"],
            "target": _json(settings["target"]), "layers": _json(settings["layers"]),
            "reduction": _json(settings["reduction"]),
            # a tensor baseline is recorded by shape and content hash (and so enters the resume signature)
            "baseline": str(settings["baseline"]) if not isinstance(baseline, torch.Tensor) else
            f"tensor {list(baseline.shape)} sha256 {tensor_hash(baseline)}",
            "affine_stem": _json(settings["affine_stem"]), "model_hash": mhash,
            "package_version": str(__version__), "torch_version": str(torch.__version__),
            "source": _json(source.description), "n_samples": source.n, "dtype": str(np_dtype),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for k, v in (attrs or {}).items():
            file_attrs[k] = v if isinstance(v, (int, float, str, np.number)) else _json(v)
        if isinstance(source, TensorSource):  # a resumed run must explain the same samples
            file_attrs["input_sha256"] = tensor_hash(source.x)
        sig_doc = {k: v for k, v in file_attrs.items() if k not in ("started",)}
        sig_doc["target_moments"] = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes()
                                                            for v in extra.values())).hexdigest()
        signature = hashlib.sha256(_json(sig_doc).encode()).hexdigest()
        path = partial_path(out) if ctx.world == 1 else shard_path(out, ctx.rank, ctx.world)
        if resume and batch_size in ("auto", None):
            # "auto" follows the memory free at the start: a resumed run keeps the partial file's chunks
            chunk = ctx.broadcast((_partial_chunk(path, signature) or chunk) if ctx.rank == 0 else None)
        n_chunks = -(-source.n // chunk)
        mine = np.array_split(np.arange(n_chunks), ctx.world)[ctx.rank]
        writer = _Writer(path, signature, file_attrs, source.n, chunk, shapes, value_shape, np_dtype, extra, resume)
        try:
            done = writer.done_mask()
            todo = [int(k) for k in mine if not done[k]]
            if writer.resumed:  # counted over this process's chunks (under torchrun, its share of them)
                log.info("%s: resuming after %d of %d chunks%s", path, len(mine) - len(todo), len(mine),
                         "" if ctx.world == 1 else f" of rank {ctx.rank}")
            new = 0
            bar = progress(total=len(todo), desc=f"contributions{'' if ctx.world == 1 else f' rank {ctx.rank}'}",
                           quiet=quiet, unit="chunk")
            # one pass over each run of consecutive chunks: a DataLoader is read once, not once per chunk
            for first, stop in bin_chunks(np.asarray(todo), max(len(todo), 1)):
                if max_chunks is not None and new >= max_chunks:
                    break
                chunks = source.iter_chunks(chunk, first * chunk, min(source.n, stop * chunk))
                for k in range(first, stop):
                    if max_chunks is not None and new >= max_chunks:
                        break
                    bins, x = next(chunks, (None, None))
                    if x is None:
                        raise ValueError(f"inputs: expected {source.n} samples; the input ended before chunk {k} "
                                         f"(samples {k * chunk}…)")
                    a = k * chunk
                    result = engine.compute(x) if rows is None else engine.compute(x, rows[a:a + len(x)])
                    writer.write(k, bins, result)
                    new += 1
                    bar.update(1)
            bar.close()
            finished = new == len(todo)
        except BaseException:
            if writer.n_done() == 0:  # nothing to resume (e.g. a bad cell index found on the first chunk)
                writer.close()
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            raise
        finally:
            writer.close()
    if not finished:
        return out
    ctx.barrier()
    if ctx.rank == 0:
        final_partial = partial_path(out)
        if ctx.world > 1:
            _merge_shards([shard_path(out, r, ctx.world) for r in range(ctx.world)], final_partial,
                          list(engine.layers))
        _finalize(final_partial, list(engine.layers))
        os.replace(final_partial, out)
    ctx.barrier()
    return out


def read_contributions(path: str | os.PathLike, layers: list[str] | None = None) -> dict[str, Any]:
    """Load a (small enough) store into memory: arrays and decoded attributes."""
    with h5py.File(path, "r") as f:
        attrs = {}
        for k, v in f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{":
                with contextlib.suppress(ValueError):
                    v = json.loads(v)
            attrs[k] = v
        names = layers if layers is not None else list(f["contributions"])
        return {
            "attrs": attrs, "bins": f["bins"][...], "f_x": f["f_x"][...], "f_baseline": f["f_baseline"][...],
            "contributions": {n: f["contributions"][n][...] for n in names},
            "completeness": {n: f["completeness"][n][...] for n in names},
        }
