"""The one codec between Python values and what the stores hold: HDF5 attributes and JSON files.

Every store writes structured attributes (dicts, lists, ``None``) as JSON strings and reads them back with
:func:`decode_attr`; numpy scalars, arrays, tensors and paths become plain JSON numbers, lists and strings.
JSON files are written atomically with non-finite floats as ``null``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import FileFormatError, StoreReadError
from ..io_utils import atomic_path, open_hdf5

__all__ = ["json_default", "to_json", "encode_attr", "decode_attr", "decode_attrs", "read_attr", "read_attrs",
           "write_json", "read_json", "store_errors", "open_h5", "strings"]


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars → numbers, arrays and tensors → lists, paths and anything
    else → ``str``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor, without importing torch here
        return obj.detach().cpu().tolist()
    return str(obj)


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Mapping):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (np.ndarray, np.generic)):
        return _finite(o.tolist())
    return o


def to_json(obj: Any, *, sort_keys: bool = True, indent: int | None = None, nan_as_null: bool = False) -> str:
    """``obj`` as a JSON string (keys sorted by default, so equal values give equal strings)."""
    if nan_as_null:
        obj = _finite(obj)
    return json.dumps(obj, sort_keys=sort_keys, indent=indent, default=json_default)


def encode_attr(value: Any) -> Any:
    """A value ready for ``h5py`` attributes: dicts, lists, tuples and ``None`` as JSON strings, paths as
    strings, numbers, strings and numeric arrays unchanged."""
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return to_json(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def decode_attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value: bytes → str, JSON strings (``[…]`` / ``{…}`` / ``null``)
    parsed, numpy scalars → Python numbers."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        if value[:1] in "[{" or value == "null":
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_attrs(attrs: Any) -> dict[str, Any]:
    """All attributes of an HDF5 object (or any mapping) decoded by :func:`decode_attr`."""
    return {k: decode_attr(v) for k, v in dict(attrs).items()}


def read_attrs(path: str | os.PathLike, names: Sequence[str]) -> dict[str, Any]:
    """The root attributes ``names`` of the HDF5 file ``path`` that it has (decoded), in one open; ``{}``
    when the file is missing or unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return {k: decode_attr(f.attrs[k]) for k in names if k in f.attrs}
    except OSError:
        return {}


def read_attr(path: str | os.PathLike, name: str, default: Any = None) -> Any:
    """Root attribute ``name`` of the HDF5 file ``path`` (decoded), or ``default`` when the file or the
    attribute is missing or unreadable."""
    return read_attrs(path, (name,)).get(name, default)


def write_json(path: str | os.PathLike, doc: Any, indent: int = 1) -> Path:
    """Write ``doc`` as JSON atomically (non-finite floats as ``null``, numpy values as plain numbers)."""
    path = Path(path)
    text = json.dumps(_finite(doc), indent=indent, default=json_default) + "\n"
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(text)
    return path


@contextlib.contextmanager
def store_errors(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a failure to read ``path`` inside the block (truncated HDF5, malformed JSON, a missing
    dataset) as :class:`~retina_codec.errors.StoreReadError` naming the file."""
    try:
        yield
    except (OSError, ValueError, KeyError) as err:
        if isinstance(err, StoreReadError):
            raise
        # a store reader's open_store failure names h5py's error, as h5py.File inside the block would
        cause = err.__cause__ if isinstance(err, FileFormatError) and isinstance(err.__cause__, OSError) else err
        raise StoreReadError(f"{Path(path).name}: {type(cause).__name__}: {cause}") from err


@contextlib.contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """``h5py.File(path, "r")`` whose read errors (opening it or inside the block) name the file."""
    with store_errors(path), h5py.File(path, "r") as f:
        yield f


def read_json(path: str | os.PathLike) -> Any:
    """A JSON store's content; a malformed or unreadable file is a
    :class:`~retina_codec.errors.StoreReadError` naming it."""
    with store_errors(path):
        return json.loads(Path(path).read_text())


def strings(ds: Any) -> list[str]:
    """A string dataset (or array of bytes / str) as a list of ``str``."""
    arr = ds[...] if isinstance(ds, h5py.Dataset) else np.asarray(ds)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(arr).ravel()]


def open_store(path: str | os.PathLike, what: str) -> h5py.File:
    """Open the HDF5 store ``path`` read-only (close it, or use it as a context manager). Raises
    :class:`~retina_codec.errors.FileFormatError` naming ``what`` when it is missing, and for an empty,
    non-HDF5, truncated or corrupt file (the messages of :func:`retina_codec.io_utils.open_hdf5`)."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path}: {what} not found")
    return open_hdf5(path)
