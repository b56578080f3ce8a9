"""Architectures by name, so a checkpoint's JSON can rebuild its model; the shipped models by name.

The shipped models (``bncnn-sim-default``, ``digits-cnn``) are package data in ``retina_codec/shipped/``,
so a wheel install finds them as well as a source checkout. :func:`resolve_model_path` is the one rule
that turns a model argument (``load_model(path)``, ``--model``) into a folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .base import RetinaModel
from .bncnn import BNCNN
from .linear_stacked import LinearStackedBNCNN
from .ln import LNModel

__all__ = ["ARCHITECTURES", "build_model", "SHIPPED_DIR", "SHIPPED_MODELS", "shipped_model_path",
           "resolve_model_path"]

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


# ------------------------------------------------------------------------------------------ shipped models
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped"
"""The folder of the shipped models inside the installed package (``retina_codec/shipped``)."""

SHIPPED_MODELS: tuple[str, ...] = ("bncnn-sim-default", "digits-cnn")
"""Names of the shipped models: the BN-CNN fitted to the default simulated retina, the digits CNN."""

_OLD_FOLDER = "models"  # where the shipped models lived in the source tree before they became package data


def shipped_model_path(name: str) -> Path:
    """The packaged folder of the shipped model ``name`` (one of :data:`SHIPPED_MODELS`).

    The folder holds ``model.json``, ``model.safetensors`` and ``MODEL_CARD.md``. Raises
    :class:`~retina_codec.errors.CheckpointError` for an unknown name or a folder missing from the install.
    """
    if name not in SHIPPED_MODELS:
        raise CheckpointError(f"shipped model {name!r} is unknown; shipped: {', '.join(SHIPPED_MODELS)}")
    folder = SHIPPED_DIR / name
    if not (folder / "model.json").is_file():
        raise CheckpointError(f"{folder}: shipped model {name!r} is missing from this installation "
                              "(expected model.json and model.safetensors)")
    return folder


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The folder or file a model argument names.

    An existing file or folder is returned as given. Otherwise a shipped model's name
    (``"bncnn-sim-default"``) or its old source-tree path (``"models/bncnn-sim-default"``, relative)
    resolves to the packaged copy (:func:`shipped_model_path`). Anything else is returned unchanged, so
    the caller reports it missing in its own words.
    """
    p = Path(path)
    if p.exists():
        return p
    parts = p.parts
    if len(parts) == 1 and parts[0] in SHIPPED_MODELS:
        return shipped_model_path(parts[0])
    if len(parts) == 2 and parts[0] == _OLD_FOLDER and parts[1] in SHIPPED_MODELS:
        return shipped_model_path(parts[1])
    return p
