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

``"int8"``: ``"direct"`` with exact integer arithmetic, for binary stimuli and integer weights (spike
    counts): a chunk whose frames take only two values ``lo < hi`` (binary white noise, raw or z-scored)
    becomes ``lo + (hi - lo)·k`` with ``k ∈ {0, 1}`` int8, the weights are int8, and the product is one
    int8 GEMM with int32 accumulation (``torch._int_mm``; VNNI on CPU: ≈ 8× the float32 GEMM rate here).
    The result ``(hi - lo)·Σ w k + lo·Σ w`` is exact up to the final float64 scaling. Checking that a chunk
    qualifies costs two comparison passes over its frames.
``"auto"``: ``"int8"`` for every chunk that qualifies (on CPU), ``"fft"`` for the others.

Work is done in torch (``device``: GPU when present by default; scipy's threaded FFT on CPU); the
``"fft"`` spectra of up to ``_SPECTRUM_CHUNKS`` chunks are summed in the compute precision, everything else
in float64.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import torch

from ..errors import ReceptiveFieldError
from ..recordings.windows import frames_of_windows
from ..torch_utils.devices import resolve_device

__all__ = ["WindowCorrelator", "frames_of_windows", "lag_product_parts", "assemble_lag_product", "resolve_device", "two_level_codes"]

METHODS = ("auto", "fft", "direct", "int8")


def _rfft(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Real FFT along ``dim`` zero-padded to ``n``: scipy's (multi-threaded, faster) on CPU, torch's on GPU."""
    if x.device.type != "cpu":
        return torch.fft.rfft(x, n=n, dim=dim)
    return torch.from_numpy(scipy.fft.rfft(x.numpy(), n=n, axis=dim, workers=torch.get_num_threads()))


def _frames_view(windows: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor | None:
    """The ``(B+h-1, H, W)`` frames under a strided window view (as made by ``history_windows``), without a
    copy; ``None`` when ``windows`` is not such a view (then the frames must be copied out)."""
    st = windows.stride() if isinstance(windows, torch.Tensor) else windows.strides
    b, h, hh, ww = windows.shape
    shape = (b + h - 1, hh, ww)
    if st[0] != st[1]:
        return None
    if isinstance(windows, torch.Tensor):
        return windows.as_strided(shape, st[1:]) if windows.device.type == "cpu" else None
    return np.lib.stride_tricks.as_strided(windows, shape, st[1:], writeable=False)


_POOL: ThreadPoolExecutor | None = None
_ROWS_PER_STEP = 64  # rows compared at a time per thread (both comparisons while the block is in cache)


def _pool() -> ThreadPoolExecutor:
    """Threads for the numpy comparison passes (numpy releases the GIL)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()), thread_name_prefix="rf-int8")
    return _POOL


_SPECTRUM_CHUNKS = 8  # the FFT path sums this many chunks' spectra in the compute precision, then folds
_KARATSUBA = False  # int8 path: three half-length GEMMs (≈ 0.76 of the multiply-adds); slower under load, see RESULTS
_INT32_SUM_LIMIT = 2**31 - 1  # the int8 path folds its int32 sums into float64 before they could exceed this
_BITS = {np.dtype(np.float32): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.int64)}


def _count_levels(x: np.ndarray, hit: np.ndarray, lo: float, hi: float) -> int:
    """Number of elements of ``x`` (2-D) equal to ``lo`` or ``hi``; marks ``x == hi`` in ``hit`` (bool)."""
    n = 0
    other = np.empty((min(_ROWS_PER_STEP, len(x)),) + x.shape[1:], np.bool_)
    for a in range(0, len(x), _ROWS_PER_STEP):
        xs, hs = x[a : a + _ROWS_PER_STEP], hit[a : a + _ROWS_PER_STEP]
        n += int(np.count_nonzero(np.equal(xs, hi, out=hs)))
        if lo != hi:
            n += int(np.count_nonzero(np.equal(xs, lo, out=other[: len(xs)])))
    return n


