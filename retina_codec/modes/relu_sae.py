"""The plain ReLU sparse autoencoder with an L1 penalty weighted by decoder norms.

``f = ReLU((x − b_dec) W_encᵀ + b_enc)``, ``x̂ = f W_dec + b_dec``, loss
``mean((x − x̂)²) + l1 · mean_b Σ_i f_i ‖W_dec,i‖`` (Anthropic's April 2024 recipe). The atoms reported
are the unit-norm decoder rows and the codes the activations scaled by the row norms, so that
``x̂ = codes @ atoms + b_dec`` exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SparseAutoencoder, TrainStep

__all__ = ["ReLUSAE"]


class ReLUSAE(SparseAutoencoder):
    """ReLU SAE with L1 sparsity ``l1`` on decoder-norm-weighted activations."""

    kind = "relu"

    def __init__(self, n_features: int, n_latents: int, *, l1: float = 0.05) -> None:
        super().__init__(n_features, n_latents)
        self.l1 = float(l1)
        w = torch.randn(n_latents, n_features)
        w *= 0.1 / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(n_features))

    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the decoder bias to the mean of (a sample of) the training data ``(n, d)``."""
        with torch.no_grad():
            self.b_dec.copy_(x.mean(0).to(self.b_dec))

    def _norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=1).clamp_min(1e-12)

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations ``f (B, K)``."""
        return F.relu((x - self.b_dec) @ self.W_enc.t() + self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x) * self._norms()

    def atoms(self) -> torch.Tensor:
        return self.W_dec / self._norms()[:, None]

    def bias(self) -> torch.Tensor:
        return self.b_dec

    def training_loss(self, x: torch.Tensor, progress: float) -> TrainStep:
        f = self.activations(x)
        recon = f @ self.W_dec + self.b_dec
        mse = (recon - x).pow(2).mean()
        norms = self._norms()
        sparsity = (f * norms).sum(1).mean()
        return TrainStep(mse + self.l1 * sparsity, recon, (f * norms).detach(),
                         {"mse": mse.detach(), "l1": sparsity.detach()})

    def settings(self) -> dict[str, float | int | str]:
        out = super().settings()
        out["l1"] = self.l1
        return out
