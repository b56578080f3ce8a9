"""Architectures by name, so a checkpoint's JSON can rebuild its model."""

from __future__ import annotations

from typing import Any

from ..errors import CheckpointError
from .base import RetinaModel
from .bncnn import BNCNN
from .linear_stacked import LinearStackedBNCNN
from .ln import LNModel

__all__ = ["ARCHITECTURES", "build_model"]

ARCHITECTURES: dict[str, type[RetinaModel]] = {
    cls.architecture: cls for cls in (BNCNN, LinearStackedBNCNN, LNModel)
}


def build_model(architecture: str, config: dict[str, Any]) -> RetinaModel:
    """A freshly initialised model of the named architecture built from its :meth:`config` dict."""
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"architecture {architecture!r} is unknown; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        return ARCHITECTURES[architecture](**config)
    except TypeError as err:
        raise CheckpointError(f"config for {architecture}: {err}") from err
