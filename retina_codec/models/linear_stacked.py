"""The linear-stacked BN-CNN: each k×k kernel is a chain of (k−1)/2 3×3 convolutions with no
nonlinearity between them (torch-deep-retina's ``LinearStackedConv2d``), so it collapses exactly to one
k×k convolution; :meth:`LinearStackedBNCNN.collapse` returns the equivalent plain :class:`BNCNN`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError
from .bncnn import BNCNN

__all__ = ["LinearStackedConv2d", "LinearStackedBNCNN", "compose_kernels"]


def compose_kernels(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The single kernel of two chained valid cross-correlations (``first`` then ``second``).

    ``first`` is ``(M, C, a, a)``, ``second`` is ``(O, M, b, b)``; returns ``(O, C, a+b−1, a+b−1)`` with
    ``conv2d(conv2d(x, first), second) == conv2d(x, result)`` (biases excluded).
    """
    b = second.shape[-1]
    x = F.pad(first.transpose(0, 1), (b - 1, b - 1, b - 1, b - 1))  # (C, M, a+2b-2, ...)
    return F.conv2d(x, second.flip(-1, -2)).transpose(0, 1)


class LinearStackedConv2d(nn.Module):
    """A ``kernel_size``×``kernel_size`` valid convolution built from chained 3×3 convolutions.

    Submodule ``stack`` holds the (k−1)/2 convolutions; only the last has a bias (torch-deep-retina's
    default ``conv_bias=False``). :attr:`weight` and :attr:`bias` give the collapsed single kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 != 1:
            raise ModelConfigError(f"kernel_size: expected an odd size >= 3, found {kernel_size}")
        n = (kernel_size - 1) // 2
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = (int(kernel_size), int(kernel_size))
        self.stack = nn.Sequential(*[
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, bias=bias and i == n - 1)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)

    @property
    def weight(self) -> torch.Tensor:
        """Collapsed kernel ``(out, in, k, k)``."""
        w = self.stack[0].weight
        for conv in list(self.stack)[1:]:
            w = compose_kernels(w, conv.weight)
        return w

    @property
    def bias(self) -> torch.Tensor | None:
        """Collapsed bias ``(out,)`` (the chain's output for a zero input), or ``None`` without biases."""
        if all(conv.bias is None for conv in self.stack):
            return None
        k = self.kernel_size[0]
        p = self.stack[0].weight
        zero = torch.zeros(1, self.in_channels, k, k, dtype=p.dtype, device=p.device)
        return self.stack(zero).reshape(self.out_channels)

    def collapse(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the collapsed kernel and bias (same outputs up to rounding)."""
        b = self.bias
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, bias=b is not None)
        conv = conv.to(dtype=self.stack[0].weight.dtype, device=self.stack[0].weight.device)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if b is not None:
                conv.bias.copy_(b)
        return conv


class LinearStackedBNCNN(BNCNN):
    """:class:`BNCNN` whose conv kernels are :class:`LinearStackedConv2d` chains (same arguments)."""

    architecture = "LinearStackedBNCNN"

    def _make_conv(self, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
        return LinearStackedConv2d(in_channels, out_channels, kernel_size, bias=self.conv_bias)

    def collapse(self) -> BNCNN:
        """The equivalent plain :class:`BNCNN` (single convs); outputs agree to rounding error.

        Training/eval mode, dtype, device, input spec, normalisation and cell ids are carried over.
        """
        plain = BNCNN(**self.config())
        state = {k: v for k, v in self.state_dict().items() if ".conv.stack." not in k}
        for name in self.hidden_layers:
            conv = getattr(self, name).conv.collapse()
            state[f"{name}.conv.weight"] = conv.weight.detach()
            if conv.bias is not None:
                state[f"{name}.conv.bias"] = conv.bias.detach()
        p = next(self.parameters())
        plain = plain.to(dtype=p.dtype, device=p.device)
        plain.load_state_dict(state)
        plain.train(self.training)
        plain.input_spec = self.input_spec
        plain.norm_stats = self.norm_stats
        plain.cell_ids = None if self.cell_ids is None else list(self.cell_ids)
        return plain
