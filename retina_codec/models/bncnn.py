"""The BN-CNN of McIntosh et al. (2016) with torch-deep-retina's defaults.

Input ``(B, 40, 50, 50)`` (z-scored history window, oldest frame first) →
``conv1`` = conv 8@15×15 → BatchNorm → Gaussian noise (training only) → ReLU  ``(B, 8, 36, 36)`` →
``conv2`` = conv 8@11×11 → BatchNorm → noise → ReLU  ``(B, 8, 26, 26)`` →
``readout`` = linear → BatchNorm1d → softplus  ``(B, n_cells)`` (predicted response per bin).

``bn="channel"`` uses BatchNorm2d (one statistic per channel); ``bn="unit"`` uses torch-deep-retina's
BatchNorm1d over the flattened map (one statistic per channel × position), which is what its
``BNCNN`` checkpoints hold. BatchNorm ``eps=1e-3``, ``momentum=0.01`` as in torch-deep-retina.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ModelConfigError
from .base import RetinaModel
from .layers import ConvBlock, FastCPUConv2d, Readout, conv_output_shape, make_batchnorm

__all__ = ["BNCNN"]


class BNCNN(RetinaModel):
    """Convolutional retina model with named blocks ``conv1``, ``conv2``, …, ``readout``.

    Parameters
    ----------
    n_cells : number of output cells.
    history : frames per input window.
    frame_shape : ``(H, W)`` of a frame in pixels.
    channels : output channels of each conv layer (one layer per entry).
    kernel_sizes : square kernel size of each conv layer (valid convolution, stride 1).
    noise_std : std of the training-only Gaussian noise after each conv BatchNorm.
    bn : ``"channel"`` (BatchNorm2d) or ``"unit"`` (per-unit BatchNorm1d, torch-deep-retina's).
    bn_eps, bn_momentum : BatchNorm settings of the conv layers.
    conv_bias : conv layers have a bias.
    readout_bias : the readout linear layer has a bias.
    readout_bn_eps, readout_bn_momentum : BatchNorm1d settings of the readout.
    """

    architecture = "BNCNN"

    def __init__(
        self,
        n_cells: int,
        history: int = 40,
        frame_shape: Sequence[int] = (50, 50),
        channels: Sequence[int] = (8, 8),
        kernel_sizes: Sequence[int] = (15, 11),
        noise_std: float = 0.05,
        bn: str = "channel",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        conv_bias: bool = True,
        readout_bias: bool = True,
        readout_bn_eps: float = 1e-3,
        readout_bn_momentum: float = 0.01,
    ) -> None:
        super().__init__(n_cells, history, frame_shape)
        if len(channels) != len(kernel_sizes) or len(channels) == 0:
            raise ModelConfigError(
                f"channels and kernel_sizes: expected equal, non-zero lengths, found {len(channels)} "
                f"and {len(kernel_sizes)}"
            )
        if bn not in ("channel", "unit"):
            raise ModelConfigError(f"bn: expected 'channel' or 'unit', found {bn!r}")
        self.channels = tuple(int(c) for c in channels)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.noise_std = float(noise_std)
        self.bn = bn
        self.bn_eps = float(bn_eps)
        self.bn_momentum = float(bn_momentum)
        self.conv_bias = bool(conv_bias)
        self.readout_bias = bool(readout_bias)
        self.readout_bn_eps = float(readout_bn_eps)
        self.readout_bn_momentum = float(readout_bn_momentum)

        shape = (self.input_spec.height, self.input_spec.width)
        in_ch = self.input_spec.history
        self.shapes: list[tuple[int, int, int]] = []
        names = []
        for i, (c, k) in enumerate(zip(self.channels, self.kernel_sizes)):
            shape = conv_output_shape(shape, k)
            conv = self._make_conv(in_ch, c, k)
            block = ConvBlock(conv, make_batchnorm(bn, c, shape, self.bn_eps, self.bn_momentum), self.noise_std)
            self.add_module(f"conv{i + 1}", block)
            self.shapes.append((c, *shape))
            names.append(f"conv{i + 1}")
            in_ch = c
        self.readout = Readout(in_ch * shape[0] * shape[1], self.n_cells, bias=self.readout_bias,
                               eps=self.readout_bn_eps, momentum=self.readout_bn_momentum)
        self.hidden_layers = tuple(names)
        self.layer_names = tuple(
            n for b in names for n in (f"{b}.conv", f"{b}.bn", b)
        ) + ("readout.linear", "readout.bn", "readout")
        self.affine_stem = ("conv1.conv", "conv1.bn")

    def _make_conv(self, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
        """One conv layer (subclasses build the kernel differently)."""
        return FastCPUConv2d(in_channels, out_channels, kernel_size, bias=self.conv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, history, H, W)`` z-scored windows → ``(B, n_cells)`` non-negative predicted responses."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_spec.shape:
            raise ModelConfigError(
                f"{self.architecture}: expected input (B, {', '.join(map(str, self.input_spec.shape))}), "
                f"found {tuple(x.shape)}"
            )
        for name in self.hidden_layers:
            x = getattr(self, name)(x)
        return self.readout(x)

    def config(self) -> dict[str, Any]:
        return {
            "n_cells": self.n_cells,
            "history": self.input_spec.history,
            "frame_shape": [self.input_spec.height, self.input_spec.width],
            "channels": list(self.channels),
            "kernel_sizes": list(self.kernel_sizes),
            "noise_std": self.noise_std,
            "bn": self.bn,
            "bn_eps": self.bn_eps,
            "bn_momentum": self.bn_momentum,
            "conv_bias": self.conv_bias,
            "readout_bias": self.readout_bias,
            "readout_bn_eps": self.readout_bn_eps,
            "readout_bn_momentum": self.readout_bn_momentum,
        }
