"""Building blocks of the retina models: training-only Gaussian noise, per-unit BatchNorm, named blocks.

Every block exposes its parts as named submodules so that other modules can hook them by name
(``"conv1.bn"``, ``"readout.linear"``); hooking a block itself gives the block's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..torch_utils.fft_conv import conv_speed_policy

__all__ = ["GaussianNoise", "UnitBatchNorm", "ConvBlock", "Readout", "FastCPUConv2d", "make_batchnorm",
           "conv_output_shape"]


class GaussianNoise(nn.Module):
    """Adds N(0, std²) noise in training mode only; the identity in eval mode (and when ``std == 0``).

    No parameters or buffers, so it never appears in a state dict.
    """

    def __init__(self, std: float = 0.05) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0.0:
            return x
        return x + self.std * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"std={self.std}"


class UnitBatchNorm(nn.BatchNorm1d):
    """torch-deep-retina's per-unit BatchNorm: one BatchNorm1d feature per element of a ``(C, H, W)`` map.

    Takes and returns ``(B, C, H, W)``; normalises the flattened ``(B, C·H·W)`` view, so every unit
    (channel × position) has its own statistics, scale and shift. Parameter names are those of
    ``nn.BatchNorm1d`` (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``).
    """

    def __init__(self, shape: tuple[int, int, int], eps: float = 1e-3, momentum: float = 0.01) -> None:
        c, h, w = (int(s) for s in shape)
        super().__init__(c * h * w, eps=eps, momentum=momentum)
        self.shape = (c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.shape[1:] != self.shape:
            raise ValueError(f"UnitBatchNorm: expected input (B, {self.shape}), found {tuple(x.shape)}")
        return super().forward(x.flatten(1)).view(x.shape)

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() != 2:
            raise ValueError(f"UnitBatchNorm: expected a flattened 2-D input, got {input.dim()}-D")

    def extra_repr(self) -> str:
        return f"shape={self.shape}, " + super().extra_repr()


class _ValidConvFn(torch.autograd.Function):
    """Valid, stride-1 conv2d whose weight gradient is computed as one forward convolution.

    ``grad_w[o, c] = Σ_b x[b, c] ⋆ g[b, o]``: a convolution of the input (batch as channels) with the
    output gradient as kernel. On CPU this is several times faster than oneDNN's weight-gradient kernel
    for the BN-CNN's large kernels (15×15 over 40 channels); the result is the same up to rounding.
    """

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(x.shape, weight, grad)
        if ctx.needs_input_grad[1]:
            gw = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1)).transpose(0, 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb


class FastCPUConv2d(nn.Conv2d):
    """``nn.Conv2d`` (valid, stride 1) that trains faster on CPU; identical state dict and outputs.

    In training mode, while its weight needs a gradient and
    :func:`~retina_codec.torch_utils.fft_conv.conv_speed_policy` picks this path (on the CPU), it runs
    :class:`_ValidConvFn`; otherwise (eval mode, GPU, no gradient) it is a plain ``nn.Conv2d``, so gradient-based analyses in eval
    mode keep autograd's usual pruning of gradients nobody asked for.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if (self.training and torch.is_grad_enabled() and self.weight.requires_grad
                and conv_speed_policy(x.device, "train").weight_grad_as_conv):
            return _ValidConvFn.apply(x, self.weight, self.bias)
        return super().forward(x)


def conv_output_shape(shape: tuple[int, int], kernel_size: int) -> tuple[int, int]:
    """``(H, W)`` after a valid (unpadded, stride-1) convolution with a square kernel."""
    out = (shape[0] - kernel_size + 1, shape[1] - kernel_size + 1)
    if min(out) < 1:
        raise ValueError(f"kernel {kernel_size}x{kernel_size} does not fit a {shape[0]}x{shape[1]} input")
    return out


def make_batchnorm(kind: str, channels: int, shape: tuple[int, int], eps: float, momentum: float) -> nn.Module:
    """``kind="channel"``: BatchNorm2d over channels; ``kind="unit"``: :class:`UnitBatchNorm` per unit."""
    if kind == "channel":
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    if kind == "unit":
        return UnitBatchNorm((channels, *shape), eps=eps, momentum=momentum)
    raise ValueError(f"bn: expected 'channel' or 'unit', found {kind!r}")


class ConvBlock(nn.Module):
    """``conv → bn → noise → relu``; the block's output is the post-ReLU map ``(B, C, H', W')``."""

    def __init__(self, conv: nn.Module, bn: nn.Module, noise_std: float) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.noise = GaussianNoise(noise_std)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.noise(self.bn(self.conv(x))))


class Readout(nn.Module):
    """``flatten → linear → bn → softplus``: non-negative rates ``(B, n_cells)`` from a ``(B, C, H, W)`` map."""

    def __init__(self, in_features: int, n_cells: int, bias: bool = True, eps: float = 1e-3,
                 momentum: float = 0.01) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, n_cells, bias=bias)
        self.bn = nn.BatchNorm1d(n_cells, eps=eps, momentum=momentum)
        self.softplus = nn.Softplus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softplus(self.bn(self.linear(x.flatten(1))))
