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
from ..errors import CheckpointError, MetadataTypeError
from ..io_utils import atomic_path
from ..stores.codec import to_json
from ..torch_utils.devices import resolve_device
from .base import InputSpec, RetinaModel
from .model_schema import validate_model_document
from .registry import build_model, resolve_model_path

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


_PLAIN = (str, int, float, bool, type(None), np.generic, np.ndarray, torch.Tensor, Path)


def _check_jsonable(obj: Any) -> None:
    """Raise ``TypeError`` for a value the checkpoint JSON cannot hold faithfully: only JSON values, numpy
    scalars / arrays, tensors and paths (encoded by :func:`~retina_codec.stores.codec.to_json`) are allowed."""
    if isinstance(obj, dict):
        for v in obj.values():
            _check_jsonable(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_jsonable(v)
    elif not isinstance(obj, _PLAIN):
        raise MetadataTypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


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
    _check_jsonable(doc)
    text = to_json(doc, sort_keys=False, indent=2)
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={_HEADER_KEY: text})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    full = json.loads(text)
    full["weights_file"] = weights.name
    full["weights_sha256"] = digest
    with atomic_path(meta_path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(full, indent=2) + "\n")
    return weights


def _parse_json(text: str | bytes, source: object) -> Any:
    """``json.loads`` whose failures are a :class:`CheckpointError` naming ``source``."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{source}: not valid JSON ({err})") from err


def _header_source(weights: Path) -> str:
    """How messages name the JSON embedded in a weights header."""
    return f"{weights} (header {_HEADER_KEY!r})"


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of a checkpoint (from the sidecar ``.json``, else the weights header),
    checked against the schema (:func:`~retina_codec.models.model_schema.validate_model_document`)."""
    weights, meta_path = checkpoint_paths(resolve_model_path(path))
    if meta_path.exists():
        try:
            raw = meta_path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{meta_path}: cannot read ({err.strerror or err})") from err
        doc, source = _parse_json(raw, meta_path), str(meta_path)
    elif weights.exists():
        try:
            with safe_open(str(weights), framework="pt") as f:
                header = (f.metadata() or {}).get(_HEADER_KEY)
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{weights}: not a safetensors file ({_one_line(err)})") from err
        if header is None:
            raise CheckpointError(f"{weights}: no {_HEADER_KEY!r} metadata in the header and no {meta_path.name}")
        source = _header_source(weights)
        doc = _parse_json(header, source)
    else:
        raise CheckpointError(f"{path}: no checkpoint found (expected {weights} and {meta_path})")
    return validate_model_document(doc, source, FORMAT, FORMAT_VERSION)


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors can span several)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(weights: Path, meta_path: Path, doc: dict[str, Any]) -> None:
    """The weights are the ones ``model.json`` was written with (skipped when it records no hash, as in
    folders written before the field existed)."""
    expected = doc.get("weights_sha256")
    if expected is None or not meta_path.exists():
        return
    found = _sha256(weights)
    if found != expected:
        raise CheckpointError(
            f"{weights}: SHA-256 does not match field 'weights_sha256' of {meta_path}: expected {expected}, "
            f"found {found} (the weights changed after the model was saved)"
        )


