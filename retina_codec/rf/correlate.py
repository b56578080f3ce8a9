"""Weighted sums of history windows, ``Σ_t w_i(t) · window(t)``, for many cells at once.

This is the kernel of the spike-triggered average (weights = spike counts) and of reverse correlation
(weights = model rates). For a chunk of ``B`` consecutive bins the windows overlap: bin ``b``'s window is
``G[b : b + h]`` where ``G`` holds the chunk's ``B + h - 1`` frames. The sum is therefore the lag-structured
matrix product ``S[i, j, :] = Σ_b w_i(b) G[b + j, :]`` — one matrix product ``A (N·h, B+h-1) @ G (B+h-1,
H·W)`` with ``A[i·h + j, u] = w_i(u - j)`` — and never needs the ``(B, h·H·W)`` window matrix.

Two evaluations of the same product:

``"direct"``: builds ``A`` and calls one GEMM per chunk; ``2·N·h·H·W`` flops per bin.
``"fft"``: splits the chunk into blocks of ``m`` bins, takes the real FFT (length ``L ≥ m + h - 1``, so
    the circular correlation of a block equals the linear one for lags ``0 … h-1``) of every block of
    weights and of frames, and sums the per-block products over blocks as one batched complex matrix
    product per frequency, ``conj(Wf)[ω] (N, blocks) @ Gf[ω] (blocks, H·W)``; about ``8·N·H·W·(L/2+1)/m``
    flops per bin (≈ 13× fewer than ``"direct"`` for ``h = 40``). Exact up to floating-point rounding.

Work is done in torch (``device``: GPU when present by default) and accumulated in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

__all__ = ["WindowCorrelator", "frames_of_windows", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def frames_of_windows(windows: np.ndarray) -> np.ndarray:
    """The ``B + h - 1`` consecutive frames ``(B+h-1, H, W)`` that a batch of overlapping windows
    ``(B, h, H, W)`` (as yielded by :meth:`Recording.iter_windows`) was cut from."""
    if windows.shape[0] == 0:
        return windows[:0, 0]
    return np.concatenate([windows[:, 0], windows[-1, 1:]], axis=0)


class WindowCorrelator:
    """Streaming accumulator of ``Σ_t w_i(t) window(t)`` (shape ``(N, h, H, W)``) and ``Σ_t w_i(t)``.

    Parameters
    ----------
    n_cells : number of weight columns N.
    history : window length h in frames.
    frame_shape : ``(H, W)``.
    method : ``"fft"`` (default) or ``"direct"`` (see module docstring); same result to rounding.
    device : torch device; ``None`` = CUDA when available.
    dtype : ``torch.float64`` (default; exact comparisons) or ``torch.float32`` (faster).
    """

    def __init__(self, n_cells: int, history: int, frame_shape: tuple[int, int], method: str = "fft",
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float64) -> None:
        if method not in ("fft", "direct"):
            raise ValueError(f"method: expected 'fft' or 'direct', found {method!r}")
        self.n_cells, self.history = int(n_cells), int(history)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.method, self.device, self.dtype = method, resolve_device(device), dtype
        h = self.history
        self.fft_len = int(scipy.fft.next_fast_len(max(4 * h, 32), real=True))
        self.block = self.fft_len - h + 1
        n_pix = self.frame_shape[0] * self.frame_shape[1]
        self._sum = torch.zeros((self.n_cells, h, n_pix), dtype=torch.float64, device=self.device)
        self._weight = torch.zeros(self.n_cells, dtype=torch.float64, device=self.device)
        self.n_bins = 0

    # ---- updates ----------------------------------------------------------------------------------
    def update_windows(self, windows: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor) -> None:
        """Add a batch of consecutive, overlapping windows ``(B, h, H, W)`` with weights ``(B, N)``."""
        if isinstance(windows, torch.Tensor):
            frames = torch.cat([windows[:, 0], windows[-1, 1:]], 0) if len(windows) else windows[:0, 0]
        else:
            frames = frames_of_windows(windows)
        self.update(frames, weights)

    def update(self, frames: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor) -> None:
        """Add the windows of ``B`` consecutive bins given by their frames ``(B+h-1, H, W)``, weighted
        by ``weights (B, N)`` (bin b's window is ``frames[b : b + h]``)."""
        w = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights)
        g = torch.as_tensor(frames if isinstance(frames, torch.Tensor) else np.ascontiguousarray(frames))
        b, h = w.shape[0], self.history
        if w.ndim != 2 or w.shape[1] != self.n_cells:
            raise ValueError(f"weights: expected shape (B, {self.n_cells}), found {tuple(w.shape)}")
        if g.shape != (b + h - 1,) + self.frame_shape:
            raise ValueError(f"frames: expected shape {(b + h - 1,) + self.frame_shape} for {b} bins, "
                             f"found {tuple(g.shape)}")
        if b == 0:
            return
        w = w.to(self.device, self.dtype)
        g = g.to(self.device, self.dtype).reshape(b + h - 1, -1)
        self._weight += w.sum(0).to(torch.float64)
        self.n_bins += b
        part = self._direct(g, w) if self.method == "direct" else self._fft(g, w)
        self._sum += part.to(torch.float64)

    def _direct(self, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, h = w.shape[0], self.history
        # padded[i, v] = w_i(v - (h - 1)); unfold gives [i, k, u] = w_i(u + k - (h - 1)) = A for lag h-1-k
        padded = torch.nn.functional.pad(w.T, (h - 1, h - 1))
        a = padded.unfold(1, b + h - 1, 1).flip(1)  # (N, h, B+h-1): a[i, j, u] = w_i(u - j)
        return (a.reshape(-1, b + h - 1) @ g).reshape(self.n_cells, h, -1)

    def _fft(self, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, h, m, n_fft = w.shape[0], self.history, self.block, self.fft_len
        nb = -(-b // m)
        w = torch.nn.functional.pad(w, (0, 0, 0, nb * m - b))  # (nb·m, N)
        g = torch.nn.functional.pad(g, (0, 0, 0, nb * m - b))  # (nb·m + h - 1, P)
        wf = torch.fft.rfft(w.reshape(nb, m, -1), n=n_fft, dim=1)  # (nb, F, N)
        gb = g.unfold(0, m + h - 1, m)  # (nb, P, m + h - 1)
        gf = torch.fft.rfft(gb, n=n_fft, dim=2)  # (nb, P, F)
        prod = torch.matmul(wf.permute(1, 2, 0).conj(), gf.permute(2, 0, 1))  # (F, N, P)
        corr = torch.fft.irfft(prod, n=n_fft, dim=0)[:h]  # (h, N, P)
        return corr.permute(1, 0, 2)

    # ---- results ----------------------------------------------------------------------------------
    @property
    def weight_sum(self) -> np.ndarray:
        """``Σ_t w_i(t)`` per cell, (N,) float64."""
        return self._weight.cpu().numpy()

    def sums(self) -> np.ndarray:
        """``Σ_t w_i(t) window(t)``, (N, h, H, W) float64."""
        return self._sum.reshape((self.n_cells, self.history) + self.frame_shape).cpu().numpy()

    def mean(self) -> np.ndarray:
        """Weighted mean window per cell, (N, h, H, W) float64; NaN for cells with zero total weight."""
        tot = self.weight_sum
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums() / np.where(tot == 0, np.nan, tot)[:, None, None, None]
