"""The interface every sparse autoencoder (SAE) of :mod:`retina_codec.modes` implements.

An SAE maps inputs ``x (B, d)`` to non-negative codes ``(B, K)`` (the mode loadings) and back to a
reconstruction ``x̂ = codes @ atoms + bias``. Training and inference may differ (threshold warm-up,
straight-through gradients, batch-level top-k); :meth:`SparseAutoencoder.encode` is always the
inference-time definition, :meth:`SparseAutoencoder.training_loss` the training one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ModesError

__all__ = ["SparseAutoencoder", "TrainStep"]


class TrainStep:
    """One training evaluation: total ``loss`` (scalar), ``recon (B, d)``, ``codes (B, K)``, loss ``parts``.

    ``codes`` may be given as a zero-argument callable: the dense ``(B, K)`` codes are then built only
    when read (the training hot loop never reads them; building them costs a ``(B, K)`` scatter).
    Unpacks like the former named tuple: ``loss, recon, codes, parts = step``.
    """

    __slots__ = ("loss", "recon", "_codes", "parts")

    def __init__(self, loss: torch.Tensor, recon: torch.Tensor,
                 codes: torch.Tensor | Callable[[], torch.Tensor], parts: dict[str, torch.Tensor]) -> None:
        self.loss = loss
        self.recon = recon
        self._codes = codes
        self.parts = parts

    @property
    def codes(self) -> torch.Tensor:
        """Detached codes ``(B, K)`` (built on first access when given lazily)."""
        if callable(self._codes):
            self._codes = self._codes()
        return self._codes

    def __iter__(self) -> Iterator[Any]:
        return iter((self.loss, self.recon, self.codes, self.parts))


class SparseAutoencoder(nn.Module):
    """Base class: ``n_features`` inputs (d), ``n_latents`` codes (K)."""

    kind: str = "base"

    def __init__(self, n_features: int, n_latents: int) -> None:
        super().__init__()
        if n_features < 1 or n_latents < 1:
            raise ModesError(f"n_features and n_latents must be >= 1; got {n_features}, {n_latents}")
        self.n_features = int(n_features)
        self.n_latents = int(n_latents)

    # --- inference -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, K)`` of inputs ``(B, d)`` by the inference-time definition."""
        raise NotImplementedError

    def atoms(self) -> torch.Tensor:
        """Dictionary ``(K, d)`` such that ``decode(c) = c @ atoms() + bias()``."""
        raise NotImplementedError

    def bias(self) -> torch.Tensor:
        """Decoder bias ``(d,)`` (zeros for SAEs without one)."""
        return torch.zeros(self.n_features, device=self.atoms().device, dtype=self.atoms().dtype)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, d)`` of codes ``(B, K)``."""
        return codes @ self.atoms() + self.bias()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction (B, d), codes (B, K))`` by the inference-time definition."""
        codes = self.encode(x)
        return self.decode(codes), codes

    # --- training --------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, progress: float) -> TrainStep:
        """Loss of a training batch ``x (B, d)``; ``progress`` in [0, 1] is the fraction of training done."""
        raise NotImplementedError

    def begin_step(self, batch: int) -> Hashable | None:
        """Host-side set-up before a training step of ``batch`` samples (the trainer calls it every step).

        Returns a key of the host-side configuration the step's GPU work depends on: a CUDA-graphed
        trainer captures one graph per key and replays it while the key stays the same. ``None`` means
        the step cannot be captured (it reads the GPU from the host or has data-dependent shapes).
        """
        return ()

    def step_replayed(self) -> None:
        """Called instead of :meth:`training_loss` when the trainer replayed a captured step."""

    def compile_training(self, enabled: bool = True) -> bool:
        """Compile the training loss with ``torch.compile`` where supported; returns whether it is on."""
        return False

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to renormalise decoder rows)."""

    def settings(self) -> dict[str, float | int | str]:
        """Hyper-parameters that define this SAE (stored with the modes)."""
        return {"kind": self.kind, "n_features": self.n_features, "n_latents": self.n_latents}