def _header_tensors(weights: Path) -> dict[str, tuple[list[int], str]]:
    """``{name: (shape, dtype)}`` from the safetensors header, without reading the tensors."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: (list(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: not a readable safetensors file ({_one_line(err)})") from err


def _names(keys: set[str], limit: int = 4) -> str:
    """A few sorted names, and how many more."""
    if not keys:
        return "none"
    shown = sorted(keys)[:limit]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_against_weights(doc: dict[str, Any], source: str, weights: Path) -> None:
    """The tensors the ``architecture`` and ``config`` imply (a model built on the meta device: nothing is
    allocated) have the names, shapes and kinds of dtype the weights header lists."""
    arch = doc["architecture"]
    try:
        with torch.device("meta"):
            skeleton = build_model(arch, doc["config"])
    except (CheckpointError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: field 'config': not a valid {arch} configuration "
                              f"({_one_line(err)})") from err
    implied = skeleton.state_dict()
    header = _header_tensors(weights)
    missing, unexpected = set(implied) - set(header), set(header) - set(implied)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: state dict does not match {arch} as configured in {source} "
            f"(missing: {_names(missing)}; unexpected: {_names(unexpected)})"
        )
    for name, tensor in implied.items():
        shape, dtype = header[name]
        if shape != list(tensor.shape):
            raise CheckpointError(
                f"{weights}: tensor {name!r} does not match {source}: expected shape {list(tensor.shape)} "
                f"(implied by its fields 'architecture' and 'config'), found {shape}"
            )
        floating = dtype.startswith(("F", "BF"))
        if floating != tensor.is_floating_point():
            want = "a floating-point dtype" if tensor.is_floating_point() else "an integer dtype"
            raise CheckpointError(f"{weights}: tensor {name!r}: expected {want}, found {dtype}")


def _check_values(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Every floating tensor is finite, and BatchNorm running variances are not negative."""
    for name, t in state.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise CheckpointError(
                f"{weights}: tensor {name!r}: expected finite values, found {int(bad.sum())} NaN/inf of "
                f"{t.numel()} (first {float(t[first])} at index {list(first)})"
            )
        if name.endswith("running_var") and bool((t < 0).any()):
            raise CheckpointError(f"{weights}: tensor {name!r}: expected variances >= 0, found {float(t.min())}")


TDR_SUFFIXES = (".pt", ".pth", ".p")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", trust: bool = False,
               session: str | None = None) -> RetinaModel:
    """Rebuild a model saved by :func:`save_model`, in eval mode, on ``device``.

    Sets ``input_spec``, ``norm_stats``, ``cell_ids`` and ``model.metadata`` (the caller's metadata dict).
    Before anything is built the files are checked: ``model.json`` against its schema
    (:mod:`~retina_codec.models.model_schema`), the weights against the recorded ``weights_sha256`` (when
    there is one), the header's tensor names and shapes against those the config implies, and then every
    tensor for NaN / inf; any failure is a one-line :class:`~retina_codec.errors.CheckpointError`.
    A torch-deep-retina pickle (``.pt`` / ``.pth`` / ``.p``) is imported with
    :func:`~retina_codec.models.tdr_import.import_tdr_checkpoint` (``trust`` is passed on; it only matters
    for those files). An openretina PyTorch-Lightning checkpoint (``.ckpt``) is loaded with
    :func:`~retina_codec.models.openretina.load_openretina` as one recording ``session`` (required when it
    has several; ``trust`` is passed on). ``FILE.py:FUNCTION`` runs your own function, which returns the model
(:mod:`~retina_codec.models.factory`). ``device`` is checked first (:func:`~retina_codec.torch_utils.devices.resolve_device`).
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
    weights, meta_path = checkpoint_paths(resolve_model_path(path))
    doc = read_metadata(path)
    if not weights.exists():
        raise CheckpointError(f"{weights}: weights file missing")
    source = str(meta_path) if meta_path.exists() else _header_source(weights)
    _check_sha256(weights, meta_path, doc)
    _check_against_weights(doc, source, weights)  # before anything is allocated
    model = build_model(doc["architecture"], doc["config"])
    try:
        state = load_file(str(weights))
    except Exception as err:
        raise CheckpointError(f"{weights}: cannot read safetensors weights ({_one_line(err)})") from err
    _check_values(state, weights)
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    model = model.to(dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights}: {_one_line(err)}") from err
    model.input_spec = InputSpec.from_dict(doc["input_spec"])
    ns = doc.get("norm_stats")
    model.norm_stats = None if ns is None else (float(ns["mean"]), float(ns["std"]))
    model.cell_ids = None if doc.get("cell_ids") is None else [str(c) for c in doc["cell_ids"]]
    model.metadata = doc.get("metadata", {})
    return model.to(device).eval()
