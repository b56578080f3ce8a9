"""Spatial and temporal kernels of the simulated retina, and a stateful causal filter.

Temporal kernels are indexed by lag in frames: ``k[tau]`` weighs the input ``tau`` frames ago, and
``k[0] == 0`` always, so every output in bin t depends on frames ``<= t - 1`` only.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from ..errors import SimulationError

__all__ = ["dog", "gaussian_weights", "biphasic_kernel", "delayed_exponential", "CausalFilter",
           "to_window_order"]


def dog(center: np.ndarray, size: int, sigma_c: float, sigma_s: float, surround: float) -> np.ndarray:
    """Difference of Gaussians on a ``size x size`` pixel grid, ``(n, size, size)`` float64.

    ``center`` is ``(n, 2)`` ``(row, col)`` in pixels (pixel i covers ``[i - 0.5, i + 0.5)``). Each
    Gaussian is normalised to unit volume; the surround is scaled by ``surround`` (so the DC gain is
    ``1 - surround``).
    """
    center = np.atleast_2d(np.asarray(center, np.float64))
    yy = np.arange(size, dtype=np.float64)
    dy2 = (yy[None, :] - center[:, :1]) ** 2          # (n, size)
    dx2 = (yy[None, :] - center[:, 1:2]) ** 2
    r2 = dy2[:, :, None] + dx2[:, None, :]             # (n, size, size)

    def g(s: float) -> np.ndarray:
        return np.exp(-r2 / (2 * s * s)) / (2 * np.pi * s * s)

    return g(sigma_c) - surround * g(sigma_s)


def gaussian_weights(src: np.ndarray, dst: np.ndarray, sigma: float, cutoff: float = 3.0) -> np.ndarray:
    """``(len(src), len(dst))`` Gaussian weights of the distance between two sets of ``(y, x)`` points.

    Weights beyond ``cutoff * sigma`` are zero; rows are not normalised.
    """
    d2 = ((np.asarray(src)[:, None, :] - np.asarray(dst)[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma * sigma))
    w[d2 > (cutoff * sigma) ** 2] = 0.0
    return w


def _gamma_lobe(lags: np.ndarray, order: int, tau: float) -> np.ndarray:
    x = np.maximum(lags, 0.0) / tau
    lobe = x**order * np.exp(-x)
    return lobe / lobe.sum()


def biphasic_kernel(n_lags: int, order: int, tau_fast: float, tau_slow: float, biphasic: float,
                    delay: int = 1) -> np.ndarray:
    """``(n_lags,)`` float64 biphasic temporal kernel by lag (``k[0] = 0``).

    ``k(tau) = G(tau - delay; order, tau_fast) - biphasic * G(tau - delay; order, tau_slow)`` with
    ``G(x; n, T) ∝ (x / T)^n exp(-x / T)`` normalised to unit sum, then tapered to zero over the last
    quarter of the lags and scaled to unit peak. Lags ``< delay`` are zero (``delay >= 1``).
    """
    if delay < 1:
        raise SimulationError(f"delay: expected >= 1 frame (causal), found {delay}")
    lags = np.arange(n_lags, dtype=np.float64) - delay
    k = _gamma_lobe(lags, order, tau_fast) - biphasic * _gamma_lobe(lags, order, tau_slow)
    k[: delay] = 0.0
    n_taper = max(n_lags // 4, 1)
    k[-n_taper:] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, n_taper + 1)[1:]))
    return k / np.abs(k).max()


def delayed_exponential(n_lags: int, delay: int, tau: float) -> np.ndarray:
    """``(n_lags,)`` low-pass kernel by lag: zero before ``delay`` (>= 1), then ``exp(-(lag - delay) / tau)``,
    unit sum."""
    if delay < 1:
        raise SimulationError(f"delay: expected >= 1 frame (causal), found {delay}")
    lags = np.arange(n_lags, dtype=np.float64)
    k = np.where(lags >= delay, np.exp(-(lags - delay) / tau), 0.0)
    return k / k.sum()


def to_window_order(kernel: np.ndarray, history: int) -> np.ndarray:
    """A by-lag kernel in window order (oldest frame first) for ``offset=1`` windows of ``history`` frames.

    Window index ``j`` holds frame ``t - history + j``, i.e. lag ``history - j``; lag 0 is not in the window
    and must be zero.
    """
    kernel = np.asarray(kernel, np.float64)
    if kernel[0] != 0:
        raise SimulationError("kernel[0] must be 0: with offset=1 the window does not hold the current frame")
    if len(kernel) > history + 1:
        raise SimulationError(f"kernel of {len(kernel)} lags does not fit a {history}-frame window")
    out = np.zeros(history)
    lags = np.arange(1, len(kernel))
    out[history - lags] = kernel[1:]
    return out


class CausalFilter:
    """FIR filter along time applied chunk by chunk, keeping the state between chunks.

    ``kernel`` is by lag (``(n_lags,)``), applied to ``(n, C)`` chunks: ``y[t] = sum_tau k[tau] x[t - tau]``
    with zero input before the first chunk.
    """

    def __init__(self, kernel: np.ndarray, n_channels: int):
        self.kernel = np.asarray(kernel, np.float64)
        self.state = np.zeros((len(self.kernel) - 1, n_channels))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] == 0:  # no channels (e.g. no LN cells): scipy refuses empty axes
            return np.zeros(x.shape)
        y, self.state = lfilter(self.kernel, [1.0], x, axis=0, zi=self.state)
        return y
