"""``contributions()``: per-layer CODEC contributions of a model over a tensor, a Recording or a DataLoader."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..stores.contributions import completeness_summary
from .runner import (
    ContributionResult,
    MemorySink,
    fit_reference,
    per_sample_baseline,
    resolve_batch_size,
    run,
)
from .spec import build

__all__ = ["contributions", "ContributionResult", "completeness_summary", "fit_reference", "resolve_batch_size",
           "per_sample_baseline"]


def contributions(model: nn.Module, inputs: Any, layers: list[str] | str, target: Any = "sum",
                  method: str = "conductance", steps: int = 20, rule: str = "trapezoid",
                  baseline: float | torch.Tensor = 0.0, reduce: Any = ("ei_split", "spatial_sum"),
                  batch_size: int | str = "auto", device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, quiet: bool | None = None, split: str | None = "test",
                  history: int | None = None, reference: Any = None, fast_conv: str = "auto",
                  channels_last: bool | None = None, autocast: bool = False,
                  **engine_options: Any) -> ContributionResult:
    """Contributions of the hooked ``layers`` to ``target`` for every sample of ``inputs`` (in memory).

    Parameters
    ----------
    model : any ``nn.Module``; layers are its ``named_modules()`` names. ``model.affine_stem`` (names of
        leading modules affine in eval mode) enables computing the stem once.
    inputs : tensor ``(n, ...)``; a :class:`~retina_codec.recordings.Recording` (history windows of
        ``split``, z-scored with the model's stimulus statistics if it has them, else the recording's);
        or a DataLoader / iterable of batches.
    target : cell index, list of cells (per-cell, all in one batched backward), ``"sum"``,
        ``"surprisal"`` (μ, Σ from ``reference``, default the inputs), ``"top1_logit"``,
        ``"softmax_prob"``, ``"contrastive"``, a callable or a :class:`~.targets.Target`.
    method : ``"conductance"`` (rule ``"trapezoid"`` = CODEC, ``"left"`` = captum), ``"layer_ig"``,
        ``"act_grad"``, ``"act_normgrad"``; ``steps`` path steps m.
    baseline : scalar or tensor (one sample or one per sample) x₀.
    reduce : ``("ei_split", "spatial_sum")`` (16 numbers per bin for an 8-channel layer), either, or None
        for full maps.
    fast_conv : ``"fft"`` evaluates large-kernel convolutions (≥ 7×7) with FFTs, ``"native"`` never,
        ``"auto"`` where that was measured faster (the CPU; benchmarks/RESULTS.md). Same numbers to float
        rounding.
    channels_last : run 4-D layers in channels-last layout (``None``: the engine's default for the device).
    autocast : bf16 mixed precision for the forward and backward passes (GPU speed; contributions then
        carry bf16 rounding, visible in the completeness error); targets and sums stay in float32.
    quiet : progress bars off (``None``: the ``RETINA_CODEC_QUIET`` environment variable).
    engine_options : further :class:`~.spec.RunOptions` fields (``fold_batchnorm``, ``autotune``, ``stem``,
        ``batched_backward``, ``points_per_pass``).

    The settings become a :class:`~.spec.ContributionSpec` (what) and :class:`~.spec.RunOptions` (how),
    run by :func:`~.runner.run` into a :class:`~.runner.MemorySink`.

    For outputs too large for memory use :func:`~.store.write_contributions`, which streams to HDF5.
    """
    spec, options = build(layers, target, method, steps, rule, baseline, reduce, device=device, dtype=dtype,
                          batch_size=batch_size, fast_conv=fast_conv, channels_last=channels_last,
                          autocast=autocast, quiet=quiet, **engine_options)
    return run(model, inputs, spec, options, MemorySink(), split=split, history=history, reference=reference)
