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

Work is done in torch (``device``: GPU when present by default; scipy's threaded FFT on CPU) and
accumulated in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

__all__ = ["WindowCorrelator", "frames_of_windows", "resolve_device"]


def _rfft(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Real FFT along ``dim`` zero-padded to ``n``: scipy's (multi-threaded, faster) on CPU, torch's on GPU."""
    if x.device.type != "cpu":
        return torch.fft.rfft(x, n=n, dim=dim)
    return torch.from_numpy(scipy.fft.rfft(x.numpy(), n=n, axis=dim, workers=torch.get_num_threads()))


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


def _copy_into(dst: torch.Tensor, src: np.ndarray | torch.Tensor) -> None:
    """Copy (and cast) frames into a slice of the compute buffer without an intermediate array."""
    if isinstance(src, torch.Tensor):
        dst.copy_(src)
    elif dst.device.type == "cpu":
        np.copyto(dst.numpy(), src, casting="unsafe")
    else:
        dst.copy_(torch.from_numpy(np.require(src, requirements=["C", "W"])))


class WindowCorrelator:
    """Streaming accumulator of ``Σ_t w_i(t) window(t)`` (shape ``(N, h, H, W)``) and ``Σ_t w_i(t)``.

    Parameters
    ----------
    n_cells : number of weight columns N.
    history : window length h in frames.
    frame_shape : ``(H, W)``.
    method : ``"fft"`` (default) or ``"direct"`` (see module docstring); same result to rounding.
    device : torch device; ``None`` = CUDA when available.
    dtype : compute precision, ``torch.float32`` (default, ~2× faster) or ``torch.float64``; the running
        sums are float64 either way (float32 matches pyret's float64 STA to ~1e-7).
    """

    def __init__(self, n_cells: int, history: int, frame_shape: tuple[int, int], method: str = "fft",
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
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
        self._spectrum: torch.Tensor | None = None  # (F, N, P) complex, method "fft"
        self._buf: torch.Tensor | None = None
        self.n_bins = 0

    # ---- updates ----------------------------------------------------------------------------------
    def _rows(self, b: int) -> int:
        """Frame rows the compute buffer needs for ``b`` bins (the FFT path pads to whole blocks)."""
        if self.method == "direct":
            return b + self.history - 1
        return -(-b // self.block) * self.block + self.history - 1

    def update_windows(self, windows: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor) -> None:
        """Add a batch of consecutive, overlapping windows ``(B, h, H, W)`` with weights ``(B, N)``.

        The frames are copied once, into the compute buffer (never the ``(B, h·H·W)`` window matrix).
        """
        b, h = windows.shape[0], self.history
        if tuple(windows.shape[1:]) != (h,) + self.frame_shape:
            raise ValueError(f"windows: expected shape (B, {h}, {self.frame_shape[0]}, {self.frame_shape[1]}), "
                             f"found {tuple(windows.shape)}")
        if b == 0:
            return
        buf = self._buffer(b)
        _copy_into(buf[:b], windows[:, 0])
        _copy_into(buf[b : b + h - 1], windows[-1, 1:])
        self._accumulate(buf, weights, b)

    def update(self, frames: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor) -> None:
        """Add the windows of ``B`` consecutive bins given by their frames ``(B+h-1, H, W)``, weighted
        by ``weights (B, N)`` (bin b's window is ``frames[b : b + h]``)."""
        b, h = len(weights), self.history
        if tuple(frames.shape) != (b + h - 1,) + self.frame_shape:
            raise ValueError(f"frames: expected shape {(b + h - 1,) + self.frame_shape} for {b} bins, "
                             f"found {tuple(frames.shape)}")
        if b == 0:
            return
        buf = self._buffer(b)
        _copy_into(buf[: b + h - 1], frames)
        self._accumulate(buf, weights, b)

    def _buffer(self, b: int) -> torch.Tensor:
        """The compute buffer for ``b`` bins, reused between chunks (only its padding is zeroed)."""
        rows = self._rows(b)
        if self._buf is None or self._buf.shape[0] < rows:
            self._buf = torch.empty((rows,) + self.frame_shape, dtype=self.dtype, device=self.device)
        buf = self._buf[:rows]
        buf[b + self.history - 1 :] = 0
        return buf

    def _accumulate(self, buf: torch.Tensor, weights: np.ndarray | torch.Tensor, b: int) -> None:
        w = torch.as_tensor(weights).to(self.device, self.dtype)
        if w.ndim != 2 or w.shape != (b, self.n_cells):
            raise ValueError(f"weights: expected shape ({b}, {self.n_cells}), found {tuple(w.shape)}")
        self._weight += w.sum(0).to(torch.float64)
        self.n_bins += b
        g = buf.reshape(buf.shape[0], -1)
        if self.method == "direct":
            self._sum += self._direct(g, w).to(torch.float64)
        else:
            self._fft(g, w)

    def _direct(self, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, h = w.shape[0], self.history
        # padded[i, v] = w_i(v - (h - 1)); unfold gives [i, k, u] = w_i(u + k - (h - 1)) = A for lag h-1-k
        padded = torch.nn.functional.pad(w.T, (h - 1, h - 1))
        a = padded.unfold(1, b + h - 1, 1).flip(1)  # (N, h, B+h-1): a[i, j, u] = w_i(u - j)
        return (a.reshape(-1, b + h - 1) @ g).reshape(self.n_cells, h, -1)

    def _fft(self, g: torch.Tensor, w: torch.Tensor) -> None:
        b, h, m, n_fft = w.shape[0], self.history, self.block, self.fft_len
        nb = -(-b // m)
        w = torch.nn.functional.pad(w, (0, 0, 0, nb * m - b))  # (nb·m, N)
        n_pix = g.shape[1]
        # blocks[u, k] = g[k·m + u] for u < m + h - 1: block k's frames, time first
        blocks = g.as_strided((m + h - 1, nb, n_pix), (n_pix, m * n_pix, 1))
        gf = _rfft(blocks, n_fft, 0)  # (F, nb, P)
        wf = _rfft(w.reshape(nb, m, -1), n_fft, 1)  # (nb, F, N)
        a = wf.permute(1, 2, 0).conj().resolve_conj().contiguous()  # (F, N, nb)
        prod = torch.matmul(a, gf)  # (F, N, P)
        if self._spectrum is None:
            self._spectrum = torch.zeros(prod.shape, dtype=torch.complex128, device=self.device)
        self._spectrum += prod

    def _fold_spectrum(self) -> None:
        """Move the frequency-domain running sum into the lag-domain one (one inverse FFT)."""
        if self._spectrum is not None:
            corr = torch.fft.irfft(self._spectrum, n=self.fft_len, dim=0)[: self.history]  # (h, N, P)
            self._sum += corr.permute(1, 0, 2)
            self._spectrum = None

    # ---- results ----------------------------------------------------------------------------------
    @property
    def weight_sum(self) -> np.ndarray:
        """``Σ_t w_i(t)`` per cell, (N,) float64."""
        return self._weight.cpu().numpy()

    def sums(self) -> np.ndarray:
        """``Σ_t w_i(t) window(t)``, (N, h, H, W) float64."""
        self._fold_spectrum()
        return self._sum.reshape((self.n_cells, self.history) + self.frame_shape).cpu().numpy()

    def mean(self) -> np.ndarray:
        """Weighted mean window per cell, (N, h, H, W) float64; NaN for cells with zero total weight."""
        tot = self.weight_sum
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums() / np.where(tot == 0, np.nan, tot)[:, None, None, None]
