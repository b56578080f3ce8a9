"""Causal tests of modes: ablate or preserve a mode's top channels at a named layer (docs/definitions.md#interventions).

A mode's atom (d,) ranks the layer's C channels (with the E/I split, d = 2C ordered [negative, positive]
and a channel's weight is ``|a_c⁻| + |a_c⁺|``). **Ablate** zeroes the top fraction ``p`` of channels at
every position; **preserve** zeroes all the others. The zeroing is a forward hook that exists only inside
a ``with`` block and is removed on exit, also on error.

A sweep over ``p`` measures a target and an off-target output (mean rate of target vs off-target cells,
or accuracy on target vs other classes), each as a ratio to the unmodified model. Its summary is the
selectivity ``(AUC_target − AUC_off) / AUC_off`` of the effect curves over p ∈ [0, 1]: the drop
``1 − ratio`` for ablation, the retained ``ratio`` for preservation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ModesError
from ..models.base import get_module
from ..torch_utils.hooks import replace_outputs

__all__ = ["channel_weights", "top_channels", "zero_channels", "ablate_mode", "preserve_mode",
           "SweepResult", "intervention_sweep", "mean_rate", "accuracy_on", "model_outputs"]


def channel_weights(atom: np.ndarray | torch.Tensor, n_channels: int, ei_split: bool = True) -> np.ndarray:
    """Weight ``(C,)`` of each channel in a mode's ``atom``: ``|a⁻_c| + |a⁺_c|`` with the E/I split, else ``|a_c|``."""
    a = np.abs(np.asarray(atom.detach().cpu() if isinstance(atom, torch.Tensor) else atom, dtype=np.float64))
    expected = 2 * n_channels if ei_split else n_channels
    if a.shape != (expected,):
        raise ModesError(f"atom: expected shape ({expected},) for {n_channels} channels"
                         f"{' with the E/I split' if ei_split else ''}; found {a.shape}")
    return a[:n_channels] + a[n_channels:] if ei_split else a


def top_channels(atom: np.ndarray | torch.Tensor, n_channels: int, fraction: float,
                 ei_split: bool = True) -> np.ndarray:
    """Indices of the ``round(fraction · C)`` channels with the largest weight (ties: lower index first)."""
    if not 0.0 <= fraction <= 1.0:
        raise ModesError(f"fraction: expected a value in [0, 1]; found {fraction}")
    w = channel_weights(atom, n_channels, ei_split)
    n = int(math.floor(fraction * n_channels + 0.5))
    return np.argsort(-w, kind="stable")[:n]


@contextlib.contextmanager
def zero_channels(model: nn.Module, layer: str, channels: Sequence[int], channel_dim: int = 1,
                  n_channels: int | None = None) -> Iterator[None]:
    """Zero ``channels`` of ``layer``'s output (all positions) while the ``with`` block runs.

    ``n_channels``: the channel count the indices refer to (e.g. that of the mode's atom); a forward whose
    output has another count along ``channel_dim`` (or too few for the indices) raises :class:`ModesError`.
    """
    get_module(model, layer)  # an unknown layer: LayerNotFoundError naming the model's layers
    idx = torch.as_tensor(np.asarray(channels, dtype=np.int64))
    need = int(idx.max()) + 1 if idx.numel() else 0

    def zero(out: torch.Tensor) -> torch.Tensor:
        found = out.shape[channel_dim]
        if (n_channels is not None and found != n_channels) or found < need:
            expected = n_channels if n_channels is not None else f">= {need}"
            raise ModesError(f"layer {layer!r}: expected {expected} channels along dim {channel_dim} (the mode's "
                             f"atom; E/I-split atoms hold 2 per channel); found output shape {tuple(out.shape)}")
        if idx.numel() == 0:
            return out
        keep = torch.ones(out.shape[channel_dim], dtype=out.dtype, device=out.device)
        keep[idx.to(out.device)] = 0
        shape = [1] * out.ndim
        shape[channel_dim] = -1
        return out * keep.view(shape)

    with replace_outputs(model, {layer: zero}):
        yield


def _n_channels(n_channels: int | None, atom_len: int, ei_split: bool) -> int:
    if n_channels is not None:
        return int(n_channels)
    return atom_len // 2 if ei_split else atom_len


@contextlib.contextmanager
def ablate_mode(model: nn.Module, layer: str, atom: np.ndarray | torch.Tensor, fraction: float, *,
                ei_split: bool = True, n_channels: int | None = None, channel_dim: int = 1) -> Iterator[np.ndarray]:
    """Zero the mode's top ``fraction`` of channels at ``layer``; yields the zeroed channel indices."""
    c = _n_channels(n_channels, len(atom), ei_split)
    chans = top_channels(atom, c, fraction, ei_split)
    with zero_channels(model, layer, chans, channel_dim, n_channels=c):
        yield chans


