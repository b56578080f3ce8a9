"""The one run loop: a spec and run options over an input, chunk by chunk, into a sink.

:func:`run` builds the input source and the engine, fits a target that needs reference statistics, picks
the chunk size and feeds every chunk's :class:`~.engine.ChunkResult` to a sink. :class:`MemorySink`
collects them into a :class:`ContributionResult` (what :func:`~.api.contributions` returns);
:class:`~.store.HDF5Sink` streams them to the contribution store (:mod:`retina_codec.stores.contributions`).
Under ``torchrun`` the sink decides which chunks this rank computes; collectives are no-ops in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import ContributionError
from ..progress import progress
from ..recordings.windows import bin_chunks
from ..stores.contributions import completeness_summary
from ..torch_utils.devices import resolve_device
from ..torch_utils.hooks import prepared_model
from .distributed import DistContext
from .engine import ChunkResult, ContributionEngine
from .sources import InputSource, as_source
from .spec import ContributionSpec, RunOptions
from .targets import Target

__all__ = ["run", "Sink", "MemorySink", "ContributionResult", "fit_reference", "resolve_batch_size",
           "per_sample_baseline"]


@dataclass
class ContributionResult:
    """Contributions of each layer, with the target values and completeness errors.

    ``layers[name]``: ``(n, [K,] *features)`` — features ``(2C,)`` with ``("ei_split", "spatial_sum")``,
    the layer's full output shape with ``reduce=None``. ``f_x`` / ``f_baseline``: ``(n, [K])`` target at
    the input and the baseline. ``completeness[name]``: ``(n, [K])`` signed error
    ``Σ_units C − (F(x) − F(x₀))``. ``bins``: ``(n,)`` sample indices (time bins for a recording).
    """

    layers: dict[str, np.ndarray]
    f_x: np.ndarray
    f_baseline: np.ndarray
    completeness: dict[str, np.ndarray]
    bins: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> np.ndarray:
        return self.layers[layer]

    @property
    def delta(self) -> np.ndarray:
        """``F(x) − F(x₀)`` per sample ``(n, [K])``."""
        return self.f_x - self.f_baseline

    def relative_error(self, layer: str) -> np.ndarray:
        """Per-sample |Σ C − ΔF| / |ΔF| ``(n, [K])`` (inf where ΔF = 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.completeness[layer]) / np.abs(self.delta)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per layer completeness summary (see :func:`completeness_summary`)."""
        return {n: completeness_summary(e, self.delta) for n, e in self.completeness.items()}


def fit_reference(model: nn.Module, target: Target, reference: InputSource, batch_size: int = 256,
                  device: torch.device | None = None, dtype: torch.dtype | None = None,
                  quiet: bool | None = None) -> Target:
    """Fit a target that needs reference statistics (surprisal's μ, Σ) from the model's outputs over
    ``reference`` (in chunks of ``batch_size`` samples); returns ``target``, fitted."""
    device = resolve_device(device)
    outs = []
    with prepared_model(model, device, dtype), torch.no_grad():
        first = next(iter(model.parameters()), None)
        run_dtype = dtype or (first.dtype if first is not None else torch.get_default_dtype())
        chunks = reference.iter_chunks(batch_size)
        total = None if reference.n is None else -(-reference.n // batch_size)
        for _, x in progress(chunks, desc="reference pass", total=total, quiet=quiet, unit="chunk"):
            outs.append(model(x.to(device=device, dtype=run_dtype)).flatten(1).double().cpu())
    if not outs:
        raise ContributionError("reference: no samples to compute the surprisal statistics from")
    target.fit(torch.cat(outs))
    return target


def resolve_batch_size(engine: ContributionEngine, source: InputSource, batch_size: int | str | None) -> int:
    """``"auto"`` → from the memory budget; else the given positive integer."""
    if batch_size == "auto" or batch_size is None:
        return engine.auto_batch_size(source.sample_shape())
    b = int(batch_size)
    if b < 1:
        raise ContributionError(f"batch_size: expected a positive integer or 'auto', found {batch_size!r}")
    return b


def per_sample_baseline(baseline: Any, source: InputSource) -> torch.Tensor | None:
    """A tensor baseline with one row per input sample ``(n, ...)`` (sliced chunk by chunk); ``None`` for a
    scalar or one-sample baseline."""
    if not isinstance(baseline, torch.Tensor):
        return None
    shape = source.sample_shape()
    if baseline.ndim != len(shape) + 1 or baseline.shape[0] == 1:
        return None
    if source.n is not None and baseline.shape[0] != source.n:
        raise ContributionError(f"baseline: expected a scalar, one sample {tuple(shape)} or one per input sample "
                                f"({source.n}, {', '.join(map(str, shape))}); found {tuple(baseline.shape)}")
    return baseline


class Sink(Protocol):
    """Where :func:`run` puts the chunks: ``begin`` (inside the engine's block, before any chunk) returns
    the chunk size to use and the chunk indices this process computes (``None``: every chunk, in one pass);
    ``write`` takes chunk ``k``; ``abort`` is called on an error (it may return the exception to raise
    instead); ``close`` always; ``finish(finished, engine)`` after the engine's block gives :func:`run`'s
    return value."""

    desc: str
    needs_length: bool

    def begin(self, engine: ContributionEngine, source: InputSource, chunk: int,
              ctx: DistContext) -> tuple[int, list[int] | None]: ...

    def write(self, k: int, bins: np.ndarray, result: ChunkResult) -> None: ...

    def abort(self, err: BaseException) -> BaseException | None: ...

    def close(self) -> None: ...

    def finish(self, finished: bool, engine: ContributionEngine) -> Any: ...


class MemorySink:
    """Collects every chunk on the host; :meth:`finish` concatenates them into a :class:`ContributionResult`."""

    desc = "contributions"
    needs_length = False

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}
        self.errs: dict[str, list[np.ndarray]] = {}
        self.fx: list[np.ndarray] = []
        self.f0: list[np.ndarray] = []
        self.bins: list[np.ndarray] = []
        self.source: InputSource | None = None

    def begin(self, engine: ContributionEngine, source: InputSource, chunk: int,
              ctx: DistContext) -> tuple[int, list[int] | None]:
        self.parts = {n: [] for n in engine.layers}
        self.errs = {n: [] for n in engine.layers}
        self.source = source
        return chunk, None

    def write(self, k: int, bins: np.ndarray, result: ChunkResult) -> None:
        for n in self.parts:
            self.parts[n].append(result.contributions[n].cpu().numpy())
            self.errs[n].append(result.error[n].cpu().numpy())
        self.fx.append(result.f_x.cpu().numpy())
        self.f0.append(result.f_baseline.cpu().numpy())
        self.bins.append(bins)

    def abort(self, err: BaseException) -> BaseException | None:
        return None

    def close(self) -> None:
        pass

    def finish(self, finished: bool, engine: ContributionEngine) -> ContributionResult:
        if not self.bins:
            raise ContributionError("inputs: no samples to compute contributions for")
        settings = engine.describe()
        settings["source"] = self.source.description
        return ContributionResult(
            layers={n: np.concatenate(v) for n, v in self.parts.items()},
            f_x=np.concatenate(self.fx), f_baseline=np.concatenate(self.f0),
            completeness={n: np.concatenate(v) for n, v in self.errs.items()},
            bins=np.concatenate(self.bins), settings=settings,
        )


def run(model: nn.Module, inputs: Any, spec: ContributionSpec, options: RunOptions, sink: Sink, *,
        split: str | None = "test", history: int | None = None, reference: Any = None,
        ctx: DistContext | None = None, max_chunks: int | None = None) -> Any:
    """Contributions of ``spec`` over ``inputs`` (a tensor ``(n, ...)``, a Recording's ``split`` windows or a
    DataLoader) run as ``options`` say, chunk by chunk into ``sink``; returns ``sink.finish(...)``.

    ``reference``: the input whose model outputs fit a target that needs statistics (surprisal's μ, Σ;
    default ``inputs``), fitted on rank 0 and broadcast. ``max_chunks`` stops after that many new chunks.
    """
    ctx = DistContext() if ctx is None else ctx
    source = as_source(inputs, model, split=split, history=history)
    if sink.needs_length and source.n is None:
        raise ContributionError("inputs: the HDF5 store needs an input of known length (a tensor, a Recording or "
                                "a DataLoader over a sized dataset)")
    engine = ContributionEngine(model, spec, options)
    tgt = spec.target
    if tgt.needs_reference and not getattr(tgt, "fitted", True):
        if ctx.rank == 0:
            ref = source if reference is None else as_source(reference, model, split=split, history=history)
            fit_reference(model, tgt, ref, device=engine.device, dtype=options.dtype, quiet=options.quiet)
        moments = ctx.broadcast((tgt.mu, tgt.cov) if ctx.rank == 0 else None)
        if ctx.rank != 0:
            tgt.set_moments(*moments)
    rows = per_sample_baseline(spec.baseline, source)
    with engine:
        chunk = ctx.broadcast(resolve_batch_size(engine, source, options.batch_size) if ctx.rank == 0 else None)
        chunk, todo = sink.begin(engine, source, chunk, ctx)
        try:
            finished = _run_chunks(engine, source, chunk, todo, sink, rows, max_chunks, options.quiet)
        except BaseException as err:
            instead = sink.abort(err)
            if instead is not None:
                raise instead from err
            raise
        finally:
            sink.close()
    return sink.finish(finished, engine)


def _run_chunks(engine: ContributionEngine, source: InputSource, chunk: int, todo: list[int] | None,
                sink: Sink, rows: torch.Tensor | None, max_chunks: int | None, quiet: bool | None) -> bool:
    """Compute chunks ``todo`` (``None``: all, one pass over the input, also of unknown length) into
    ``sink``: one pass over each run of consecutive chunks, so a DataLoader is read once, not once per
    chunk. True when every chunk asked for was computed (``max_chunks`` not reached first)."""
    if todo is None:
        spans: list[tuple[int, int | None]] = [(0, None)]
        total = None if source.n is None else -(-source.n // chunk)
    else:
        spans = list(bin_chunks(np.asarray(todo), max(len(todo), 1)))
        total = len(todo)
    bar = progress(total=total, desc=sink.desc, quiet=quiet, unit="chunk")
    new = 0
    try:
        for first, stop in spans:
            chunks = source.iter_chunks(chunk, first * chunk, None if stop is None else min(source.n, stop * chunk))
            k = first
            while stop is None or k < stop:
                if max_chunks is not None and new >= max_chunks:
                    return False
                bins, x = next(chunks, (None, None))
                if x is None:
                    if stop is None:
                        break
                    raise ContributionError(f"inputs: expected {source.n} samples; the input ended before chunk {k} "
                                            f"(samples {k * chunk}…)")
                a = k * chunk
                result = engine.compute(x) if rows is None else engine.compute(x, rows[a:a + len(x)])
                sink.write(k, bins, result)
                new += 1
                k += 1
                bar.update(1)
    finally:
        bar.close()
    return todo is None or new == len(todo)
