"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) sparse autoencoders with the AuxK loss.

``pre = (x − b_dec) W_encᵀ + b_enc``; TopK keeps the ``k`` largest pre-activations of each sample
(ReLU'd), BatchTopK the ``k·B`` largest of the whole batch during training and, at inference, every
pre-activation above a threshold θ learned as a running mean of the smallest kept activation.
The decoder has unit-norm rows and a bias ``b_dec``. Dead latents (no activation for ``dead_after``
training samples) are trained by the AuxK loss: the ``aux_k`` largest dead pre-activations reconstruct
the residual, ``aux_coef · ‖e − ê‖² / ‖e‖²``.

Training uses the sparsity: only the ``k`` selected decoder rows per sample enter the decoder
(``embedding_bag``), and with ``sparse_encoder=True`` only the selected encoder rows receive gradients
(the full pre-activations are computed without autograd, the selected ones recomputed with it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SparseAutoencoder, TrainStep

__all__ = ["TopKSAE", "BatchTopKSAE", "sparse_decode"]


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, weight: torch.Tensor,
                  offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_j values_j · weight[indices_j] per sample without touching unselected rows.

    ``indices``/``values`` are ``(B, k)`` (fixed k per sample) or flat ``(nnz,)`` with ``offsets (B,)``;
    ``weight`` is ``(K, d)``. Returns ``(B, d)``.
    """
    return F.embedding_bag(indices, weight, offsets, mode="sum", per_sample_weights=values.to(weight.dtype))


class _TopKBase(SparseAutoencoder):
    def __init__(self, n_features: int, n_latents: int, k: int = 8, *, aux_k: int | None = None,
                 aux_coef: float = 1.0 / 32.0, dead_after: int = 20_000, sparse_encoder: bool = True) -> None:
        super().__init__(n_features, n_latents)
        if not 1 <= k <= n_latents:
            raise ValueError(f"k must lie in [1, n_latents={n_latents}]; got {k}")
        self.k = int(k)
        self.aux_k = int(aux_k) if aux_k is not None else min(n_latents, 2 * self.k)
        self.aux_coef = float(aux_coef)
        self.dead_after = int(dead_after)
        self.sparse_encoder = bool(sparse_encoder)
        w = torch.randn(n_latents, n_features)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.clone())  # tied initialisation (Gao et al.)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("samples_since_fired", torch.zeros(n_latents, dtype=torch.long))

    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the decoder bias to the mean of (a sample of) the training data ``(n, d)``."""
        with torch.no_grad():
            self.b_dec.copy_(x.mean(0).to(self.b_dec))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` pre-activations ``(x − b_dec) W_encᵀ + b_enc``."""
        return (x - self.b_dec) @ self.W_enc.t() + self.b_enc

    def _selected(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Pre-activations of the selected latents ``indices (B, k)``, differentiable in the encoder."""
        xc = x - self.b_dec
        w = self.W_enc[indices]  # (B, k, d)
        return torch.bmm(w, xc.unsqueeze(-1)).squeeze(-1) + self.b_enc[indices]

    def atoms(self) -> torch.Tensor:
        return self.W_dec

    def bias(self) -> torch.Tensor:
        return self.b_dec

    def after_step(self) -> None:
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _update_dead(self, fired: torch.Tensor, batch: int) -> torch.Tensor:
        """Track samples since each latent fired (``fired (K,)`` bool); returns the dead mask."""
        with torch.no_grad():
            self.samples_since_fired += batch
            self.samples_since_fired[fired] = 0
        return self.samples_since_fired >= self.dead_after

    def _aux_loss(self, x: torch.Tensor, recon: torch.Tensor, pre: torch.Tensor,
                  dead: torch.Tensor) -> torch.Tensor:
        n_dead = int(dead.sum())
        if n_dead == 0 or self.aux_coef == 0.0:
            return recon.new_zeros(())
        kk = min(self.aux_k, n_dead)
        masked = pre.detach().masked_fill(~dead, float("-inf"))
        idx = masked.topk(kk, dim=1).indices
        vals = F.relu(self._selected(x, idx))
        err = (x - recon).detach()
        err_hat = sparse_decode(idx, vals, self.W_dec)
        return (err_hat - err).pow(2).sum() / err.pow(2).sum().clamp_min(1e-12)

    def settings(self) -> dict[str, float | int | str]:
        out = super().settings()
        out.update(k=self.k, aux_k=self.aux_k, aux_coef=self.aux_coef, dead_after=self.dead_after)
        return out


class TopKSAE(_TopKBase):
    """TopK SAE: exactly ``k`` (ReLU'd) latents per sample, at training and inference."""

    kind = "topk"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        vals, idx = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, idx, F.relu(vals))

    def training_loss(self, x: torch.Tensor, progress: float) -> TrainStep:
        if self.sparse_encoder:
            with torch.no_grad():
                pre = self.pre_activations(x)
            idx = pre.topk(self.k, dim=1).indices
            vals = F.relu(self._selected(x, idx))
        else:
            pre = self.pre_activations(x)
            top, idx = pre.topk(self.k, dim=1)
            vals = F.relu(top)
        recon = sparse_decode(idx, vals, self.W_dec) + self.b_dec
        mse = (recon - x).pow(2).mean()
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
        fired[idx[vals > 0]] = True
        dead = self._update_dead(fired, x.shape[0])
        aux = self._aux_loss(x, recon, pre, dead)
        codes = torch.zeros_like(pre).scatter_(1, idx, vals.detach().to(pre.dtype))
        return TrainStep(mse + self.aux_coef * aux, recon, codes, {"mse": mse.detach(), "aux": aux.detach()})


class BatchTopKSAE(_TopKBase):
    """BatchTopK SAE: the ``k · B`` largest activations of a batch in training; a threshold θ at inference."""

    kind = "batchtopk"

    def __init__(self, n_features: int, n_latents: int, k: int = 8, *, threshold_momentum: float = 0.01,
                 **kw) -> None:
        super().__init__(n_features, n_latents, k, **kw)
        self.threshold_momentum = float(threshold_momentum)
        self.register_buffer("theta", torch.tensor(float("nan")))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        theta = 0.0 if torch.isnan(self.theta) else float(self.theta)
        return F.relu(pre) * (pre > theta).to(pre.dtype)

    def training_loss(self, x: torch.Tensor, progress: float) -> TrainStep:
        b = x.shape[0]
        with torch.no_grad():
            pre = self.pre_activations(x)
            flat = F.relu(pre).flatten()
            keep = flat.topk(min(self.k * b, flat.numel())).indices
            keep = keep[flat[keep] > 0]
            keep, _ = keep.sort()  # row-major: samples stay contiguous for the offsets
            rows, cols = keep // self.n_latents, keep % self.n_latents
            if keep.numel():
                smallest = flat[keep].min()
                self.theta.copy_(smallest if torch.isnan(self.theta)
                                 else (1 - self.threshold_momentum) * self.theta
                                 + self.threshold_momentum * smallest)
            offsets = torch.zeros(b, dtype=torch.long, device=x.device)
            offsets[1:] = torch.bincount(rows, minlength=b).cumsum(0)[:-1]
        if self.sparse_encoder:
            vals = F.relu(((x[rows] - self.b_dec) * self.W_enc[cols]).sum(-1) + self.b_enc[cols])
        else:
            vals = F.relu(self.pre_activations(x)[rows, cols])
        recon = sparse_decode(cols, vals, self.W_dec, offsets) + self.b_dec
        mse = (recon - x).pow(2).mean()
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
        fired[cols] = True
        dead = self._update_dead(fired, b)
        aux = self._aux_loss(x, recon, pre, dead)
        codes = torch.zeros_like(pre)
        codes[rows, cols] = vals.detach().to(pre.dtype)
        return TrainStep(mse + self.aux_coef * aux, recon, codes, {"mse": mse.detach(), "aux": aux.detach()})

    def settings(self) -> dict[str, float | int | str]:
        out = super().settings()
        out.update(threshold_momentum=self.threshold_momentum,
                   theta=float("nan") if torch.isnan(self.theta) else float(self.theta))
        return out
