"""FFT evaluation of large-kernel 2-D convolutions (same outputs as ``nn.Conv2d`` to float rounding).

A retina CNN's convolutions have large kernels on small images (15×15 on 50×50, 11×11 on 36×36) and few
channels, a shape that direct convolution kernels handle poorly. In the frequency domain a convolution is
one multiply-add per channel pair and frequency: with the input zero-padded to ``(H', W')`` the circular
cross-correlation ``irfft2(rfft2(x) · conj(rfft2(w)))`` equals the valid cross-correlation on its first
``H' − kH + 1`` rows and ``W' − kW + 1`` columns, so no wrap-around padding is needed.

:class:`FFTConv2d` wraps an existing ``nn.Conv2d`` (sharing its parameters) and is differentiable in its
input (autograd through ``rfft2`` / ``irfft2``); the weight spectrum is cached while the weight is frozen.
:func:`fft_conv_swaps` lists the convolutions of a model worth swapping, for
:func:`~retina_codec.torch_utils.hooks.swap_modules`; :func:`fft_convolutions` swaps them in for a block
of training and :func:`fft_inference` for a block of evaluation (predictions, validation, IRFs, model STAs).

Which convolution path runs where is decided in one place, :func:`conv_speed_policy`: every caller (the
contributions engine, training, evaluation, :class:`~retina_codec.models.layers.FastCPUConv2d`) asks it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import prepared_model, swap_modules

__all__ = ["FFTConv2d", "fft_conv_eligible", "fft_conv_swaps", "fft_convolutions", "fft_inference", "ConvSpeed",
           "conv_speed_policy", "model_device", "FAST_CONV", "CONV_PURPOSES"]

FAST_CONV = ("auto", "fft", "native")
CONV_PURPOSES = ("train", "inference", "contributions")


@dataclass(frozen=True)
class ConvSpeed:
    """Which convolution paths to take: ``fft`` — large-kernel ``nn.Conv2d`` (stride 1, kernel side ≥ 7) as
    :class:`FFTConv2d`; ``weight_grad_as_conv`` — :class:`~retina_codec.models.layers.FastCPUConv2d` computes
    its weight gradient as one forward convolution."""

    fft: bool
    weight_grad_as_conv: bool


def conv_speed_policy(device: torch.device | str | None, purpose: str, fast_conv: str = "auto") -> ConvSpeed:
    """The one rule for convolution speed paths (same numbers to float rounding; timings in
    benchmarks/RESULTS.md).

    ``device``: where the model runs (``None``: a model without parameters, treated as the CPU);
    ``purpose``: ``"train"``, ``"inference"`` or ``"contributions"``; ``fast_conv``: ``"fft"`` always FFTs,
    ``"native"`` never, ``"auto"`` where measured faster — the CPU (a full-size retina BN-CNN trains ≈ 1.7–2×,
    predicts ≈ 2×, computes IRFs ≈ 1.5× and contributions ≈ 15 % faster there), not a GPU (cuDNN picks its own
    algorithm; untimed there). The weight gradient as a forward convolution: training on the CPU.
    """
    kind = "cpu" if device is None else torch.device(device).type
    return _policy(kind, purpose, fast_conv)


@functools.lru_cache(maxsize=64)
def _policy(kind: str, purpose: str, fast_conv: str) -> ConvSpeed:
    if purpose not in CONV_PURPOSES:
        raise ValueError(f"purpose: expected one of {CONV_PURPOSES}, found {purpose!r}")
    if fast_conv not in FAST_CONV:
        raise ValueError(f"fast_conv: expected one of {FAST_CONV}, found {fast_conv!r}")
    cpu = kind == "cpu"
    return ConvSpeed(fft=fast_conv == "fft" or (fast_conv == "auto" and cpu),
                     weight_grad_as_conv=purpose == "train" and cpu)


def model_device(model: nn.Module) -> torch.device | None:
    """The device of ``model``'s first parameter (``None`` without parameters)."""
    first = next(model.parameters(), None)
    return None if first is None else first.device


def fft_conv_eligible(conv: nn.Module, min_kernel: int = 7) -> bool:
    """True for a plain ``nn.Conv2d`` (stride 1, dilation 1, one group, zero padding) with a kernel side ≥
    ``min_kernel``."""
    if not isinstance(conv, nn.Conv2d) or isinstance(conv, FFTConv2d):
        return False
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
        return False
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    return min(conv.kernel_size) >= min_kernel


