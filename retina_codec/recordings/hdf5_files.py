"""Opening HDF5 files (NWB or lab h5) with one clear error for missing, truncated or non-HDF5 files."""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from ..errors import FileFormatError

__all__ = ["HDF5_SIGNATURE", "check_hdf5_file", "open_hdf5", "is_nwb_file", "one_line"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """An error message squeezed onto one line (and cut at ``limit`` characters)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_hdf5_file(path: str | os.PathLike) -> Path:
    """Raise :class:`FileFormatError` unless ``path`` is an existing file with the HDF5 signature."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    # HDF5 allows a user block, so the signature may sit at 512, 1024, ...; files we meet start with it.
    if head != HDF5_SIGNATURE:
        if path.stat().st_size == 0:
            raise FileFormatError(f"{path}: file is empty (expected an HDF5 file)")
        if not h5py.is_hdf5(path):
            raise FileFormatError(f"{path}: not an HDF5 file (no HDF5 signature)")
    return path


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning h5py's errors (truncated, corrupt) into FileFormatError."""
    path = check_hdf5_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FileFormatError(f"{path}: cannot read HDF5 file (truncated or corrupt?): {one_line(err)}") from err


def is_nwb_file(f: h5py.File) -> bool:
    """True when an open HDF5 file is an NWB file (root ``neurodata_type`` is NWBFile or it has ``nwb_version``)."""
    nt = f.attrs.get("neurodata_type")
    if isinstance(nt, bytes):
        nt = nt.decode()
    return nt == "NWBFile" or "nwb_version" in f.attrs
