"""Model receptive fields under white noise: mean input gradient, and reverse correlation of model rates.

Both are computed in the model's input units (z-scored stimulus): white noise is drawn there directly,
binary (``±contrast``) or Gaussian (standard deviation ``contrast``). For a linear–nonlinear model
``r = f(k·x)`` both estimates are proportional to the filter ``k``: the mean gradient is
``E[f'(k·x)]·k`` exactly, and reverse correlation ``E[r x] / E[r]`` is ``∝ k`` for Gaussian noise
(Bussgang) and approximately so for binary noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ReceptiveFieldError
from ..progress import progress
from ..torch_utils.fft_conv import fft_inference
from .correlate import WindowCorrelator
from .irf import input_jacobian, model_device, model_dtype, model_window

__all__ = ["model_sta_gradient", "model_reverse_correlation", "white_noise"]


def white_noise(shape: tuple[int, ...], generator: torch.Generator, kind: str = "binary",
                contrast: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """White noise of ``shape``, float32: ``"binary"`` (±contrast) or ``"gaussian"`` (σ = contrast)."""
    if kind == "binary":
        x = torch.randint(0, 2, shape, generator=generator, device=device).float() * 2.0 - 1.0
    elif kind == "gaussian":
        x = torch.randn(shape, generator=generator, device=device)
    else:
        raise ReceptiveFieldError(f"kind: expected 'binary' or 'gaussian', found {kind!r}")
    return x * float(contrast)


def _frame_shape(model: nn.Module, frame_shape: Sequence[int] | None) -> tuple[int, int]:
    if frame_shape is not None:
        return (int(frame_shape[0]), int(frame_shape[1]))
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ReceptiveFieldError("frame_shape: the model has no input_spec; pass frame_shape=(H, W)")
    return (spec.height, spec.width)


def _noise_setup(model: nn.Module, history: int | None, frame_shape: Sequence[int] | None,
                 seed: int) -> tuple[int, tuple[int, int], torch.device, torch.Generator]:
    """``(history, (H, W), the model's device, a generator seeded with seed on it)`` for white-noise probes."""
    history, _ = model_window(model, history)
    dev = model_device(model)
    return history, _frame_shape(model, frame_shape), dev, torch.Generator(device=dev).manual_seed(seed)


def model_sta_gradient(
    model: nn.Module,
    cells: Sequence[int],
    n_samples: int = 2048,
    *,
    batch_size: int = 64,
    kind: str = "binary",
    contrast: float = 1.0,
    history: int | None = None,
    frame_shape: Sequence[int] | None = None,
    seed: int = 0,
    quiet: bool | None = None,
) -> np.ndarray:
    """Mean input gradient of each chosen cell's rate over white-noise windows: ``(C, h, H, W)`` float64."""
    history, hw, dev, gen = _noise_setup(model, history, frame_shape, seed)
    total = torch.zeros((len(cells), history) + hw, dtype=torch.float64, device=dev)
    done = 0
    with fft_inference(model):  # eval mode, frozen weights; FFT convolutions on a CPU
        for _ in progress(range(-(-n_samples // batch_size)), desc="model STA", quiet=quiet):
            b = min(batch_size, n_samples - done)
            x = white_noise((b, history) + hw, gen, kind, contrast, dev).to(model_dtype(model))
            total += input_jacobian(model, x, cells).sum(0).double()
            done += b
    return (total / done).cpu().numpy()


def model_reverse_correlation(
    model: nn.Module,
    cells: Sequence[int] | None = None,
    n_frames: int = 20000,
    *,
    batch_size: int = 512,
    kind: str = "binary",
    contrast: float = 1.0,
    history: int | None = None,
    frame_shape: Sequence[int] | None = None,
    seed: int = 0,
    quiet: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rate-weighted mean window (the model's STA) over a white-noise movie of ``n_frames`` frames.

    The movie is generated chunk by chunk (each chunk reuses the previous chunk's last ``h-1`` frames), the
    model's rates weight the windows (:class:`~retina_codec.rf.correlate.WindowCorrelator`), so memory does
    not grow with ``n_frames``. Returns ``(sta (C, h, H, W) float64, mean rate per cell (C,))``.
    """
    history, hw, dev, gen = _noise_setup(model, history, frame_shape, seed)
    corr: WindowCorrelator | None = None
    tail = white_noise((history - 1,) + hw, gen, kind, contrast, dev)
    n_bins = 0
    with fft_inference(model), torch.no_grad():  # eval mode; FFT convolutions on a CPU
        for _ in progress(range(-(-n_frames // batch_size)), desc="reverse correlation", quiet=quiet):
            b = min(batch_size, n_frames - n_bins)
            frames = torch.cat([tail, white_noise((b,) + hw, gen, kind, contrast, dev)])
            wins = frames.unfold(0, history, 1).permute(0, 3, 1, 2)  # (b, h, H, W), window b = frames[b:b+h]
            rates = model(wins.contiguous().to(model_dtype(model)))
            if cells is not None:
                rates = rates[:, list(cells)]
            if corr is None:
                corr = WindowCorrelator(rates.shape[1], history, hw, device=dev, dtype=torch.float64)
            corr.update(frames.double(), rates.double())
            tail = frames[-(history - 1):] if history > 1 else frames[:0]
            n_bins += b
    assert corr is not None
    return corr.mean(), corr.weight_sum / max(n_bins, 1)