class FFTConv2d(nn.Module):
    """The convolution of ``conv`` evaluated with real FFTs; ``conv``'s weight and bias are shared, not copied.

    Input ``(N, C_in, H, W)`` → output ``(N, C_out, H + 2p_h − k_h + 1, W + 2p_w − k_w + 1)``, as ``conv``.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not fft_conv_eligible(conv, min_kernel=1):
            raise ValueError("FFTConv2d: needs an nn.Conv2d with stride 1, dilation 1, one group and zero padding")
        self.conv = conv
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def _spectrum(self, size: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``conj(rfft2(w))`` at the padded input size, ``(C_out, C_in, H', W'//2 + 1)`` complex."""
        w = self.conv.weight
        if w.requires_grad and torch.is_grad_enabled():
            return torch.fft.rfft2(w.to(dtype), s=size).conj()
        key = (size, dtype, device, w._version, w.data_ptr())
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, torch.fft.rfft2(w.to(device=device, dtype=dtype), s=size).conj())
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):  # cuFFT has no bf16 (and fp16 for powers of 2 only)
            x = x.float()
        ph, pw = self.conv.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        h, w = x.shape[-2:]
        kh, kw = self.conv.kernel_size
        if h < kh or w < kw:
            raise ValueError(f"FFTConv2d: kernel {kh}x{kw} does not fit a {h}x{w} input")
        spec = self._spectrum((h, w), x.dtype, x.device)
        if spec.requires_grad:  # training the weight: plain autograd through the FFTs
            y = _correlate(x, spec, kh, kw)
        else:  # frozen weight: the input gradient is itself one FFT convolution (_FrozenFFTCorrelation)
            y = _FrozenFFTCorrelation.apply(x, spec, kh, kw)
        if self.conv.bias is not None:
            y = y + self.conv.bias.to(y.dtype).view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        c = self.conv
        return f"{c.in_channels}, {c.out_channels}, kernel_size={c.kernel_size}, padding={c.padding}"


def _correlate(x: torch.Tensor, spec: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Valid cross-correlation of ``x (N, C_in, H', W')`` with the kernels whose conjugate spectrum is ``spec``."""
    h, w = x.shape[-2:]
    yf = _mix_channels(torch.fft.rfft2(x, s=(h, w)), spec.transpose(0, 1))
    return torch.fft.irfft2(yf, s=(h, w))[..., : h - kh + 1, : w - kw + 1]


def _mix_channels(xf: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``out[n, b] = Σ_a xf[n, a] · m[a, b]`` per frequency: ``xf (N, A, H, F)``, ``m (A, B, H, F)`` →
    ``(N, B, H, F)``, as one batched matrix product over frequencies (vmappable, unlike complex einsum)."""
    # contiguous operands: CPU complex matmul of permuted views copied each of the H·F matrices separately
    # (≈ 2× slower for the retina BN-CNN's conv2 path)
    return torch.matmul(xf.permute(2, 3, 0, 1).contiguous(), m.permute(2, 3, 0, 1).contiguous()).permute(2, 3, 0, 1)


class _FrozenFFTCorrelation(torch.autograd.Function):
    """:func:`_correlate` with a hand-written input gradient.

    The adjoint of a valid cross-correlation is the full convolution of the output gradient with the
    kernel; zero-padded to the input size ``(H', W')`` it has no wrap-around (``H_out + k_h − 1 = H'``), so
    it is ``irfft2(rfft2(g) · conj(spec))`` — one FFT pair, where autograd through ``rfft2`` would take a
    full complex transform, padding and copies. Vmappable (``is_grads_batched`` for IRFs of many cells).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, spec, kh, kw):  # noqa: ANN001, ANN205
        return _correlate(x, spec, kh, kw)

    @staticmethod
    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN205
        x, spec, _, _ = inputs
        ctx.save_for_backward(spec)
        ctx.size = tuple(x.shape[-2:])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (spec,) = ctx.saved_tensors
        gf = torch.fft.rfft2(grad, s=ctx.size)  # zero-padded to the input size
        gx = torch.fft.irfft2(_mix_channels(gf, spec.conj()), s=ctx.size)
        return gx, None, None, None


def fft_conv_swaps(model: nn.Module, min_kernel: int = 7, min_in_channels: int = 1) -> dict[str, FFTConv2d]:
    """``{name: FFTConv2d(conv)}`` for every eligible convolution of ``model`` (kernel side ≥ ``min_kernel``,
    at least ``min_in_channels`` input channels)."""
    return {name: FFTConv2d(m) for name, m in model.named_modules()
            if name and fft_conv_eligible(m, min_kernel) and m.in_channels >= min_in_channels}


@contextlib.contextmanager
def fft_convolutions(model: nn.Module, purpose: str = "train") -> Iterator[nn.Module]:
    """Within the block a model's large-kernel convolutions run as FFTs where :func:`conv_speed_policy` says
    so (the CPU); the weights are shared and stay trainable (their gradient flows through the FFTs: a
    full-size retina BN-CNN trains ≈ 1.7–2× faster on two cores, benchmarks/RESULTS.md). The original modules
    are restored on exit, also after an error. A no-op elsewhere (cuDNN picks its own algorithm there).
    Inside the block ``model.state_dict()`` has the wrapped names (``conv1.conv.conv.weight``): save or load
    state outside it.
    """
    fft = conv_speed_policy(model_device(model), purpose).fft
    with swap_modules(model, fft_conv_swaps(model) if fft else {}):
        yield model


@contextlib.contextmanager
def fft_inference(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block a model is in eval mode with frozen parameters and, on a CPU, its large-kernel
    convolutions run as FFTs (their input gradient is then one FFT pair): the full-size retina BN-CNN predicts
    ≈ 2× and computes IRFs ≈ 1.5× faster on two cores (benchmarks/RESULTS.md). Modes, ``requires_grad``
    flags and modules are restored on exit, also after an error.
    """
    with prepared_model(model), fft_convolutions(model, "inference"):
        yield model
