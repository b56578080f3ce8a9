"""Which torch device a run uses: one rule for every stage (CUDA when present, else the CPU)."""

from __future__ import annotations

import os

import torch

from ..errors import DeviceError
from ..io_utils import available_memory_bytes

__all__ = ["resolve_device", "free_memory"]


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


def free_memory(device: object = None) -> int | None:
    """Bytes free for a new allocation on ``device`` (CUDA, or ``"auto"`` with CUDA present: the GPU's free
    memory; else the host's available memory); ``None`` when unknown."""
    name = str(device or "cpu")
    if name.startswith("cuda") or name == "auto":
        try:
            if torch.cuda.is_available():
                free, _ = torch.cuda.mem_get_info(torch.device("cuda" if name == "auto" else name))
                return int(free)
        except Exception:  # noqa: BLE001 - an unknown device is reported where it is used
            return None
    host = available_memory_bytes()
    if host is not None:
        return host
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
