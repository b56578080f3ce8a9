"""Instantaneous receptive fields: ``IRF_i(t) = ∂ rate_i / ∂ window(t)``, shape ``(h, H, W)``.

For any torch model mapping windows ``(B, h, H, W)`` to rates ``(B, N)``, the IRFs of ``C`` chosen cells
at ``B`` bins come from one forward pass and one batched backward pass (``is_grads_batched``: the ``C``
one-hot output gradients are vmapped), falling back to ``C`` backward passes for models whose operations
have no batching rule. The model is put in eval mode for the call (so BatchNorm and noise layers act per
sample and every sample's rates depend on its own window only) and restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelContractError
from ..models.base import input_norm, model_windows, warn_frame_rate
from ..models.contract import window_spec
from ..progress import progress
from ..recordings import Recording
from ..torch_utils.fft_conv import fft_inference

__all__ = ["eval_mode", "fast_input_gradients", "model_device", "model_dtype", "input_jacobian", "iter_irfs", "instantaneous_rfs",
           "model_window"]


def fast_input_gradients(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Within the block, a CPU model's large-kernel convolutions run as FFTs with frozen weights (their input
    gradient is then one FFT pair: IRFs of a retina BN-CNN ≈ 1.5× faster on two cores, benchmarks/RESULTS.md);
    see :func:`~retina_codec.torch_utils.fft_conv.fft_inference`. Eval mode only on other devices."""
    return fft_inference(model)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore its previous mode on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for parameter-free models)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first parameter (float32 for parameter-free models)."""
    p = next(model.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def model_window(model: nn.Module, history: int | None = None, offset: int | None = None) -> tuple[int, int]:
    """``(history, offset)`` from the model's checked ``input_spec`` (arguments win; a module without one
    needs ``history``): :func:`~retina_codec.models.contract.window_spec`."""
    return window_spec(model, history, offset, "receptive fields")


def input_jacobian(model: nn.Module, x: torch.Tensor, cells: Sequence[int],
                   batched: bool | None = None) -> torch.Tensor:
    """``∂ rate_c(x_b) / ∂ x_b`` for every sample b and chosen cell c: ``(B, C, h, H, W)``.

    ``x`` is ``(B, h, H, W)`` on the model's device; the model must be in eval mode (per-sample outputs).
    ``batched=None`` tries the vmapped backward and falls back to a loop over cells.
    """
    cells = [int(c) for c in cells]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ModelContractError(
                f"model output: expected rates ({x.shape[0]}, N), found {tuple(out.shape)}"
                + ("; wrap a time-resolved (B, T', N) model first: retina_codec.models.wrap(module, ...) takes its "
                   "last step" if out.ndim == 3 else ""))
        sel = out[:, cells]  # (B, C)
        n_c = len(cells)
        if batched is not False and n_c > 1:
            eye = torch.eye(n_c, dtype=sel.dtype, device=sel.device)
            go = eye[:, None, :].expand(n_c, x.shape[0], n_c)
            try:
                (g,) = torch.autograd.grad(sel, x, go, is_grads_batched=True, retain_graph=False)
                return g.transpose(0, 1)
            except RuntimeError:
                if batched:
                    raise
        grads = []
        for k in range(n_c):
            (g,) = torch.autograd.grad(sel[:, k].sum(), x, retain_graph=k < n_c - 1)
            grads.append(g)
        return torch.stack(grads, 1)


def iter_irfs(
    model: nn.Module,
    recording: Recording,
    bins: np.ndarray | None = None,
    cells: Sequence[int] | None = None,
    *,
    split: str | None = None,
    history: int | None = None,
    offset: int | None = None,
    batch_size: int = 64,
    normalize: bool = True,
    with_rates: bool = False,
    quiet: bool | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """Stream IRFs: yields ``(bins (B,), irfs (B, C, h, H, W) tensor, rates (B, N) or None)`` per batch.

    ``bins`` (sorted) overrides ``split``; windows come from :meth:`Recording.iter_windows`, z-scored by
    default as the model expects: with the model's ``norm_stats`` when it carries them (as
    :func:`~retina_codec.models.predict` and the contributions do), else the recording's train statistics.
    ``cells`` defaults to every model output. IRFs are per unit of the z-scored stimulus.
    """
    history, offset = model_window(model, history, offset)
    dev, dtype = model_device(model), model_dtype(model)
    if bins is None:
        bins = recording.window_bins(split, history, offset)
    bins = np.asarray(bins, dtype=np.int64)
    warn_frame_rate(model, recording)
    mean, std = input_norm(model, recording) if normalize else (0.0, 1.0)

    def windows(bb: np.ndarray, size: int) -> Iterator:
        for batch in recording.iter_windows(bins=bb, history=history, offset=offset, batch_size=size,
                                            normalize=False):
            yield batch, model_windows(batch.stimulus, mean, std, dev, dtype)

    if len(bins) == 0:  # nothing to yield (and no window to find the number of outputs from)
        return
    with fft_inference(model):  # eval mode, frozen weights; FFT convolutions on a CPU
        if cells is None:
            with torch.no_grad():
                n_out = model(next(windows(bins[:1], 1))[1]).shape[1]
            cells = list(range(n_out))
        for batch, x in progress(windows(bins, batch_size), desc="IRF", total=-(-len(bins) // batch_size),
                                 quiet=quiet):
            jac = input_jacobian(model, x, cells)
            rates = None
            if with_rates:
                with torch.no_grad():
                    rates = model(x)
            yield batch.bins, jac, rates


def instantaneous_rfs(model: nn.Module, recording: Recording, bins: Sequence[int], cells: Sequence[int],
                      **kw: object) -> np.ndarray:
    """IRFs of ``cells`` at ``bins``: ``(len(bins), len(cells), h, H, W)`` float32 (bins in given order).

    Holds the whole result in memory: for long stretches of bins use :func:`iter_irfs` or the streamed
    mode-conditioned averages (:mod:`retina_codec.rf.conditioned`).
    """
    bins = np.asarray(bins, dtype=np.int64)
    order = np.argsort(bins, kind="stable")
    parts = [j.cpu().numpy() for _, j, _ in iter_irfs(model, recording, bins[order], cells, **kw)]
    if not parts:
        history, _ = model_window(model, kw.get("history"))  # type: ignore[arg-type]
        return np.zeros((0, len(cells), history) + tuple(recording.frame_shape), np.float32)
    out = np.concatenate(parts)
    res = np.empty_like(out)
    res[order] = out
    return res
