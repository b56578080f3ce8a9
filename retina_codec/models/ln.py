"""The LN baseline: one space–time linear filter per cell followed by a softplus.

``filter``: ``(B, history, H, W)`` → ``(B, n_cells)`` generator signal (a linear layer on the flattened
window, with a bias); ``readout``: softplus → non-negative predicted response per bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ModelConfigError
from .base import RetinaModel

__all__ = ["LNModel"]


class LNModel(RetinaModel):
    """Linear–nonlinear model: ``rate = softplus(w · window + b)`` per cell."""

    architecture = "LNModel"

    def __init__(self, n_cells: int, history: int = 40, frame_shape: Sequence[int] = (50, 50),
                 init_std: float = 1e-3) -> None:
        super().__init__(n_cells, history, frame_shape)
        self.init_std = float(init_std)
        self.filter = nn.Linear(self.input_spec.history * self.input_spec.height * self.input_spec.width,
                                self.n_cells)
        with torch.no_grad():
            self.filter.weight.normal_(0.0, self.init_std)
            self.filter.bias.zero_()
        self.readout = nn.Softplus()
        self.layer_names = ("filter", "readout")
        self.hidden_layers = ()
        self.affine_stem = ("filter",)

    @property
    def filters(self) -> torch.Tensor:
        """The space–time filters ``(n_cells, history, H, W)``, oldest frame first."""
        return self.filter.weight.detach().view(self.n_cells, *self.input_spec.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, history, H, W)`` z-scored windows → ``(B, n_cells)`` non-negative predicted responses."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_spec.shape:
            raise ModelConfigError(
                f"LNModel: expected input (B, {', '.join(map(str, self.input_spec.shape))}), "
                f"found {tuple(x.shape)}"
            )
        return self.readout(self.filter(x.flatten(1)))

    def config(self) -> dict[str, Any]:
        return {
            "n_cells": self.n_cells,
            "history": self.input_spec.history,
            "frame_shape": [self.input_spec.height, self.input_spec.width],
            "init_std": self.init_std,
        }
