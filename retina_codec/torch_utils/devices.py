"""Which torch device a run uses: one rule for every stage (CUDA when present, else the CPU)."""

from __future__ import annotations

import torch

from ..errors import DeviceError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU; otherwise the named device, checked.

    Raises :class:`~retina_codec.errors.DeviceError` for a name torch does not know (``"gpu"``) and for a
    CUDA device on a machine without CUDA (so the CLI prints one line instead of a traceback).
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device: expected 'auto', 'cpu' or 'cuda[:N]'; found {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device: {str(device)!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    return dev
