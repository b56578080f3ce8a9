"""Opening HDF5 files (NWB or lab h5) with one clear error for missing, truncated or non-HDF5 files.

The checks themselves live in :mod:`retina_codec.io_utils` (below the store layer, which uses them too);
this module adds what is specific to recordings (:func:`is_nwb_file`).
"""

from __future__ import annotations

import h5py

from ..io_utils import HDF5_SIGNATURE, check_hdf5_file, one_line, open_hdf5

__all__ = ["HDF5_SIGNATURE", "check_hdf5_file", "open_hdf5", "is_nwb_file", "one_line"]


def is_nwb_file(f: h5py.File) -> bool:
    """True when an open HDF5 file is an NWB file (root ``neurodata_type`` is NWBFile or it has ``nwb_version``)."""
    nt = f.attrs.get("neurodata_type")
    if isinstance(nt, bytes):
        nt = nt.decode()
    return nt == "NWBFile" or "nwb_version" in f.attrs
