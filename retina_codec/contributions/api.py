"""``contributions()``: per-layer CODEC contributions of a model over a tensor, a Recording or a DataLoader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import progress
from ..torch_utils.devices import resolve_device
from ..torch_utils.hooks import prepared_model
from .engine import ContributionEngine
from .sources import InputSource, as_source
from .targets import Target, make_target

__all__ = ["contributions", "ContributionResult", "completeness_summary", "fit_reference", "resolve_batch_size",
           "per_sample_baseline"]


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
    """Fit a target that needs reference statistics (surprisal's μ, Σ) from the model's outputs."""
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
        raise ValueError("reference: no samples to compute the surprisal statistics from")
    target.fit(torch.cat(outs))
    return target


def resolve_batch_size(engine: ContributionEngine, source: InputSource, batch_size: int | str) -> int:
    """``"auto"`` → from the memory budget; else the given positive integer."""
    if batch_size == "auto" or batch_size is None:
        return engine.auto_batch_size(source.sample_shape())
    b = int(batch_size)
    if b < 1:
        raise ValueError(f"batch_size: expected a positive integer or 'auto', found {batch_size!r}")
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
        raise ValueError(f"baseline: expected a scalar, one sample {tuple(shape)} or one per input sample "
                         f"({source.n}, {', '.join(map(str, shape))}); found {tuple(baseline.shape)}")
    return baseline


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
    engine_options : further :class:`~.engine.ContributionEngine` settings (``fold_batchnorm``,
        ``autotune``, ``stem``).

    For outputs too large for memory use :func:`~.store.write_contributions`, which streams to HDF5.
    """
    source = as_source(inputs, model, split=split, history=history)
    tgt = make_target(target)
    engine = ContributionEngine(model, layers, tgt, method, steps, rule, baseline, reduce, device, dtype,
                                fast_conv=fast_conv, channels_last=channels_last,
                                autocast=autocast, **engine_options)
    if tgt.needs_reference and not getattr(tgt, "fitted", True):
        ref = source if reference is None else as_source(reference, model, split=split, history=history)
        fit_reference(model, tgt, ref, device=engine.device, dtype=dtype, quiet=quiet)
    parts: dict[str, list] = {n: [] for n in engine.layers}
    errs: dict[str, list] = {n: [] for n in engine.layers}
    fx, f0, bins = [], [], []
    rows = per_sample_baseline(baseline, source)
    pos = 0
    with engine:
        b = resolve_batch_size(engine, source, batch_size)
        total = None if source.n is None else -(-source.n // b)
        for idx, x in progress(source.iter_chunks(b), desc="contributions", total=total, quiet=quiet,
                               unit="chunk"):
            r = engine.compute(x) if rows is None else engine.compute(x, rows[pos:pos + len(x)])
            pos += len(x)
            for n in engine.layers:
                parts[n].append(r.contributions[n].cpu().numpy())
                errs[n].append(r.error[n].cpu().numpy())
            fx.append(r.f_x.cpu().numpy())
            f0.append(r.f_baseline.cpu().numpy())
            bins.append(idx)
        settings = engine.describe()
    if not bins:
        raise ValueError("inputs: no samples to compute contributions for")
    settings["source"] = source.description
    return ContributionResult(
        layers={n: np.concatenate(v) for n, v in parts.items()},
        f_x=np.concatenate(fx), f_baseline=np.concatenate(f0),
        completeness={n: np.concatenate(v) for n, v in errs.items()},
        bins=np.concatenate(bins), settings=settings,
    )
