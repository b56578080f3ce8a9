"""Convert a Baccus-lab h5 file (or an NWB file) to an NWB file, atomically: what ``retina-codec convert`` runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import RecordingError
from .hdf5_files import is_nwb_file, open_hdf5
from .labh5 import read_lab_h5
from .nwb import open_nwb, read_nwb, stimulus_series, write_nwb

__all__ = ["convert_recording"]


def convert_recording(source: str | os.PathLike, out: str | os.PathLike, *, response: str = "binned",
                      stimulus_name: str | None = None, validation_fraction: float = 0.1,
                      stimulus: Sequence[str] | None = None, responses: str | None = None,
                      overwrite: bool = False) -> tuple[Path, list[str]]:
    """Write ``source`` as the NWB file ``out``; returns ``(out, a description of each recording written)``.

    A lab h5 file: its ``response`` (``binned`` spike counts or ``firing_rate_10ms`` in Hz), named
    ``stimulus_name`` (default: the file stem), validation the last ``validation_fraction`` of the train
    movie. An NWB file: the ``stimulus`` series (default: all) with their ``responses`` series. A writer's
    :class:`~retina_codec.errors.RecordingError` names ``source`` too.
    """
    f = open_hdf5(source)
    try:
        nwb_input = is_nwb_file(f)
    finally:
        f.close()
    if nwb_input:
        if stimulus is None:
            io, nwbfile = open_nwb(source)
            try:
                names = sorted(stimulus_series(nwbfile))
            finally:
                io.close()
        else:
            names = list(stimulus)
        recs = []
        try:
            for n in names or [None]:
                recs.append(read_nwb(source, stimulus=n, responses=responses))
        except BaseException:
            for r in recs:
                r.close()
            raise
    else:
        recs = [read_lab_h5(source, response=response, stimulus_name=stimulus_name,
                            validation_fraction=validation_fraction)]
    try:
        path = write_nwb(recs, out, overwrite=overwrite)
    except RecordingError as err:  # the writer names the stimulus; the user also needs the file it came from
        if str(source) in str(err):
            raise
        raise type(err)(f"{source}: {err}") from err
    finally:
        for r in recs:
            r.close()
    return Path(path), [repr(r) for r in recs]
