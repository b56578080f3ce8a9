"""Content hashes of tensors and models: what a store records so a resumed or linked run can tell it is
given the same model, inputs, baseline or target function."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["tensor_hash", "model_hash", "model_mismatch"]


def _feed(h: hashlib._Hash, t: torch.Tensor, label: str = "") -> None:
    """Add a tensor's label, dtype, shape and bytes to the running hash ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{label}{t.dtype}:{tuple(t.shape)};".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensor_hash(t: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and values (hex)."""
    h = hashlib.sha256()
    _feed(h, t)
    return h.hexdigest()


def model_hash(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes and bytes), hex."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        _feed(h, t, f"{name}:")
    return h.hexdigest()


def model_mismatch(model: nn.Module, stored: object) -> str | None:
    """``None`` when ``model`` hashes to ``stored`` (or nothing is stored); else a short description of the
    difference, ``"model hash 1a2b…  vs the store's 3c4d…"``, for an error message."""
    if stored is None:
        return None
    mine = model_hash(model)
    return None if str(stored) == mine else f"model hash {mine[:12]}… vs the store's {str(stored)[:12]}…"
