"""Our checkpoint format: safetensors weights + JSON metadata (openretina-style: the checkpoint knows its data).

Layout for ``save_model(model, "out/")``::

    out/model.safetensors   state dict (the JSON below is also embedded in the header, key "retina_codec")
    out/model.json          format, architecture + config, input spec (history, H, W, frame rate, offset
                            convention), normalisation stats, cell ids, layer names, and the caller's
                            metadata (training provenance, held-out metrics, ...)

``save_model(model, "x.safetensors")`` writes ``x.safetensors`` and ``x.json``. Both files are written
atomically. ``load_model`` accepts the folder, either file, and a lone ``.safetensors`` (reads the
embedded JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..devices import resolve_device
from ..errors import CheckpointError
from ..io_utils import atomic_path
from .base import InputSpec, RetinaModel
from .registry import build_model

__all__ = ["save_model", "load_model", "read_metadata", "checkpoint_paths", "FORMAT", "FORMAT_VERSION"]

FORMAT = "retina-codec-model"
FORMAT_VERSION = 1
_HEADER_KEY = "retina_codec"


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` paths for a folder or a ``.safetensors`` / ``.json`` file name."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix(".safetensors"), p.with_suffix(".json")
    return p / "model.safetensors", p / "model.json"


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` default: numpy scalars/arrays, tensors, paths and tuples become plain JSON."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


def save_model(model: RetinaModel, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights and self-description) to ``path``; returns the weights path.

    ``metadata`` is free-form JSON-ready data stored under ``"metadata"`` (e.g. ``training``
    provenance, ``metrics`` on held-out data, ``recording`` description).
    """
    if not isinstance(model, RetinaModel):
        raise CheckpointError(f"save_model: expected a retina-codec RetinaModel, found {type(model).__name__}")
    if model.describe().get("config") is None:  # a wrapped module: its architecture is the user's code
        model.config()  # raises CheckpointError saying how to save it instead
    weights, meta_path = checkpoint_paths(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
           **model.describe(), "metadata": metadata or {}}
    doc["dtype"] = str(next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32))[6:]
    text = json.dumps(doc, indent=2, default=_jsonable)
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={_HEADER_KEY: text})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    full = json.loads(text)
    full["weights_file"] = weights.name
    full["weights_sha256"] = digest
    with atomic_path(meta_path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(full, indent=2) + "\n")
    return weights


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of a checkpoint (from the sidecar ``.json``, else the weights header)."""
    weights, meta_path = checkpoint_paths(path)
    if meta_path.exists():
        try:
            doc = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{meta_path}: not valid JSON ({err})") from err
    elif weights.exists():
        try:
            with safe_open(str(weights), framework="pt") as f:
                header = (f.metadata() or {}).get(_HEADER_KEY)
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{weights}: not a safetensors file ({err})") from err
        if header is None:
            raise CheckpointError(f"{weights}: no {_HEADER_KEY!r} metadata in the header and no {meta_path.name}")
        doc = json.loads(header)
    else:
        raise CheckpointError(f"{path}: no checkpoint found (expected {weights} and {meta_path})")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: field 'format': expected {FORMAT!r}, found {doc.get('format')!r}")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format_version {doc['format_version']} is newer than this retina-codec supports "
            f"({FORMAT_VERSION})"
        )
    return doc


TDR_SUFFIXES = (".pt", ".pth", ".p")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", trust: bool = False,
               session: str | None = None) -> RetinaModel:
    """Rebuild a model saved by :func:`save_model`, in eval mode, on ``device``.

    Sets ``input_spec``, ``norm_stats``, ``cell_ids`` and ``model.metadata`` (the caller's metadata dict).
    A torch-deep-retina pickle (``.pt`` / ``.pth`` / ``.p``) is imported with
    :func:`~retina_codec.models.tdr_import.import_tdr_checkpoint` (``trust`` is passed on; it only matters
    for those files). An openretina PyTorch-Lightning checkpoint (``.ckpt``) is loaded with
    :func:`~retina_codec.models.openretina.load_openretina` as one recording ``session`` (required when it
    has several; ``trust`` is passed on). ``FILE.py:FUNCTION`` runs your own function, which returns the model
(:mod:`~retina_codec.models.factory`). ``device`` is checked first (:func:`~retina_codec.devices.resolve_device`).
    """
    device = resolve_device(device)
    from .factory import is_factory_spec, load_factory_model

    if is_factory_spec(path):  # your own model: FILE.py:FUNCTION returns it (models/factory.py)
        return load_factory_model(path, device)
    if Path(path).suffix == ".ckpt":
        from .openretina import load_openretina

        return load_openretina(path, session=session, device=device, trust=trust)
    if Path(path).suffix in TDR_SUFFIXES:
        from .tdr_import import import_tdr_checkpoint

        return import_tdr_checkpoint(path, trust=trust).to(device)
    weights, _ = checkpoint_paths(path)
    doc = read_metadata(path)
    if not weights.exists():
        raise CheckpointError(f"{weights}: weights file missing")
    model = build_model(doc["architecture"], doc["config"])
    try:
        state = load_file(str(weights))
    except Exception as err:
        raise CheckpointError(f"{weights}: cannot read safetensors weights ({err})") from err
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    model = model.to(dtype)
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: state dict does not match {doc['architecture']} (missing: {sorted(missing) or 'none'}; "
            f"unexpected: {sorted(unexpected) or 'none'})"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights}: {err}") from err
    model.input_spec = InputSpec.from_dict(doc["input_spec"])
    ns = doc.get("norm_stats")
    model.norm_stats = None if ns is None else (float(ns["mean"]), float(ns["std"]))
    model.cell_ids = None if doc.get("cell_ids") is None else [str(c) for c in doc["cell_ids"]]
    model.metadata = doc.get("metadata", {})
    return model.to(device).eval()
