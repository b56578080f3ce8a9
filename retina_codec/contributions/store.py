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
from ..errors import DiskFullError, OutputLockedError, RetinaCodecError
from ..hashing import model_hash, tensor_hash
from ..io_utils import abandon_hdf5, check_output_path, ensure_free_space, h5_create, output_error
from ..locking import OutputLock
from ..progress import progress
from ..recordings.frames import raw_frames
from ..recordings.windows import bin_chunks
from .api import completeness_summary, fit_reference, per_sample_baseline, resolve_batch_size
from .engine import ContributionEngine
from .sources import InputSource, LoaderSource, RecordingSource, TensorSource, as_source
from .targets import make_target

__all__ = ["write_contributions", "read_contributions", "model_hash", "partial_path", "shard_path"]

log = logging.getLogger(__name__)

CHUNK_TARGET_BYTES = 4 << 20  # HDF5 chunks of about 4 MiB along time
HASH_FRAMES_BYTES = 64 << 20  # frames hashed per read when fingerprinting a recording
SPACE_MARGIN = 1 << 20  # free bytes kept beyond a chunk's rows for HDF5 metadata


def recording_fingerprint(source: RecordingSource) -> dict[str, Any]:
    """Content hashes of what a run over ``source`` reads: the explained bins, the frames their history
    windows span (as stored, read in large slices), the responses and frame times over that span and the
    cell ids. ``{"bins_sha256", "frames_sha256", "responses_sha256", "span"}``.

    A resumed run compares these with its partial file's, so a recording replaced between a kill and the
    resume is noticed (its path alone says nothing). Costs one sequential read of the spanned frames.
    """
    rec = source.recording
    bins = np.asarray(source.bins, dtype=np.int64)
    n_frames = int(rec.n_frames)
    lo = max(0, int(bins.min()) - source.history - source.offset) if bins.size else 0
    hi = min(n_frames, int(bins.max()) + 1) if bins.size else 0
    h, w = rec.frame_shape
    step = max(1, HASH_FRAMES_BYTES // max(1, 4 * h * w))
    frames = hashlib.sha256(f"{n_frames}x{h}x{w};".encode())
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        got = raw_frames(rec.stimulus, a, b)
        raw, scale, offset = got if got is not None else (np.asarray(rec.stimulus[a:b]), 1.0, 0.0)
        raw = np.ascontiguousarray(raw)
        frames.update(f"{raw.dtype}:{raw.shape}:{float(scale)!r}:{float(offset)!r};".encode())
        frames.update(memoryview(raw).cast("B"))
    resp = hashlib.sha256(_json([str(c) for c in rec.cell_ids]).encode())
    resp.update(np.ascontiguousarray(np.asarray(rec.responses, np.float32)[lo:hi]).tobytes())
    resp.update(np.ascontiguousarray(np.asarray(rec.frame_times, np.float64)[lo:hi]).tobytes())
    resp.update(np.ascontiguousarray(np.asarray(rec.segment_starts, np.int64)).tobytes())
    return {"bins_sha256": hashlib.sha256(bins.tobytes()).hexdigest(), "frames_sha256": frames.hexdigest(),
            "responses_sha256": resp.hexdigest(), "span": [lo, hi]}


def loader_fingerprint(source: LoaderSource, chunk: int = 1024) -> dict[str, Any]:
    """Content hash of every sample a DataLoader (or any re-iterable of batches) yields, in order: one extra
    pass over the data (decoding only, beside hours of contributions). A loader that yields other samples or
    another order on the next pass (``shuffle=True``, changed files) gets another hash, so its partial store
    is started over instead of mixed. ``{}`` for a one-shot iterator, which cannot be read twice."""
    if iter(source.loader) is source.loader:
        return {}
    h = hashlib.sha256()
    n = 0
    for _, x in source.iter_chunks(chunk):
        h.update(tensor_hash(x).encode())
        n += int(x.shape[0])
    return {"input_sha256": h.hexdigest(), "input_samples": n}


def _input_fingerprint(source: InputSource) -> dict[str, Any]:
    """Content hashes of the samples a run explains: a tensor, a recording, or a re-iterable DataLoader."""
    if isinstance(source, TensorSource):
        return {"input_sha256": tensor_hash(source.x)}
    if isinstance(source, RecordingSource):
        return {f"recording_{k}": v if isinstance(v, str) else _json(v)
                for k, v in recording_fingerprint(source).items()}
    if isinstance(source, LoaderSource):
        return loader_fingerprint(source)
    return {}


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
            d.attrs["dims"] = _json(["bin"] + (["target"] if value_shape else []) +
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
        return self.file["progress/chunk_done"][:].astype(bool)

    def write(self, k: int, bins: np.ndarray, result: Any) -> None:
        # checked before any HDF5 write: a file that runs out of space mid-write cannot be closed cleanly
        ensure_free_space(self.path, SPACE_MARGIN + len(bins) * self.row_bytes, f"chunk {k}")
        f = self.file
        a = k * self.chunk
        b = a + len(bins)
        self.writing = True
        f["bins"][a:b] = bins
        f["f_x"][a:b] = result.f_x.cpu().numpy()
        f["f_baseline"][a:b] = result.f_baseline.cpu().numpy()
        for layer, v in result.contributions.items():
            f["contributions"][layer][a:b] = v.cpu().numpy()
            f["completeness"][layer][a:b] = result.error[layer].cpu().numpy()
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


def _changed(stored: Any, attrs: dict[str, Any]) -> list[str]:
    """Names of the attributes (inputs, settings) whose stored value differs from the new run's."""
    out = []
    for k, v in attrs.items():
        if k in ("started",):
            continue
        old = stored.get(k)
        old = old.decode() if isinstance(old, bytes) else old
        if old is None or str(old) != str(v):
            out.append(k)
    return out


def _finalize(path: Path, layers: list[str]) -> None:
    """Write the completeness summary and mark the file complete."""
    ensure_free_space(path, SPACE_MARGIN, "the completeness summary")
    with h5_create(path, "r+") as f:
        delta = f["f_x"][...] - f["f_baseline"][...]
        summary = {n: completeness_summary(f["completeness"][n][...], delta) for n in layers}
        f.attrs["completeness"] = _json(summary)
        f.attrs["complete"] = True
        f.attrs["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")


def _merge_shards(shards: list[Path], out_partial: Path, layers: list[str]) -> None:
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
    ctx = distributed.context(device)
    own = partial_path(out) if ctx.world == 1 else shard_path(out, ctx.rank, ctx.world)
    check_output_path(out, also=(partial_path(out), own))  # before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_output(out, ctx)
    try:
        return _write_locked(ctx, model, inputs, out, layers, target, method, steps, rule, baseline, reduce,
                             batch_size, device, dtype, quiet, split, history, reference, resume, attrs,
                             max_chunks, fast_conv, channels_last, autocast, engine_options)
    finally:
        if lock is not None:
            lock.release()


def _lock_output(out: Path, ctx: Any) -> OutputLock | None:
    """Rank 0 locks ``out`` (which covers ``out.partial`` and every shard) for the whole run; every rank
    learns whether it got the lock before touching a file, so a refused run stops on all its ranks."""
    lock, refused = None, None
    if ctx.rank == 0:
        try:
            lock = OutputLock(out).acquire()
        except (OutputLockedError, OSError) as err:
            refused = str(err) if isinstance(err, OutputLockedError) else str(output_error(err, out))
    refused = ctx.broadcast(refused)
    if refused is not None:
        if lock is not None:
            lock.release()
        raise OutputLockedError(refused)
    return lock


def _write_locked(ctx, model, inputs, out, layers, target, method, steps, rule, baseline, reduce, batch_size,
                  device, dtype, quiet, split, history, reference, resume, attrs, max_chunks, fast_conv,
                  channels_last, autocast, engine_options) -> Path:
    """:func:`write_contributions` once the output is checked and locked."""
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
        # content hashes of the samples explained: a resumed run must explain the same samples (computed
        # once, on rank 0: one sequential read of the frames, cheap beside the contributions themselves)
        file_attrs.update(ctx.broadcast(_input_fingerprint(source) if ctx.rank == 0 else None))
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
        try:
            writer = _Writer(path, signature, file_attrs, source.n, chunk, shapes, value_shape, np_dtype, extra,
                             resume)
        except (OSError, RuntimeError) as err:
            raise output_error(err, path) from err
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
        except BaseException as err:
            suspect = writer.writing
            writer.abort(err)
            if suspect and isinstance(err, (OSError, RuntimeError)) and not isinstance(err, RetinaCodecError):
                raise output_error(err, path) from err
            raise
        finally:
            writer.close()
    if not finished:
        return out
    ctx.barrier()
    if ctx.rank == 0:
        final_partial = partial_path(out)
        try:
            if ctx.world > 1:
                _merge_shards([shard_path(out, r, ctx.world) for r in range(ctx.world)], final_partial,
                              list(engine.layers))
            _finalize(final_partial, list(engine.layers))
            os.replace(final_partial, out)
        except (OSError, RuntimeError) as err:
            if isinstance(err, RetinaCodecError):
                raise
            raise output_error(err, final_partial) from err
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
