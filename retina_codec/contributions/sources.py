"""Inputs to the contribution engine, cut into fixed chunks of samples (time bins).

A source knows how many samples it has (when it can) and yields ``(bins, x)`` chunks: ``bins (B,)``
int64 sample indices (time bins of a recording, running indices otherwise) and ``x (B, ...)`` float
tensors. Chunk k always holds samples ``k·chunk … (k+1)·chunk − 1`` of the source, so a resumed or
sharded run sees the same batches as a single uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..errors import ContributionError, ContributionTypeError
from ..models.base import model_norm_stats, model_windows, warn_frame_rate

__all__ = ["InputSource", "TensorSource", "RecordingSource", "LoaderSource", "as_source", "model_norm_stats"]


class InputSource:
    """Base class: ``len(source)`` samples (``None`` when unknown) iterated in fixed chunks."""

    n: int | None = None
    description: dict[str, Any]

    def iter_chunks(self, chunk: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Chunks of ``chunk`` samples covering samples ``start … stop − 1`` (``start`` a multiple of chunk)."""
        raise NotImplementedError

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample ``x[0]``."""
        raise NotImplementedError

    def first(self, k: int = 1) -> torch.Tensor:
        """The first ``k`` samples (for probing shapes and checking the stem)."""
        for _, x in self.iter_chunks(k, 0, k):
            return x
        raise ContributionError("the input has no samples")


class TensorSource(InputSource):
    """A tensor (or array) of samples ``(n, ...)``."""

    def __init__(self, x: torch.Tensor | np.ndarray) -> None:
        self.x = torch.as_tensor(x)
        self.n = int(self.x.shape[0])
        self.description = {"kind": "tensor", "shape": list(self.x.shape)}

    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def iter_chunks(self, chunk: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        stop = self.n if stop is None else min(stop, self.n)
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            yield np.arange(a, b), self.x[a:b]


class RecordingSource(InputSource):
    """History windows ``(B, history, H, W)`` of a recording's split, z-scored.

    Normalised with the model's stimulus statistics when the model carries them, else the recording's
    (:meth:`Recording.normalization`). Samples are the split's valid bins in order.
    """

    def __init__(self, recording: Any, split: str | None = "test", history: int = 40, offset: int = 1,
                 norm: tuple[float, float] | None = None) -> None:
        self.recording = recording
        self.split = split
        self.history = int(history)
        self.offset = int(offset)
        self.bins = recording.window_bins(split, self.history, self.offset)
        self.n = int(len(self.bins))
        self.norm = tuple(norm) if norm is not None else recording.normalization()
        self.description = {"kind": "recording", "stimulus": recording.stimulus_name, "split": split,
                            "history": self.history, "offset": self.offset,
                            "norm_mean": float(self.norm[0]), "norm_std": float(self.norm[1])}

    def sample_shape(self) -> tuple[int, ...]:
        return (self.history, *self.recording.frame_shape)

    def iter_chunks(self, chunk: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        stop = self.n if stop is None else min(stop, self.n)
        mean, std = self.norm
        for a in range(start, stop, chunk):
            bins = self.bins[a:min(a + chunk, stop)]
            parts = [wb.stimulus for wb in self.recording.iter_windows(
                bins=bins, history=self.history, offset=self.offset, batch_size=len(bins), normalize=False)]
            if len(parts) == 1:
                # consecutive bins: z-score the B + h − 1 frames once and view the overlapping windows, so
                # moving a chunk to the GPU moves h times fewer bytes (see engine.to_device)
                yield bins, model_windows(parts[0], mean, std)
                continue
            x = (np.concatenate(parts) - np.float32(mean)) * np.float32(1.0 / std)
            yield bins, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class LoaderSource(InputSource):
    """A DataLoader or any iterable of batches (a tensor, or a tuple/list/dict whose first item is the input)."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        ds = getattr(loader, "dataset", None)
        try:
            self.n = len(ds) if ds is not None else None
        except TypeError:
            self.n = None
        self.description = {"kind": "loader", "n": self.n}

    @staticmethod
    def _x(batch: Any) -> torch.Tensor:
        if isinstance(batch, dict):
            batch = next(iter(batch.values()))
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        return torch.as_tensor(batch)

    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.first().shape[1:])

    def _samples(self) -> Iterator[torch.Tensor]:
        for batch in self.loader:
            yield self._x(batch)

    def _fixed_chunks(self, chunk: int) -> Iterator[torch.Tensor]:
        buf: list[torch.Tensor] = []
        have = 0
        for x in self._samples():
            buf.append(x)
            have += x.shape[0]
            while have >= chunk:
                cat = torch.cat(buf) if len(buf) > 1 else buf[0]
                yield cat[:chunk]
                rest = cat[chunk:]
                buf, have = ([rest] if rest.shape[0] else []), have - chunk
        if have:
            yield torch.cat(buf) if len(buf) > 1 else buf[0]

    def iter_chunks(self, chunk: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        pos = 0
        for x in self._fixed_chunks(chunk):
            if stop is not None and pos >= stop:
                return
            if pos >= start:
                lim = x.shape[0] if stop is None else min(x.shape[0], stop - pos)
                yield np.arange(pos, pos + lim), x[:lim]
            pos += x.shape[0]


def as_source(inputs: Any, model: Any = None, split: str | None = "test", history: int | None = None,
              offset: int | None = None) -> InputSource:
    """Wrap a tensor / array, a :class:`~retina_codec.recordings.Recording` or a DataLoader as a source.

    For a recording, ``history`` / ``offset`` default to the model's ``input_spec`` (checked against the
    model contract, :func:`~retina_codec.models.contract.window_spec`; a module without one needs
    ``history``).
    """
    if isinstance(inputs, InputSource):
        return inputs
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return TensorSource(inputs)
    if hasattr(inputs, "iter_windows") and hasattr(inputs, "window_bins"):
        from ..models.contract import window_spec

        h, off = window_spec(model, history, offset, "contributions")
        warn_frame_rate(model, inputs)
        return RecordingSource(inputs, split=split, history=h, offset=off, norm=model_norm_stats(model))
    if isinstance(inputs, Iterable):
        return LoaderSource(inputs)
    raise ContributionTypeError(f"inputs: expected a tensor, a Recording or a DataLoader; found {type(inputs).__name__}")
