"""``retina-codec convert IN OUT.nwb``: a Baccus-lab h5 file (or an NWB file) to an NWB file, atomically."""

from __future__ import annotations

import argparse
import logging

from ..errors import RecordingError
from ..recordings.hdf5_files import is_nwb_file, open_hdf5
from ..recordings.labh5 import read_lab_h5
from ..recordings.nwb import open_nwb, read_nwb, stimulus_series, write_nwb
from .options import add_overwrite_argument, add_responses_argument, fraction

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``convert`` sub-command."""
    p = subparsers.add_parser(
        "convert", help="convert a Baccus-lab h5 recording to NWB",
        description="Read a Baccus-lab h5 file (train then test movie; validation carved from the end of train) "
                    "or an NWB file, and write it as NWB (written under a temporary name, then renamed).",
    )
    p.add_argument("input", help="Baccus-lab .h5 file (or .nwb)")
    p.add_argument("output", help="output .nwb file")
    p.add_argument("--response", default="binned", choices=("binned", "firing_rate_10ms"),
                   help="lab h5: spike counts (binned, default) or firing rates in Hz")
    p.add_argument("--stimulus-name", default=None, help="lab h5: name of the stimulus (default: file stem)")
    p.add_argument("--validation-fraction", type=fraction, default=0.1,
                   help="lab h5: fraction at the end of the train movie used for validation (default 0.1)")
    p.add_argument("--stimulus", nargs="+", default=None, metavar="NAME",
                   help="NWB input: stimulus series to keep (default: all)")
    add_responses_argument(p, "NWB input: ")
    add_overwrite_argument(p, "OUTPUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert; returns 0."""
    f = open_hdf5(args.input)
    try:
        nwb_input = is_nwb_file(f)
    finally:
        f.close()
    if nwb_input:
        if args.stimulus is None:
            io, nwbfile = open_nwb(args.input)
            try:
                names = sorted(stimulus_series(nwbfile))
            finally:
                io.close()
        else:
            names = list(args.stimulus)
        recs = []
        try:
            for n in names or [None]:
                recs.append(read_nwb(args.input, stimulus=n, responses=args.responses))
        except BaseException:
            for r in recs:
                r.close()
            raise
    else:
        recs = [read_lab_h5(args.input, response=args.response, stimulus_name=args.stimulus_name,
                            validation_fraction=args.validation_fraction)]
    try:
        out = write_nwb(recs, args.output, overwrite=args.overwrite)
    except RecordingError as err:  # the writer names the stimulus; the user also needs the file it came from
        if str(args.input) in str(err):
            raise
        raise type(err)(f"{args.input}: {err}") from err
    finally:
        for r in recs:
            r.close()
    log.info("wrote %s (%s)", out, ", ".join(repr(r) for r in recs))
    return 0