@contextlib.contextmanager
def preserve_mode(model: nn.Module, layer: str, atom: np.ndarray | torch.Tensor, fraction: float, *,
                  ei_split: bool = True, n_channels: int | None = None,
                  channel_dim: int = 1) -> Iterator[np.ndarray]:
    """Keep only the mode's top ``fraction`` of channels at ``layer`` (zero the rest); yields the kept ones."""
    c = _n_channels(n_channels, len(atom), ei_split)
    kept = top_channels(atom, c, fraction, ei_split)
    others = np.setdiff1d(np.arange(c), kept)
    with zero_channels(model, layer, others, channel_dim, n_channels=c):
        yield kept


# ------------------------------------------------------------------------------------------- sweeps
Measure = Callable[[torch.Tensor], float]


def mean_rate(cells: Sequence[int]) -> Measure:
    """Measure: mean model output over samples and the given cells (outputs ``(n, n_cells)``)."""
    idx = list(cells)
    return lambda out: float(out[:, idx].double().mean())


def accuracy_on(labels: np.ndarray | torch.Tensor, classes: Sequence[int]) -> Measure:
    """Measure: top-1 accuracy (outputs = logits ``(n, n_classes)``) on samples whose label is in ``classes``."""
    y = torch.as_tensor(np.asarray(labels))
    sel = torch.isin(y, torch.as_tensor(list(classes)))
    if not bool(sel.any()):
        raise ModesError(f"classes: none of {list(classes)} occurs in labels")
    return lambda out: float((out[sel].argmax(1).cpu() == y[sel]).double().mean())


@dataclass
class SweepResult:
    """Target and off-target outputs over fractions p, as ratios to the unmodified model.

    ``fractions (P,)``; ``target``, ``off_target (P,)`` ratios; ``kind`` ablate|preserve;
    ``auc_target``, ``auc_off`` areas under the effect curves; ``selectivity`` = (AUC_t − AUC_off)/AUC_off.
    """

    kind: str
    fractions: np.ndarray
    target: np.ndarray
    off_target: np.ndarray
    baseline_target: float
    baseline_off: float
    auc_target: float
    auc_off: float
    selectivity: float


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


@torch.no_grad()
def model_outputs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model(inputs)`` in batches of ``batch_size`` on the model's device, float32 on the CPU."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.cat([model(inputs[i:i + batch_size].to(dev)).float().cpu()
                      for i in range(0, inputs.shape[0], batch_size)])


def intervention_sweep(model: nn.Module, layer: str, atom: np.ndarray | torch.Tensor, inputs: torch.Tensor,
                       target: Measure, off_target: Measure, *, kind: str = "ablate",
                       fractions: Sequence[float] = tuple(np.linspace(0.0, 1.0, 9)), ei_split: bool = True,
                       n_channels: int | None = None, channel_dim: int = 1,
                       batch_size: int = 256) -> SweepResult:
    """Ablate (or preserve) the mode's top-p channels for every p in ``fractions`` and measure both outputs.

    ``inputs (n, ...)`` are run through ``model`` (eval mode expected) in batches; ``target`` and
    ``off_target`` map the outputs ``(n, ...)`` to a positive number (see :func:`mean_rate`,
    :func:`accuracy_on`). Returns a :class:`SweepResult`.
    """
    if kind not in ("ablate", "preserve"):
        raise ModesError(f"kind: expected 'ablate' or 'preserve'; found {kind!r}")
    ps = np.asarray(sorted(fractions), dtype=np.float64)
    if ps.size < 2 or ps[0] < 0 or ps[-1] > 1:
        raise ModesError(f"fractions: expected at least two values in [0, 1]; found {list(fractions)}")
    base = model_outputs(model, inputs, batch_size)
    b_t, b_o = target(base), off_target(base)
    if b_t == 0 or b_o == 0:
        raise ModesError(f"target/off_target: the unmodified model scores {b_t} / {b_o}; ratios need non-zero")
    ctx = ablate_mode if kind == "ablate" else preserve_mode
    t = np.empty(ps.size)
    o = np.empty(ps.size)
    for i, p in enumerate(ps):
        with ctx(model, layer, atom, float(p), ei_split=ei_split, n_channels=n_channels, channel_dim=channel_dim):
            out = model_outputs(model, inputs, batch_size)
        t[i], o[i] = target(out) / b_t, off_target(out) / b_o
    effect_t, effect_o = (1.0 - t, 1.0 - o) if kind == "ablate" else (t, o)
    auc_t, auc_o = _auc(ps, effect_t), _auc(ps, effect_o)
    sel = (auc_t - auc_o) / auc_o if auc_o != 0 else (math.inf if auc_t > 0 else math.nan)
    return SweepResult(kind, ps, t, o, b_t, b_o, auc_t, auc_o, float(sel))