def two_level_codes(x: np.ndarray, out: np.ndarray | None = None,
                    levels: tuple[float, float] | None = None) -> tuple[np.ndarray, float, float] | None:
    """Exact two-level code of an array: ``(k, lo, hi)`` with ``x == lo + (hi - lo)·k`` elementwise and
    ``k`` in {0, 1} (int8, ``x``'s shape), or ``None`` when ``x`` takes more than two values.

    ``levels`` is a guess (e.g. the previous chunk's levels; by default the min and max of ``x``'s first
    row); it is verified, and the levels are recomputed from all of ``x`` when it is wrong. ``out``:
    optional int8 buffer of ``x``'s shape. Cost: two comparisons per element, split over threads.
    """
    x = np.asarray(x)
    out = np.empty(x.shape, np.int8) if out is None else out
    if x.size == 0:
        return out, 0.0, 0.0
    rows = len(x)
    flat_x, hit = x.reshape(rows, -1), out.view(np.bool_).reshape(rows, -1)
    n_parts = min(rows, max(1, torch.get_num_threads()))
    cuts = np.linspace(0, rows, n_parts + 1).astype(int)
    first = flat_x[0]
    guesses = [levels if levels is not None else (first.min(), first.max()), None]
    for guess in guesses:
        lo, hi = (float(v) for v in guess) if guess is not None else (float(x.min()), float(x.max()))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return None
        xs, lo_key, hi_key = flat_x, lo, hi
        if x.dtype in _BITS:  # compare bit patterns (exact, and ≈ 15 % faster than float comparisons)
            xs = flat_x.view(_BITS[x.dtype])
            lo_key, hi_key = (np.array(v, x.dtype).view(_BITS[x.dtype])[()] for v in (lo, hi))
        elif x.dtype.kind in "iub":  # stored integer codes (uint8 frames): compare in their own dtype
            if lo != int(lo) or hi != int(hi):
                continue
            lo_key, hi_key = x.dtype.type(int(lo)), x.dtype.type(int(hi))
        jobs = [(xs[a:b], hit[a:b], lo_key, hi_key) for a, b in zip(cuts[:-1], cuts[1:])]
        found = (_pool().map(lambda job: _count_levels(*job), jobs) if n_parts > 1
                 else [_count_levels(*jobs[0])])
        if sum(found) == x.size:
            return out, lo, hi
    return None


def _int8_weights(w: np.ndarray | torch.Tensor) -> np.ndarray | None:
    """Weights as int8 when every one is an integer in [-128, 127] (spike counts), else ``None``."""
    w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    if w.size == 0:
        return w.astype(np.int8)
    w8 = w.astype(np.int8)
    return w8 if np.array_equal(w8, w) else None


def _lag_matrix(w: np.ndarray, h: int) -> np.ndarray:
    """``a[i·h + j, u] = w[u - j, i]`` (zero outside ``0 ≤ u - j < B``), ``(N·h, B+h-1)``: the weight of
    frame u at window position j (the matrix of :meth:`WindowCorrelator._direct`)."""
    b, n = w.shape
    wt = np.ascontiguousarray(w.T)
    a = np.zeros((n, h, b + h - 1), w.dtype)
    for j in range(h):
        a[:, j, j : j + b] = wt
    return a.reshape(n * h, b + h - 1)


def _int8_gemm(k: np.ndarray, w: np.ndarray, lags: int) -> np.ndarray:
    """``(P, N·lags)`` int32 ``Σ_b w[b, i] k[b + j, p]`` as one int8 GEMM ``kᵀ @ aᵀ`` with the lag matrix
    ``a`` (both views: oneDNN splits the P rows over threads better than in ``a @ k``).

    ``torch._int_mm`` on the CPU returns garbage for these transposed views when a dimension is 1 (one
    pixel: full-field flicker; or one frame: h = 1 and a one-bin chunk): those go through numpy in int32."""
    a = _lag_matrix(w, lags)
    if k.shape[0] == 1 or k.shape[1] == 1:
        return k.T.astype(np.int32) @ a.T.astype(np.int32)
    return torch._int_mm(torch.from_numpy(k).T, torch.from_numpy(a).T).numpy()


