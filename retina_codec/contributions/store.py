"""``write_contributions``: contributions streamed to the HDF5 contribution store (resumable, shardable).

The store's layout, writer and readers are :mod:`retina_codec.stores.contributions`; this module is the
:class:`HDF5Sink` the one run loop (:func:`~.runner.run`) feeds, and the content hashes of the inputs that
key a resume (a run resumes a partial file only when its settings and inputs match).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import OutputLockedError, RetinaCodecError
from ..hashing import model_hash, tensor_hash
from ..io_utils import check_output_path, output_error
from ..locking import OutputLock
from ..recordings.frames import raw_frames
from ..stores.codec import to_json
from ..stores.contributions import (
    ContributionWriter,
    finalize,
    merge_shards,
    partial_chunk_size,
    partial_path,
    read_contributions,
    run_signature,
    shard_path,
)
from . import distributed
from .distributed import DistContext
from .engine import ChunkResult, ContributionEngine
from .runner import run
from .sources import InputSource, LoaderSource, RecordingSource, TensorSource
from .spec import ContributionSpec, build

__all__ = ["write_contributions", "read_contributions", "model_hash", "partial_path", "shard_path", "HDF5Sink",
           "recording_fingerprint", "loader_fingerprint"]

log = logging.getLogger(__name__)

HASH_FRAMES_BYTES = 64 << 20  # frames hashed per read when fingerprinting a recording


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
    resp = hashlib.sha256(to_json([str(c) for c in rec.cell_ids]).encode())
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
        return {f"recording_{k}": v if isinstance(v, str) else to_json(v)
                for k, v in recording_fingerprint(source).items()}
    if isinstance(source, LoaderSource):
        return loader_fingerprint(source)
    return {}


class HDF5Sink:
    """The contribution store as a sink of :func:`~.runner.run`: writes this process's partial file (or
    shard), resumes a matching one, and on completion merges the shards, writes the completeness summary
    and renames the result onto ``out``.

    ``attrs``: extra root attributes (the user's); ``mhash``: the model's hash (taken before the run moves
    the model); ``resume``: continue a partial file written with the same settings; ``auto_chunk``: the
    chunk size followed the memory budget, so a resumed run takes the partial file's.
    """

    needs_length = True

    def __init__(self, out: Path, ctx: DistContext, mhash: str, attrs: dict[str, Any] | None, resume: bool,
                 auto_chunk: bool) -> None:
        self.out, self.ctx, self.mhash = out, ctx, mhash
        self.user_attrs = attrs or {}
        self.resume, self.auto_chunk = resume, auto_chunk
        self.path = partial_path(out) if ctx.world == 1 else shard_path(out, ctx.rank, ctx.world)
        self.desc = "contributions" if ctx.world == 1 else f"contributions rank {ctx.rank}"
        self.writer: ContributionWriter | None = None
        self.layers: list[str] = []

    def begin(self, engine: ContributionEngine, source: InputSource, chunk: int,
              ctx: DistContext) -> tuple[int, list[int]]:
        spec: ContributionSpec = engine.spec
        tgt = spec.target
        extra: dict[str, np.ndarray] = {}
        if getattr(tgt, "mu", None) is not None and getattr(tgt, "precision", None) is not None:
            extra = {"target/mu": tgt.mu, "target/cov": tgt.cov, "target/precision": tgt.precision}
        shapes = engine.output_shapes(source.sample_shape())
        settings = engine.describe()
        value_shape = (tgt.n_targets,) if tgt.per_cell else ()
        np_dtype = np.dtype(np.float64 if engine.run_dtype == torch.float64 else np.float32)
        file_attrs = {
            **spec.to_attrs(),
            "affine_stem": to_json(settings["affine_stem"]), "model_hash": self.mhash,
            "package_version": str(__version__), "torch_version": str(torch.__version__),
            "source": to_json(source.description), "n_samples": source.n, "dtype": str(np_dtype),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for k, v in self.user_attrs.items():
            file_attrs[k] = v if isinstance(v, (int, float, str, np.number)) else to_json(v)
        # content hashes of the samples explained: a resumed run must explain the same samples (computed
        # once, on rank 0: one sequential read of the frames, cheap beside the contributions themselves)
        file_attrs.update(ctx.broadcast(_input_fingerprint(source) if ctx.rank == 0 else None))
        signature = run_signature(file_attrs, extra)
        if self.resume and self.auto_chunk:
            # "auto" follows the memory free at the start: a resumed run keeps the partial file's chunks
            chunk = ctx.broadcast((partial_chunk_size(self.path, signature) or chunk) if ctx.rank == 0 else None)
        n_chunks = -(-source.n // chunk)
        mine = np.array_split(np.arange(n_chunks), ctx.world)[ctx.rank]
        try:
            self.writer = ContributionWriter(self.path, signature, file_attrs, source.n, chunk, shapes, value_shape,
                                             np_dtype, extra, self.resume)
        except (OSError, RuntimeError) as err:
            raise output_error(err, self.path) from err
        self.layers = list(engine.layers)
        done = self.writer.done_mask()
        todo = [int(k) for k in mine if not done[k]]
        if self.writer.resumed:  # counted over this process's chunks (under torchrun, its share of them)
            log.info("%s: resuming after %d of %d chunks%s", self.path, len(mine) - len(todo), len(mine),
                     "" if ctx.world == 1 else f" of rank {ctx.rank}")
        return chunk, todo

    def write(self, k: int, bins: np.ndarray, result: ChunkResult) -> None:
        self.writer.write(k, bins, result.f_x.cpu().numpy(), result.f_baseline.cpu().numpy(),
                          {n: v.cpu().numpy() for n, v in result.contributions.items()},
                          {n: v.cpu().numpy() for n, v in result.error.items()})

    def abort(self, err: BaseException) -> BaseException | None:
        """Keep or remove the partial file; an OS / HDF5 error in the middle of a write becomes one line."""
        if self.writer is None:
            return None
        suspect = self.writer.writing
        self.writer.abort(err)
        if suspect and isinstance(err, (OSError, RuntimeError)) and not isinstance(err, RetinaCodecError):
            return output_error(err, self.path)
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self, finished: bool, engine: ContributionEngine) -> Path:
        """Once every chunk is written (on every rank): merge the shards, summarise, rename onto ``out``."""
        if not finished:
            return self.out
        ctx = self.ctx
        ctx.barrier()
        if ctx.rank == 0:
            final_partial = partial_path(self.out)
            try:
                if ctx.world > 1:
                    merge_shards([shard_path(self.out, r, ctx.world) for r in range(ctx.world)], final_partial,
                                 self.layers)
                finalize(final_partial, self.layers)
                os.replace(final_partial, self.out)
            except (OSError, RuntimeError) as err:
                if isinstance(err, RetinaCodecError):
                    raise
                raise output_error(err, final_partial) from err
        ctx.barrier()
        return self.out


def write_contributions(model: nn.Module, inputs: Any, out: str | os.PathLike, layers: list[str] | str,
                        target: Any = "sum", method: str = "conductance", steps: int = 20,
                        rule: str = "trapezoid", baseline: float | torch.Tensor = 0.0,
                        reduce: Any = ("ei_split", "spatial_sum"), batch_size: int | str = "auto",
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        quiet: bool | None = None, split: str | None = "test", history: int | None = None,
                        reference: Any = None, resume: bool = True, attrs: dict[str, Any] | None = None,
                        max_chunks: int | None = None, fast_conv: str = "auto", channels_last: bool | None = None,
                        autocast: bool = False, **engine_options: Any) -> Path:
    """Stream contributions of ``inputs`` to the HDF5 file ``out`` (arguments as
    :func:`~.api.contributions`; layout in :mod:`retina_codec.stores.contributions`).

    Resumable: a partial file from an interrupted run with the same settings is continued after its last
    complete chunk. Under ``torchrun`` (``WORLD_SIZE > 1``) the chunks are split across ranks, each rank
    writes its shard and rank 0 merges them into ``out``. ``attrs``: extra root attributes. ``max_chunks``
    stops after that many new chunks (leaving the partial file, for tests). ``engine_options``: further
    :class:`~.spec.RunOptions` fields (``fold_batchnorm``, ``autotune``, ``stem``, ``batched_backward``,
    ``points_per_pass``). Returns ``Path(out)`` (on every rank).
    """
    out = Path(out)
    ctx = distributed.context(device)
    own = partial_path(out) if ctx.world == 1 else shard_path(out, ctx.rank, ctx.world)
    check_output_path(out, also=(partial_path(out), own))  # before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_output(out, ctx)
    try:
        spec, options = build(layers, target, method, steps, rule, baseline, reduce, dtype=dtype,
                              device=ctx.device if device is None or ctx.world > 1 else device,
                              batch_size=batch_size, fast_conv=fast_conv, channels_last=channels_last,
                              autocast=autocast, quiet=quiet, **engine_options)
        sink = HDF5Sink(out, ctx, model_hash(model), attrs, resume, options.auto_batch)
        return run(model, inputs, spec, options, sink, split=split, history=history, reference=reference,
                   ctx=ctx, max_chunks=max_chunks)
    finally:
        if lock is not None:
            lock.release()


def _lock_output(out: Path, ctx: DistContext) -> OutputLock | None:
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
