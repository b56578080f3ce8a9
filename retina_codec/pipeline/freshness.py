"""Resume rule of the demo: a stage's store is *fresh* (kept, not recomputed) when it exists, was made
with the current model, from the current versions of its input stores, and passes the stage's
completeness check.

Each store records the ``model_hash`` of the model it was made with and, in its ``inputs`` attribute (HDF5)
or key (JSON), the :func:`input_signatures` of the stores it was computed from; a store's signature is its
``uid`` / ``finished`` / ``created`` attribute (HDF5), else its size and modification time. So replacing
one store makes every store computed from it stale, and only those.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..stores.codec import decode_attr, read_attrs, read_json

__all__ = ["file_signature", "input_signatures", "recorded_provenance", "is_fresh"]


def file_signature(path: str | os.PathLike) -> str:
    """A store's identity: its ``uid`` / ``finished`` / ``created`` attribute (HDF5), else size and
    modification time (``"size:mtime_ns"``)."""
    path = Path(path)
    if path.suffix == ".h5":
        ids = read_attrs(path, ("uid", "finished", "created"))
        for key in ("uid", "finished", "created"):
            if ids.get(key):
                return str(ids[key])
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def input_signatures(inputs: Mapping[str, Path]) -> dict[str, str]:
    """``{name: file_signature(path)}`` of a stage's input stores, sorted by name (missing files give ``""``)."""
    return {k: file_signature(p) if Path(p).exists() else "" for k, p in sorted(inputs.items())}


def recorded_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """``{"model_hash": str | None, "inputs": dict}`` recorded in a store (a JSON file's keys, or an HDF5
    file's root attributes)."""
    path = Path(path)
    doc = read_json(path) if path.suffix == ".json" else read_attrs(path, ("model_hash", "inputs"))
    recorded = decode_attr(doc.get("inputs")) or {}
    return {"model_hash": doc.get("model_hash"), "inputs": recorded}


def is_fresh(path: str | os.PathLike, model_hash: str, *, inputs: Mapping[str, Path] | None = None,
             check: Callable[[Path], bool] | None = None, force: bool = False,
             echo: Callable[[str], Any] = print) -> bool:
    """True when ``path`` exists, was made with the model of ``model_hash``, from the current versions of its
    ``inputs`` (their :func:`input_signatures`) and passes ``check``; ``force`` makes every store stale. A
    stale store is reported through ``echo`` (the demo's indented line) and should be recomputed."""
    path = Path(path)
    if force or not path.exists():
        return False
    doc = recorded_provenance(path)
    stored = doc["model_hash"]
    if stored is not None and stored != model_hash:
        echo(f"      {path.name} was made with another model: recomputing")
        return False
    if inputs and doc["inputs"] != input_signatures(inputs):
        echo(f"      {path.name} was made from older inputs: recomputing")
        return False
    return check(path) if check else True