def karatsuba_fits(w: np.ndarray) -> bool:
    """Whether the sums of even and odd weight rows stay in int8 (needed by the Karatsuba split)."""
    w16 = w.astype(np.int16)
    return len(w) >= 2 and bool(np.abs(w16[0::2][: len(w) // 2] + w16[1::2]).max() <= 127)


def lag_product_parts(k: np.ndarray, w: np.ndarray, h: int, karatsuba: bool) -> list[np.ndarray]:
    """Int32 partial products whose :func:`assemble_lag_product` is ``S[p, i, j] = Σ_b w[b, i] k[b + j, p]``
    for int8 frames ``k (B+h-1, P)`` and int8 weights ``w (B, N)``; linear, so parts can be summed over
    chunks before assembling.

    Plain: ``[S]``, one GEMM with ``N·h·(B+h-1)·P`` multiply-adds. Karatsuba (``karatsuba_fits(w)``, sums of
    two frame codes in int8, e.g. binary codes; h ≥ 2):
    with bins and frames split by parity, ``P1 = w_e ⋆ k_e``, ``P2 = w_o ⋆ k_o``, ``P3 = (w_e + w_o) ⋆
    (k_o + k_e[1:])`` (``⋆``: lagged correlation); three half-length GEMMs, ≈ 0.76 of the multiply-adds.
    """
    b, n = w.shape
    if not karatsuba:
        return [_int8_gemm(k, w, h)]
    n_pix = k.shape[1]
    be, he, ho = (b + 1) // 2, (h + 1) // 2, h // 2
    n1 = max(he, ho + 1)
    w_e = w[0::2]
    w_o = np.zeros_like(w_e)
    w_o[: b // 2] = w[1::2]
    k_e = np.zeros((be + n1 - 1, n_pix), np.int8)
    k_o = np.zeros((be + he - 1, n_pix), np.int8)
    ev, od = k[0::2][: len(k_e)], k[1::2][: len(k_o)]
    k_e[: len(ev)], k_o[: len(od)] = ev, od
    k_s = k_o[: be + ho - 1] + k_e[1 : be + ho]  # 0 … 2 for binary codes
    return [_int8_gemm(k_e, w_e, n1), _int8_gemm(k_o, w_o, he), _int8_gemm(k_s, w_e + w_o, ho)]


def assemble_lag_product(parts: list[np.ndarray], n: int, h: int) -> np.ndarray:
    """``S (P, N, h)`` int32 from (summed) :func:`lag_product_parts`: even lags ``S[2q] = P1[q] + P2[q]``,
    odd lags ``S[2q+1] = P3[q] − P1[q+1] − P2[q]``."""
    if len(parts) == 1:
        return parts[0].reshape(-1, n, h)
    he, ho = (h + 1) // 2, h // 2
    p1, p2, p3 = (p.reshape(p.shape[0], n, -1) for p in parts)
    out = np.empty((p1.shape[0], n, h), np.int32)
    np.add(p1[:, :, :he], p2[:, :, :he], out=out[:, :, 0::2])
    odd = out[:, :, 1::2]
    np.subtract(p3, p1[:, :, 1 : ho + 1], out=odd)
    odd -= p2[:, :, :ho]
    return out


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
    method : ``"fft"`` (default), ``"direct"``, ``"int8"`` (binary frames and integer weights only; CPU) or
        ``"auto"`` (``"int8"`` for each chunk that qualifies, else ``"fft"``); see the module docstring.
        All give the same result to rounding.
    device : torch device; ``None`` = CUDA when available.
    dtype : compute precision, ``torch.float32`` (default, ~2× faster) or ``torch.float64``; the lag-domain
        running sums are float64 either way (``"fft"`` sums the spectra of up to ``_SPECTRUM_CHUNKS`` chunks
        in the compute precision first; float32 matches pyret's float64 STA to ~1e-7).
    """

    def __init__(self, n_cells: int, history: int, frame_shape: tuple[int, int], method: str = "fft",
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        if method not in METHODS:
            raise ReceptiveFieldError(f"method: expected one of {METHODS}, found {method!r}")
        self.n_cells, self.history = int(n_cells), int(history)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.method, self.device, self.dtype = method, resolve_device(device), dtype
        if method == "int8" and self.device.type != "cpu":
            raise ReceptiveFieldError(f"method 'int8' runs on the CPU only, found device {self.device}")
        # chunks that do not qualify for int8 (method "auto") use the FFT
        self._float_method = "direct" if method == "direct" else "fft"
        self._int8 = method in ("int8", "auto") and self.device.type == "cpu" and hasattr(torch, "_int_mm")
        self._codes: np.ndarray | None = None  # int8 frame codes, reused between chunks
        self._levels: tuple[float, float] | None = None  # two frame values of the pending int8 sums
        self._raw_levels: tuple[float, float] | None = None  # the same as stored codes (update_codes)
        # exact int32 sums of the int8 chunks with these levels (lag_product_parts); their Σ w and 2 Σ |w|
        self._code_parts: list[np.ndarray] = []
        self._code_karatsuba = False
        self._code_weight = np.zeros(self.n_cells, np.int64)
        self._code_bound = np.zeros(self.n_cells, np.int64)  # bounds |Σ w k| (int32 overflow guard)
        self._code_pending = False
        h = self.history
        self.fft_len = int(scipy.fft.next_fast_len(max(4 * h, 32), real=True))
        self.block = self.fft_len - h + 1
        n_pix = self.frame_shape[0] * self.frame_shape[1]
        self._n_pix = n_pix
        self._sum: torch.Tensor | None = None  # (N, h, P) float64, allocated by the first addition
        self._weight = torch.zeros(self.n_cells, dtype=torch.float64, device=self.device)
        self._spectrum: torch.Tensor | None = None  # (F, N, P) complex, method "fft"
        self._spectrum_chunks = 0  # chunks summed in _spectrum since the last fold
        self._buf: torch.Tensor | None = None
        self.n_bins = 0

    # ---- updates ----------------------------------------------------------------------------------
    def _rows(self, b: int) -> int:
        """Frame rows the compute buffer needs for ``b`` bins (the FFT path pads to whole blocks)."""
        if self._float_method == "direct":
            return b + self.history - 1
        return -(-b // self.block) * self.block + self.history - 1

    def update_windows(self, windows: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor) -> None:
        """Add a batch of consecutive, overlapping windows ``(B, h, H, W)`` with weights ``(B, N)``.

        The frames are copied once, into the compute buffer (never the ``(B, h·H·W)`` window matrix).
        """
        b, h = windows.shape[0], self.history
        if tuple(windows.shape[1:]) != (h,) + self.frame_shape:
            raise ReceptiveFieldError(f"windows: expected shape (B, {h}, {self.frame_shape[0]}, {self.frame_shape[1]}), "
                             f"found {tuple(windows.shape)}")
        if b == 0:
            return
        if self._int8:
            frames = _frames_view(windows)
            if frames is None:
                frames = frames_of_windows(np.asarray(windows))
            if self._update_int8(frames, weights):
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
            raise ReceptiveFieldError(f"frames: expected shape {(b + h - 1,) + self.frame_shape} for {b} bins, "
                             f"found {tuple(frames.shape)}")
        if b == 0:
            return
        if self._int8 and self._update_int8(frames, weights):
            return
        buf = self._buffer(b)
        _copy_into(buf[: b + h - 1], frames)
        self._accumulate(buf, weights, b)

    def update_codes(self, raw: np.ndarray, weights: np.ndarray | torch.Tensor, scale: float = 1.0,
                     offset: float = 0.0) -> bool:
        """Add ``B`` bins' windows from *stored* frame values ``raw (B+h-1, H, W)`` (e.g. a recording's uint8
        codes) whose frames are ``raw · scale + offset``, through the exact int8 path without forming float
        frames. Returns ``False``, adding nothing, when the chunk does not qualify (not two-level integer
        codes, non-integer weights, method not int8/auto, not on the CPU): then add it with :meth:`update`."""
        b, h = len(weights), self.history
        if tuple(raw.shape) != (b + h - 1,) + self.frame_shape:
            raise ReceptiveFieldError(f"raw frames: expected shape {(b + h - 1,) + self.frame_shape} for {b} bins, "
                             f"found {tuple(raw.shape)}")
        if not self._int8 or np.asarray(raw).dtype.kind not in "iub":
            return False
        if b == 0:
            return True
        return self._update_int8(raw, weights, affine=(float(scale), float(offset)), strict=False)

    def _buffer(self, b: int) -> torch.Tensor:
        """The compute buffer for ``b`` bins, reused between chunks (only its padding is zeroed)."""
        rows = self._rows(b)
        if self._buf is None or self._buf.shape[0] < rows:
            self._buf = torch.empty((rows,) + self.frame_shape, dtype=self.dtype, device=self.device)
        buf = self._buf[:rows]
        buf[b + self.history - 1 :] = 0
        return buf

    def _update_int8(self, frames: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor,
                     affine: tuple[float, float] | None = None, strict: bool | None = None) -> bool:
        """Method ``"int8"`` for one chunk; ``False`` (nothing added) when the chunk does not qualify and
        the method is ``"auto"``. ``affine = (scale, offset)``: ``frames`` are stored codes of the frames
        ``frames · scale + offset``. ``strict`` (default: method ``"int8"``) raises instead of returning
        ``False``."""
        b, h = len(weights), self.history
        w8 = _int8_weights(weights)
        if w8 is not None and w8.shape != (b, self.n_cells):
            raise ReceptiveFieldError(f"weights: expected shape ({b}, {self.n_cells}), found {tuple(w8.shape)}")
        x = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        x = x.reshape(b + h - 1, -1)
        codes = None
        if w8 is not None:
            rows, n_pix = x.shape
            if self._codes is None or self._codes.shape[0] < rows:
                self._codes = np.empty((rows, n_pix), np.int8)
            codes = two_level_codes(x, self._codes[:rows], self._raw_levels if affine else self._levels)
        if codes is None:
            if (self.method == "int8") if strict is None else strict:
                raise ReceptiveFieldError("method 'int8': expected frames with two values and integer weights in "
                                 "[-128, 127] (binary noise, spike counts); use 'auto' to fall back to 'fft'")
            return False
        k, lo, hi = codes
        if affine is not None:  # code levels → frame values
            self._raw_levels = (lo, hi)
            lo, hi = lo * affine[0] + affine[1], hi * affine[0] + affine[1]
        if self._levels != (lo, hi):
            self._fold_codes()
            self._levels = (lo, hi)
        # exact: int8 × int8 products summed in int32; the parts stay below 2 Σ |w| < 2^31 by folding
        karatsuba = _KARATSUBA and h >= 2 and karatsuba_fits(w8)
        w_abs = 2 * np.abs(w8, dtype=np.int64).sum(0)
        if self._code_pending and (karatsuba != self._code_karatsuba
                                   or (self._code_bound + w_abs).max() > _INT32_SUM_LIMIT):
            self._fold_codes()
        parts = lag_product_parts(k, w8, h, karatsuba)
        if not self._code_pending:
            self._code_parts, self._code_karatsuba = parts, karatsuba
        else:
            for acc, part in zip(self._code_parts, parts):
                np.add(acc, part, out=acc)
        w_sum = w8.sum(0, dtype=np.int64)
        self._code_pending = True
        self._code_weight += w_sum
        self._code_bound += w_abs
        self._weight += torch.from_numpy(w_sum.astype(np.float64)).to(self.device)
        self.n_bins += b
        return True

    def _add_to_sum(self, t: torch.Tensor) -> None:
        """Add ``(N, h, P)`` float64 to the lag-domain running sum (the first addition is kept as is)."""
        if self._sum is None:
            self._sum = t.to(self.device, torch.float64).contiguous()
        else:
            self._sum += t.to(self.device)

    def _fold_codes(self) -> None:
        """Move the exact integer sums of the int8 chunks (all with levels ``lo, hi``) into the float64 sum:
        ``Σ w x = (hi - lo)·Σ w k + lo·Σ w``."""
        if self._code_pending and self._levels is not None:
            lo, hi = self._levels
            code_sum = assemble_lag_product(self._code_parts, self.n_cells, self.history)  # (P, N, h)
            total = np.array(code_sum.transpose(1, 2, 0), dtype=np.float64, order="C")
            total *= hi - lo
            total += lo * self._code_weight[:, None, None].astype(np.float64)
            self._add_to_sum(torch.from_numpy(total))
            self._code_weight[:] = 0
            self._code_bound[:] = 0
            self._code_pending = False

    def _accumulate(self, buf: torch.Tensor, weights: np.ndarray | torch.Tensor, b: int) -> None:
        w = torch.as_tensor(weights).to(self.device, self.dtype)
        if w.ndim != 2 or w.shape != (b, self.n_cells):
            raise ReceptiveFieldError(f"weights: expected shape ({b}, {self.n_cells}), found {tuple(w.shape)}")
        self._weight += w.sum(0).to(torch.float64)
        self.n_bins += b
        g = buf.reshape(buf.shape[0], -1)
        if self._float_method == "direct":
            self._add_to_sum(self._direct(g, w))
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
        if self._spectrum is None:  # in the compute precision; folded into the float64 sum every few chunks
            self._spectrum = torch.zeros((gf.shape[0], self.n_cells, n_pix), dtype=gf.dtype, device=self.device)
        self._spectrum.baddbmm_(a.to(gf.dtype), gf)  # (F, N, P) += (F, N, nb) @ (F, nb, P)
        self._spectrum_chunks += 1
        if self._spectrum_chunks >= _SPECTRUM_CHUNKS:
            self._fold_spectrum()

    def _fold_spectrum(self) -> None:
        """Move the frequency-domain running sum into the lag-domain one (one inverse FFT)."""
        if self._spectrum is not None:
            if self._spectrum.device.type == "cpu":  # scipy's threaded inverse FFT, in the compute precision
                spec = self._spectrum.numpy()
                corr = torch.from_numpy(scipy.fft.irfft(spec, n=self.fft_len, axis=0,
                                                        workers=torch.get_num_threads())[: self.history])
            else:
                corr = torch.fft.irfft(self._spectrum, n=self.fft_len, dim=0)[: self.history]  # (h, N, P)
            self._add_to_sum(corr.permute(1, 0, 2))
            self._spectrum = None
            self._spectrum_chunks = 0

    # ---- results ----------------------------------------------------------------------------------
    @property
    def weight_sum(self) -> np.ndarray:
        """``Σ_t w_i(t)`` per cell, (N,) float64."""
        return self._weight.cpu().numpy()

    def sums(self) -> np.ndarray:
        """``Σ_t w_i(t) window(t)``, (N, h, H, W) float64."""
        self._fold_spectrum()
        self._fold_codes()
        if self._sum is None:
            return np.zeros((self.n_cells, self.history) + self.frame_shape)
        return self._sum.reshape((self.n_cells, self.history) + self.frame_shape).cpu().numpy()

    def mean(self) -> np.ndarray:
        """Weighted mean window per cell, (N, h, H, W) float64; NaN for cells with zero total weight."""
        tot = self.weight_sum
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums() / np.where(tot == 0, np.nan, tot)[:, None, None, None]
